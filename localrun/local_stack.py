"""What one local run leaves for the next command: the admin's credentials and a run lock.

`make run` writes both into the data directory (``MC_DATA_DIR``, default ``var``): the local
admin's generated password, so `make seed` and anything else that needs the admin can sign in
without being told it, and a lock held while the stack runs, so a second `make run` sees the
first and refuses before it touches anything of it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from common.settings import DEFAULT_METRICS_PORTS, DEFAULT_PORTS, SERVICE_NAMES

LOCAL_ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD_FILE = "admin-password"
RUN_LOCK_FILE = "run.lock"
DEFAULT_EMBEDDED_KAFKA_PORT = 9092


def data_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("MC_DATA_DIR", "var"))


@dataclass(frozen=True)
class AdminCredentials:
    email: str
    password: str
    source: str  # where they came from, for messages


def admin_credentials(env: Mapping[str, str]) -> AdminCredentials | None:
    """``MC_ADMIN_EMAIL``/``MC_ADMIN_PASSWORD`` when both are set, else the local admin whose
    password `make run` generated into the data directory; None when neither exists."""
    email, password = env.get("MC_ADMIN_EMAIL"), env.get("MC_ADMIN_PASSWORD")
    if email and password:
        return AdminCredentials(email, password, "MC_ADMIN_EMAIL and MC_ADMIN_PASSWORD")
    if email:
        return None  # another admin was chosen: the local one's password is not theirs
    password_file = data_dir(env) / ADMIN_PASSWORD_FILE
    try:
        generated = password_file.read_text().strip()
    except OSError:
        return None
    return AdminCredentials(LOCAL_ADMIN_EMAIL, generated, str(password_file)) if generated else None


def ensure_local_admin(env: dict[str, str]) -> str | None:
    """Fill in the local admin's credentials unless given; the password's file, if generated.

    The password is generated once, readable by the owner only, and never printed.
    """
    if env.get("MC_ADMIN_EMAIL"):
        return None
    password_file = data_dir(env) / ADMIN_PASSWORD_FILE
    if not password_file.exists():
        password_file.touch(mode=0o600)
        password_file.write_text(secrets.token_urlsafe(18))
    env["MC_ADMIN_EMAIL"] = LOCAL_ADMIN_EMAIL
    env["MC_ADMIN_PASSWORD"] = password_file.read_text().strip()
    return str(password_file)


class AlreadyRunning(RuntimeError):
    """Another `make run` holds the data directory, or something listens on a port we need."""


def hold_run_lock(directory: Path) -> IO[str]:
    """Take the data directory's run lock for the life of this process (the OS drops it when
    the process ends, however it ends); raise ``AlreadyRunning`` if another run holds it."""
    directory.mkdir(parents=True, exist_ok=True)
    lock = (directory / RUN_LOCK_FILE).open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise AlreadyRunning(
            f"MicroCommerce is already running from {directory} (pid {holder}); stop it "
            "(Ctrl-C there) or start this one with another MC_DATA_DIR and other ports"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def required_ports(env: Mapping[str, str]) -> dict[str, int]:
    """Every port a local run listens on, by the variable that sets it."""
    ports = {
        f"MC_{name.upper()}_PORT": int(env.get(f"MC_{name.upper()}_PORT", DEFAULT_PORTS[name]))
        for name in ("gateway", *SERVICE_NAMES)
    }
    for name in SERVICE_NAMES:
        variable = f"MC_{name.upper()}_METRICS_PORT"
        ports[variable] = int(env.get(variable, DEFAULT_METRICS_PORTS[name]))
    if not env.get("MC_KAFKA_BOOTSTRAP"):
        variable = "MC_EMBEDDED_KAFKA_PORT"
        ports[variable] = int(env.get(variable, DEFAULT_EMBEDDED_KAFKA_PORT))
    return ports


def ports_in_use(host: str, ports: Mapping[str, int]) -> list[str]:
    """``"PORT (VARIABLE)"`` for each port something already listens on."""
    return [f"{port} ({variable})" for variable, port in ports.items() if _taken(host, port)]


def _taken(host: str, port: int) -> bool:
    # A bind, as our servers do: SO_REUSEADDR so a port left in TIME_WAIT by a stopped run is
    # free, as it is for them.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


def check_free(host: str, env: Mapping[str, str]) -> None:
    """Raise ``AlreadyRunning`` naming every port (and its variable) that is taken."""
    taken = ports_in_use(host, required_ports(env))
    if taken:
        raise AlreadyRunning(
            f"port {', '.join(taken)} already in use on {host}: another MicroCommerce (or "
            "another program) is listening; stop it or choose other ports with these variables"
        )
