"""A process that cannot start says so in one line: which process, what failed, what to set.

The causes a newcomer or an operator meets first (a port in use, a database that is down or
does not exist, a setting the code refuses) are recognised here; the line names the setting to
look at, and the traceback goes to the debug log (``MC_LOG_LEVEL=DEBUG``) for whoever debugs
this code. Anything not recognised keeps its traceback: it is a bug, not a setting.
"""

from __future__ import annotations

import errno
import re
import socket
import sqlite3
from collections.abc import Mapping

from common.logging import get_logger

_log = get_logger(__name__)

_BIND_PORT = re.compile(r"(?:address|bind on address) \(?'?[^\s,']*'?(?:,\s*|:)(\d+)\)?")
_GRPC_BIND = re.compile(r"Failed to bind to address \S*:(\d+)")


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _port_in_use(chain: list[BaseException]) -> str | None:
    for error in chain:
        text = str(error)
        if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
            found = _BIND_PORT.search(text)
            return found.group(1) if found else ""
        found = _GRPC_BIND.search(text)
        if isinstance(error, RuntimeError) and found:
            return found.group(1)
    return None


def _database_problem(chain: list[BaseException]) -> str | None:
    names = {type(error).__name__ for error in chain}
    if "InvalidCatalogNameError" in names:
        missing = next(str(e) for e in chain if type(e).__name__ == "InvalidCatalogNameError")
        return f"the database does not exist ({missing}); create it"
    if names & {"InvalidPasswordError", "InvalidAuthorizationSpecificationError"}:
        return "the database refused the user or password in the URL"
    for error in chain:
        if isinstance(error, sqlite3.OperationalError):
            return f"the SQLite database cannot be opened ({error})"
        if isinstance(error, socket.gaierror):
            return f"the database host is unknown ({error})"
        if isinstance(error, ConnectionRefusedError | TimeoutError) or (
            isinstance(error, OSError)
            and error.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)
        ):
            return f"the database is unreachable ({error})"
    return None


def explain(
    process: str,
    error: BaseException,
    *,
    ports: Mapping[int, str],
    database_setting: str | None = None,
) -> str | None:
    """The one line for ``error``, or None when it is not a start-up problem we recognise.

    ``ports`` maps each port the process listens on to the setting that chose it;
    ``database_setting`` is the variable holding its database URL, if it has one.
    """
    chain = _chain(error)
    port = _port_in_use(chain)
    if port is not None:
        setting = ports.get(int(port)) if port else None
        where = f"port {port}" if port else "a port it listens on"
        return (
            f"{process}: cannot start: {where} is already in use (another process listens "
            f"there); stop that process or set {setting or ' / '.join(ports.values())}"
        )
    if database_setting is not None:
        problem = _database_problem(chain)
        if problem is not None:
            return f"{process}: cannot start: {problem}; check {database_setting}"
        if any(isinstance(e, ValueError) and "database" in str(e) for e in chain):
            return f"{process}: cannot start: {error}; check {database_setting}"
    return None


def exit_line(
    process: str,
    error: BaseException,
    *,
    ports: Mapping[int, str],
    database_setting: str | None = None,
) -> str | None:
    """The line to exit with for ``error`` (its traceback logged at DEBUG), or None when it is
    not recognised and should propagate with its traceback."""
    line = explain(process, error, ports=ports, database_setting=database_setting)
    if line is None:
        return None
    _log.debug("startup_failed", reason=line, exc_info=error)
    return f"{line} (MC_LOG_LEVEL=DEBUG logs the traceback)"
