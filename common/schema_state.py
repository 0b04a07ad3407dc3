"""Whether a service's schema is at head, read without Alembic.

Alembic leaves ~8 MB in a process that then serves for weeks without needing it (``python -m
bench.idle``). A service migrating on start therefore first compares its version table with
the heads of its revision files (``script_heads``, ``current_revisions``) and imports Alembic
(``common.migrations``) only when the schema is behind: a restart at head, the usual case,
never loads it. (Migrating in a child process instead was tried: the extra interpreter made a
fresh stack miss its 60 s start-up at a load average of 25 on two cores.)
"""

from __future__ import annotations

import ast
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from common.db import SQLITE_BEGIN_OPTION


class SchemaNotAtHead(RuntimeError):
    """A service told not to migrate (MC_MIGRATE_ON_START=false) found its schema behind."""


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
