"""Alembic upgrades at start-up, on SQLite and PostgreSQL: per service, atomic, idempotent."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from common.db import create_engine
from common.migrations import alembic_config, script_location_of, upgrade_to_head, version_table
from common.migrations import main as migrate
from common.settings import SERVICE_NAMES

REVISION = '''"""{message}"""

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = {down_revision!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("{table}", sa.Column("id", sa.Integer, primary_key=True))
    {then}


def downgrade() -> None:
    op.drop_table("{table}")
'''


class Scripts:
    """A throwaway migration directory with its own version table and table names."""

    def __init__(self, root: Path) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.location = root / f"migrations_{suffix}"
        self.version_table = f"alembic_version_test_{suffix}"
        self.suffix = suffix
        (self.location / "versions").mkdir(parents=True)
        (self.location / "env.py").write_text(
            "from common.migrations import run_env\n\n"
            f"run_env(version_table={self.version_table!r})\n"
        )
        self.revisions: list[str] = []

    def add(self, name: str, *, then: str = "pass") -> str:
        """Add a revision creating table ``<name>_<suffix>``; returns the table name."""
        revision = f"{len(self.revisions) + 1:04d}"
        table = f"{name}_{self.suffix}"
        (self.location / "versions" / f"{revision}_{name}.py").write_text(
            REVISION.format(
                message=f"create {name}",
                revision=revision,
                down_revision=self.revisions[-1] if self.revisions else None,
                table=table,
                then=then,
            )
        )
        self.revisions.append(revision)
        return table


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url)
    yield engine
    await engine.dispose()


async def has_table(engine: AsyncEngine, name: str) -> bool:
    def check(connection: Connection) -> bool:
        return inspect(connection).has_table(name)

    async with engine.connect() as connection:
        return await connection.run_sync(check)


async def versions(engine: AsyncEngine, table: str) -> list[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(text(f"SELECT version_num FROM {table}"))
        return [row[0] for row in rows]


@pytest.mark.parametrize("service", SERVICE_NAMES)
async def test_a_service_migrates_to_its_head_in_its_own_version_table_and_rerunning_is_a_no_op(
    engine: AsyncEngine, db_url: str, service: str
) -> None:
    await upgrade_to_head(engine, script_location_of(service))
    await upgrade_to_head(db_url, script_location_of(service))  # from a URL, on a new engine

    scripts = ScriptDirectory.from_config(alembic_config(script_location_of(service)))
    assert await versions(engine, version_table(service)) == [scripts.get_current_head()]
    assert await has_table(engine, f"{service}_outbox")


async def test_an_upgrade_applies_pending_revisions_once(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    scripts = Scripts(tmp_path)
    first = scripts.add("orders")
    assert await upgrade_to_head(engine, scripts.location) == ["0001_orders"]
    second = scripts.add("payments")

    assert await upgrade_to_head(engine, scripts.location) == ["0002_payments"]
    assert await upgrade_to_head(engine, scripts.location) == []

    assert await has_table(engine, first)
    assert await has_table(engine, second)
    assert await versions(engine, scripts.version_table) == ["0002"]


async def test_a_failing_revision_leaves_the_schema_as_it_was(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    scripts = Scripts(tmp_path)
    first = scripts.add("orders")
    second = scripts.add("payments", then='raise RuntimeError("revision failed")')

    with pytest.raises(RuntimeError, match="revision failed"):
        await upgrade_to_head(engine, scripts.location)

    assert not await has_table(engine, first)
    assert not await has_table(engine, second)
    assert not await has_table(engine, scripts.version_table)


async def test_concurrent_upgrades_in_one_process_apply_each_revision_once(
    db_url: str, tmp_path: Path
) -> None:
    scripts = Scripts(tmp_path)
    table = scripts.add("orders")
    engines = [create_engine(db_url) for _ in range(3)]
    try:
        await asyncio.gather(*(upgrade_to_head(e, scripts.location) for e in engines))

        assert await has_table(engines[0], table)
        assert await versions(engines[0], scripts.version_table) == ["0001"]
    finally:
        for e in engines:
            await e.dispose()


async def test_replicas_starting_together_apply_each_revision_once(
    engine: AsyncEngine, db_url: str, tmp_path: Path
) -> None:
    scripts = Scripts(tmp_path)
    # Slow enough that the other replicas arrive while the first one is migrating.
    table = scripts.add("orders", then="__import__('time').sleep(0.5)")
    program = (
        "import asyncio, pathlib, sys\n"
        "from common.migrations import upgrade_to_head\n"
        "asyncio.run(upgrade_to_head(sys.argv[1], pathlib.Path(sys.argv[2])))\n"
    )
    replicas = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            program,
            db_url,
            str(scripts.location),
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]

    results = [await replica.communicate() for replica in replicas]

    assert [r.returncode for r in replicas] == [0, 0, 0], [err.decode() for _, err in results]
    assert await has_table(engine, table)
    assert await versions(engine, scripts.version_table) == ["0001"]


def test_the_migrate_command_says_what_it_applied_per_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MC_DATA_DIR", str(tmp_path))
    for name in SERVICE_NAMES:
        monkeypatch.delenv(f"MC_{name.upper()}_DATABASE_URL", raising=False)

    migrate(["upgrade"])
    first = capsys.readouterr().out.splitlines()
    migrate(["upgrade", "product"])
    again = capsys.readouterr().out.splitlines()

    assert [line.split(":")[0] for line in first] == list(SERVICE_NAMES)
    for line in first:
        assert "applied 0001_baseline, 0002_outbox" in line
    head = ScriptDirectory.from_config(alembic_config(script_location_of("product"))).get_heads()
    assert again == [f"product: already at {head[0]}, nothing to apply"]
