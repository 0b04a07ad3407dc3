"""Alembic migrations applied programmatically: one script directory and version table per service.

Each service keeps ``<svc>/migrations/`` (``env.py``, ``script.py.mako``, ``versions/``) and
applies it at start-up with ``upgrade_to_head``; its ``env.py`` is two lines calling ``run_env``
with the service's own version table, so services can share one PostgreSQL database. There is
no alembic.ini: ``python -m common.migrations`` is the command line (upgrade, new revision).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from alembic import command, context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, MetaData, text
from sqlalchemy.ext.asyncio import AsyncEngine

from common import schema_state
from common.db import SQLITE_BEGIN_OPTION, create_engine, database_url
from common.logging import configure_logging
from common.settings import SERVICE_NAMES, CommonSettings, load_settings

_REPO_ROOT = Path(__file__).resolve().parent.parent


def version_table(service: str) -> str:
    """The Alembic version table of a service, e.g. ``alembic_version_payment``."""
    return f"alembic_version_{service}"


def script_location_of(service: str) -> Path:
    """The migration script directory of a service: ``<service>_svc/migrations``."""
    return _REPO_ROOT / f"{service}_svc" / "migrations"


def alembic_config(script_location: Path) -> Config:
    """An in-memory Alembic configuration for one script directory (no alembic.ini)."""
    config = Config()
    config.set_main_option("script_location", str(script_location))
    # Silences Alembic's warning about the legacy path splitting; we list no extra paths.
    config.set_main_option("path_separator", "os")
    # Sequential ids (see new_revision) make "0003_add_orders.py" the file name.
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    # New revision files come out lint-clean: unused imports of the template dropped, formatted.
    hooks = {"ruff_fix": "check --fix --quiet", "ruff_format": "format --quiet"}
    config.set_section_option("post_write_hooks", "hooks", " ".join(hooks))
    for hook, options in hooks.items():
        config.set_section_option("post_write_hooks", f"{hook}.type", "module")
        config.set_section_option("post_write_hooks", f"{hook}.module", "ruff")
        config.set_section_option(
            "post_write_hooks", f"{hook}.options", f"{options} REVISION_SCRIPT_FILENAME"
        )
    return config


async def upgrade_to_head(
    engine_or_url: AsyncEngine | str | URL, script_location: Path
) -> list[str]:
    """Apply every migration of ``script_location`` not yet applied; a no-op when at head.

    Returns the revisions applied, oldest first ("0003_add_orders"), for the command line to say.

    The whole upgrade is one transaction (PostgreSQL and SQLite both have transactional DDL):
    a failing revision leaves the schema as it was. An engine passed in stays open; one made
    from a URL is disposed of.
    """
    if isinstance(engine_or_url, AsyncEngine):
        engine, owned = engine_or_url, False
    else:
        engine, owned = create_engine(engine_or_url), True
    try:
        async with _alembic_lock():
            return await _run(
                engine, script_location, lambda config: command.upgrade(config, "head")
            )
    finally:
        if owned:
            await engine.dispose()


# Defined apart so a service can catch it without importing Alembic (common.schema_state).
SchemaNotAtHead = schema_state.SchemaNotAtHead


async def require_head(engine: AsyncEngine, script_location: Path, service: str) -> None:
    """Raise ``SchemaNotAtHead`` unless ``service``'s schema is at its newest revision.

    For replicas that leave migrating to a separate step (the chart's hook Job): serving on an
    older schema would fail at the first query that meets a missing column, far from the cause.
    """
    heads = set(ScriptDirectory.from_config(alembic_config(script_location)).get_heads())

    def read_current(connection: Connection) -> set[str]:
        migration = MigrationContext.configure(
            connection, opts={"version_table": version_table(service)}
        )
        return set(migration.get_current_heads())

    # Only a read: on SQLite it must not queue behind writers for the write lock.
    async with engine.connect() as connection:
        connection = await connection.execution_options(**{SQLITE_BEGIN_OPTION: "DEFERRED"})
        current = await connection.run_sync(read_current)
    if current != heads:
        found = ", ".join(sorted(current)) or "no revision (empty schema)"
        raise SchemaNotAtHead(
            f"the {service} database is at {found}, not at head {', '.join(sorted(heads))}, "
            f"and MC_MIGRATE_ON_START=false: run `python -m common.migrations upgrade {service}` "
            f"(the image's `migrate {service}`, or the chart's migration Job) first, or set "
            "MC_MIGRATE_ON_START=true"
        )


# Alembic keeps the running migration in module-level state (alembic.context): two upgrades
# interleaving on one event loop would overwrite each other's. Other processes are kept apart
# by the database (run_env).
_alembic_locks: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = WeakKeyDictionary()


def _alembic_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _alembic_locks.get(loop)
    if lock is None:
        lock = _alembic_locks[loop] = asyncio.Lock()
    return lock


async def _run(
    engine: AsyncEngine, script_location: Path, alembic_command: Callable[[Config], object]
) -> list[str]:
    """Run ``alembic_command`` in one transaction; the revisions it applied (see run_env)."""
    applied: list[str] = []

    def in_transaction(connection: Connection) -> None:
        config = alembic_config(script_location)
        # run_env picks the connection up from here instead of opening its own.
        config.attributes["connection"] = connection
        config.attributes["applied"] = applied
        alembic_command(config)

    async with engine.begin() as connection:
        await connection.run_sync(in_transaction)
    return applied


def run_env(*, version_table: str, target_metadata: MetaData | None = None) -> None:
    """The body of every service's ``migrations/env.py``: migrate on the connection we pass.

    ``target_metadata`` (the service's tables) is only needed for ``--autogenerate``.
    """
    connection: Connection | None = context.config.attributes.get("connection")
    applied: list[str] = context.config.attributes.get("applied", [])
    if connection is None:
        raise RuntimeError(
            "run migrations through common.migrations (upgrade_to_head or "
            "`python -m common.migrations`), which provides the database connection"
        )
    if connection.dialect.name == "postgresql":
        # Replicas starting together would race to create the same tables; the first holds
        # this lock until its transaction ends and the others then find the schema at head.
        key = zlib.crc32(version_table.encode())
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=version_table,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        # We BEGIN on SQLite ourselves (common.db), so its DDL is transactional as well.
        transactional_ddl=True,
        # Each applied step's file name (revision and slug), for `migrate` to report.
        on_version_apply=lambda *, step, **_: applied.append(_step_name(step)),
    )
    with context.begin_transaction():
        context.run_migrations()


def _step_name(step: Any) -> str:
    # A MigrationInfo: its revision's module file name says what it does ("0002_messaging").
    revision = step.revision_map.get_revision(step.up_revision_id)
    module = getattr(revision, "module", None)
    path = getattr(module, "__file__", None)
    return Path(path).stem if path else str(step.up_revision_id)


def next_revision_id(script_location: Path) -> str:
    """The next sequential revision id of a script directory: "0001", "0002", ..."""
    script = ScriptDirectory.from_config(alembic_config(script_location))
    return f"{sum(1 for _ in script.walk_revisions()) + 1:04d}"


def new_revision(
    script_location: Path, message: str, *, autogenerate_from: Connection | None = None
) -> None:
    """Write the next revision file; given a connection, autogenerate it from the models."""
    config = alembic_config(script_location)
    if autogenerate_from is not None:
        config.attributes["connection"] = autogenerate_from
    command.revision(
        config,
        message=message,
        rev_id=next_revision_id(script_location),
        autogenerate=autogenerate_from is not None,
    )


class MigrationSettings(CommonSettings):
    """What ``migrate`` reads: the databases. It never touches Kafka, so no Kafka rules."""

    def production_problems(self) -> list[str]:
        return [problem for service in SERVICE_NAMES for problem in self.database_problems(service)]


def _service(name: str) -> str:
    if name not in SERVICE_NAMES:
        raise argparse.ArgumentTypeError(f"{name!r} is not one of {', '.join(SERVICE_NAMES)}")
    return name


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m common.migrations {upgrade,revision} ...`` against the configured databases."""
    parser = argparse.ArgumentParser(
        prog="python -m common.migrations", description="Apply or add service migrations."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    upgrade = commands.add_parser("upgrade", help="apply pending migrations")
    # Without names: every service. (Python 3.11's argparse rejects an empty list against
    # `choices`, hence the type check instead.)
    upgrade.add_argument("services", nargs="*", type=_service, metavar="SERVICE")
    revision = commands.add_parser("revision", help="add a migration file to a service")
    revision.add_argument("service", choices=SERVICE_NAMES)
    revision.add_argument("-m", "--message", required=True)
    revision.add_argument("--autogenerate", action="store_true")
    args = parser.parse_args(argv)

    settings = load_settings(MigrationSettings)
    configure_logging("migrations", settings.log_level)

    async def run() -> None:
        if args.command == "upgrade":
            for service in args.services or SERVICE_NAMES:
                location = script_location_of(service)
                applied = await upgrade_to_head(database_url(service, settings), location)
                heads = ", ".join(ScriptDirectory.from_config(alembic_config(location)).get_heads())
                if applied:
                    report = f"applied {', '.join(applied)}; now at {heads}"
                else:
                    report = f"already at {heads}, nothing to apply"
                sys.stdout.write(f"{service}: {report}\n")
            return
        location = script_location_of(args.service)
        if not args.autogenerate:
            new_revision(location, args.message)
            return
        # Autogenerate compares the models with the live schema, so it needs the database.
        engine = create_engine(database_url(args.service, settings))
        try:
            async with engine.connect() as connection:
                await connection.run_sync(
                    lambda sync: new_revision(location, args.message, autogenerate_from=sync)
                )
        finally:
            await engine.dispose()

    asyncio.run(run())


if __name__ == "__main__":
    main()


def messaging_revision(service: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """``(upgrade, downgrade)`` of the revision that adds a service's outbox and inbox."""
    from alembic import op

    from common.inbox import create_inbox_table, drop_inbox_table
    from common.outbox import create_outbox_table, drop_outbox_table

    def upgrade() -> None:
        create_outbox_table(op, service)
        create_inbox_table(op, service)

    def downgrade() -> None:
        drop_inbox_table(op, service)
        drop_outbox_table(op, service)

    return upgrade, downgrade


def outbox_trace_context_revision(service: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """``(upgrade, downgrade)`` of the revision adding the trace context to a service's outbox."""
    from alembic import op

    from common.outbox import add_trace_context_column, drop_trace_context_column

    def upgrade() -> None:
        add_trace_context_column(op, service)

    def downgrade() -> None:
        drop_trace_context_column(op, service)

    return upgrade, downgrade


def dead_letters_revision(service: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """``(upgrade, downgrade)`` of the revision adding a consuming service's dead letters."""
    from alembic import op

    from common.dead_letters import create_dead_letter_table, drop_dead_letter_table

    def upgrade() -> None:
        create_dead_letter_table(op, service)

    def downgrade() -> None:
        drop_dead_letter_table(op, service)

    return upgrade, downgrade
