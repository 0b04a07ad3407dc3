"""Whether a service's schema is at head, and bringing it there from a short-lived child.

Alembic and a migration run leave ~8 MB in a process that then serves for weeks without
needing either (``python -m bench.idle``). The service's ``main`` therefore checks its schema
without Alembic (the heads from the revision files, the current revision from the version
table) and, only when it is behind, migrates in a child (``python -c``,
``common.migrations.upgrade_from_stdin``): a restart at head pays one query, not an interpreter.
The in-process path (``common.migrations.upgrade_to_head``) stays for tests and tools that run
a service inside their own process.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from common.db import SQLITE_BEGIN_OPTION

# The repository root, so the child imports the same code whatever its working directory.
_ROOT = Path(__file__).resolve().parent.parent
_CHILD = "from common.migrations import upgrade_from_stdin; upgrade_from_stdin()"


class SchemaNotAtHead(RuntimeError):
    """A service told not to migrate (MC_MIGRATE_ON_START=false) found its schema behind."""


class MigrationFailed(RuntimeError):
    """The migration child exited with an error (its own log lines say which)."""


def upgrade_in_child(service: str, url: str, log_level: str) -> None:
    """Apply ``service``'s pending migrations to ``url`` in a child process; wait for it.

    Its log lines go to this process's stderr; its failure raises ``MigrationFailed``.
    """
    path = os.pathsep.join(filter(None, (str(_ROOT), os.environ.get("PYTHONPATH"))))
    result = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=json.dumps({"service": service, "url": url, "log_level": log_level}) + "\n",
        text=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": path},
        check=False,
    )
    if result.returncode != 0:
        raise MigrationFailed(
            f"migrating the {service} database failed (exit status {result.returncode}); "
            "the lines above say why"
        )


def script_heads(script_location: Path) -> set[str]:
    """The head revisions of a service's ``versions/`` (those no other revision builds on),
    read from each file's ``revision`` / ``down_revision`` assignments as Alembic reads them."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (script_location / "versions").glob("*.py"):
        names: dict[str, object] = {}
        for node in ast.parse(path.read_text()).body:
            target = value = None
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                target, value = node.target, node.value
            if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                names[target.id] = ast.literal_eval(value) if value is not None else None
        revision, down = names.get("revision"), names.get("down_revision")
        if isinstance(revision, str):
            revisions.add(revision)
            parents.update((down,) if isinstance(down, str) else (down or ()))  # type: ignore[arg-type]
    return revisions - parents


async def current_revisions(engine: AsyncEngine, service: str) -> set[str]:
    """The revisions ``service``'s version table holds; empty when it has none (yet)."""
    query = text(f"SELECT version_num FROM alembic_version_{service}")  # our name
    try:
        # Only a read: on SQLite it must not queue behind writers for the write lock.
        async with engine.connect() as connection:
            connection = await connection.execution_options(**{SQLITE_BEGIN_OPTION: "DEFERRED"})
            return {str(row[0]) for row in await connection.execute(query)}
    except DBAPIError:  # no version table: an empty database
        return set()
