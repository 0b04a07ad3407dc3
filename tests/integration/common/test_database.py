"""Units of work, constraints, concurrency and ping on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    func,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from common.db import Database, after_commit


def fresh_tables() -> tuple[MetaData, Table, Table]:
    """A parent and a child table under random names: tests share the PostgreSQL database."""
    suffix = uuid.uuid4().hex[:10]
    metadata = MetaData()
    parent = Table(
        f"parent_{suffix}",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("name", String(50), nullable=False),
        Column("n", Integer, nullable=False, server_default="0"),
    )
    child = Table(
        f"child_{suffix}",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("parent_id", ForeignKey(parent.c.id), nullable=False),
    )
    return metadata, parent, child


@pytest.fixture
async def tables(database: Database) -> tuple[Table, Table]:
    metadata, parent, child = fresh_tables()
    async with database.engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    return parent, child


async def count(database: Database, table: Table) -> int:
    async with database.session() as session:
        return (await session.execute(select(func.count()).select_from(table))).scalar_one()


async def test_a_unit_of_work_commits_when_its_block_ends_normally(
    database: Database, tables: tuple[Table, Table]
) -> None:
    parent, _ = tables

    async with database.session() as session:
        await session.execute(parent.insert().values(id=1, name="kept"))

    assert await count(database, parent) == 1


async def test_a_unit_of_work_rolls_back_all_its_writes_when_its_block_raises(
    database: Database, tables: tuple[Table, Table]
) -> None:
    parent, _ = tables

    async def failing_use_case() -> None:
        async with database.session() as session:
            await session.execute(parent.insert().values(id=1, name="first"))
            await session.execute(parent.insert().values(id=2, name="second"))
            raise RuntimeError("use case failed")

    with pytest.raises(RuntimeError, match="use case failed"):
        await failing_use_case()

    assert await count(database, parent) == 0


async def test_foreign_keys_are_enforced(database: Database, tables: tuple[Table, Table]) -> None:
    _, child = tables

    with pytest.raises(IntegrityError):
        async with database.session() as session:
            await session.execute(child.insert().values(id=1, parent_id=404))

    assert await count(database, child) == 0


async def test_concurrent_read_then_write_units_of_work_lose_no_update(
    database: Database, tables: tuple[Table, Table]
) -> None:
    # The pattern of a stock reservation: read, decide, write. FOR UPDATE serialises it on
    # PostgreSQL; on SQLite every unit of work takes the write lock at BEGIN.
    parent, _ = tables
    async with database.session() as session:
        await session.execute(parent.insert().values(id=1, name="counter"))

    async def increment() -> None:
        async with database.session() as session:
            row = select(parent.c.n).where(parent.c.id == 1).with_for_update()
            current = (await session.execute(row)).scalar_one()
            await asyncio.sleep(0.01)  # let the others interleave here if they could
            await session.execute(update(parent).where(parent.c.id == 1).values(n=current + 1))

    await asyncio.gather(*(increment() for _ in range(8)))

    async with database.session() as session:
        assert (await session.execute(select(parent.c.n))).scalar_one() == 8


async def test_after_commit_work_runs_once_when_the_unit_of_work_commits_and_never_else(
    database: Database, tables: tuple[Table, Table]
) -> None:
    # What wakes the outbox relay: not a savepoint, not a rollback, once per commit.
    parent, _ = tables
    calls: list[str] = []

    def committed() -> None:
        calls.append("committed")

    def rolled_back() -> None:
        calls.append("rolled back")

    async with database.session() as session:
        after_commit(session, committed)
        async with session.begin_nested():
            await session.execute(parent.insert().values(id=1, name="saved"))
        after_commit(session, committed)
        assert calls == []
    assert calls == ["committed"]

    async def failing_use_case() -> None:
        async with database.session() as session:
            after_commit(session, rolled_back)
            raise RuntimeError("use case failed")

    with pytest.raises(RuntimeError):
        await failing_use_case()
    async with database.session():
        pass  # most likely on the same pooled connection: nothing of the rollback is left
    assert calls == ["committed"]


async def test_a_unit_of_work_whose_connection_broke_ends_with_its_own_error(
    database: Database, tables: tuple[Table, Table]
) -> None:
    # A task cancelled in the middle of a statement leaves its connection invalidated: the
    # unit must still end with the cancellation, or a cancelled background loop carries on.
    parent, _ = tables

    async def cancelled_use_case() -> None:
        async with database.session() as session:
            await session.execute(parent.insert().values(id=1, name="lost"))
            await session.invalidate()
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await cancelled_use_case()

    assert await count(database, parent) == 0


async def test_a_reading_unit_sees_one_snapshot_while_another_unit_commits(
    database: Database, tables: tuple[Table, Table]
) -> None:
    # An aggregate read in several statements must never see half of a concurrent commit
    # (two reviewers of one held order read it ON_HOLD with its payment already VOIDED).
    parent, _ = tables
    async with database.session() as session:
        await session.execute(parent.insert().values(id=1, name="first", n=1))

    async with database.session(read_only=True) as reader:
        before = (await reader.execute(select(parent.c.n).where(parent.c.id == 1))).scalar_one()
        async with database.session() as writer:
            await writer.execute(update(parent).where(parent.c.id == 1).values(n=2))
            await writer.execute(parent.insert().values(id=2, name="second", n=2))
        row = (await reader.execute(select(parent.c.n).where(parent.c.id == 1))).scalar_one()
        rows = (await reader.execute(select(func.count()).select_from(parent))).scalar_one()

    assert (before, row, rows) == (1, 1, 1)
    assert await count(database, parent) == 2  # the writer's commit itself went through


@pytest.mark.postgres
async def test_a_reading_unit_on_postgresql_refuses_to_write(postgres_url: str) -> None:
    database = Database.from_url(postgres_url)
    _, parent, _ = fresh_tables()
    try:
        async with database.engine.begin() as connection:
            await connection.run_sync(parent.metadata.create_all)
        with pytest.raises(DBAPIError, match="read-only transaction"):
            async with database.session(read_only=True) as reader:
                await reader.execute(parent.insert().values(id=1, name="not here"))
        assert await count(database, parent) == 0
    finally:
        await database.dispose()


async def test_ping_is_true_for_a_reachable_database(database: Database) -> None:
    assert await database.ping()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite:////nonexistent-dir/sub/x.db",
        "postgresql+asyncpg://postgres@127.0.0.1:1/postgres",  # nothing listens on port 1
        "postgresql+asyncpg://postgres@10.255.255.1:5432/postgres",  # packets go nowhere
    ],
    ids=["sqlite-missing-dir", "postgres-refused", "postgres-blackhole"],
)
async def test_ping_is_false_promptly_for_an_unreachable_database(url: str) -> None:
    database = Database.from_url(url, ping_timeout=0.5)
    started = time.monotonic()
    try:
        assert not await database.ping()
    finally:
        await database.dispose()

    assert time.monotonic() - started < 3
    await aiosqlite_threads_ended()


async def aiosqlite_threads_ended() -> None:
    # After a failed connect, aiosqlite 0.22 stops its worker thread without awaiting it; if the
    # test's event loop closes first, the thread fails to report back ("Event loop is closed",
    # omnilib/aiosqlite#241). A service's loop outlives its connections, so only tests wait.
    deadline = time.monotonic() + 2
    while any("_connection_worker_thread" in t.name for t in threading.enumerate()):
        assert time.monotonic() < deadline, "aiosqlite worker thread still running"
        await asyncio.sleep(0.01)


async def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'wal.db'}")
    try:
        async with database.engine.connect() as connection:
            journal = (await connection.execute(text("PRAGMA journal_mode"))).scalar_one()
            busy_timeout = (await connection.execute(text("PRAGMA busy_timeout"))).scalar_one()
            foreign_keys = (await connection.execute(text("PRAGMA foreign_keys"))).scalar_one()
    finally:
        await database.dispose()

    assert journal == "wal"
    assert busy_timeout > 0
    assert foreign_keys == 1


async def test_a_ping_does_not_wait_for_a_writer_holding_the_sqlite_lock(tmp_path: Path) -> None:
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'busy.db'}", ping_timeout=1)
    _, parent, _ = fresh_tables()
    try:
        async with database.engine.begin() as connection:
            await connection.run_sync(parent.metadata.create_all)
        async with database.session() as session:
            await session.execute(parent.insert().values(id=1, name="held"))
            assert await database.ping()  # while this unit of work holds the write lock
    finally:
        await database.dispose()


@pytest.mark.postgres
async def test_a_pooled_connection_the_server_closed_is_replaced_at_check_out(
    postgres_url: str,
) -> None:
    # No pre-ping round trip per check-out: asyncpg notices the server's goodbye by itself, and
    # the pool replaces the dead connection before a unit of work gets it.
    database = Database.from_url(postgres_url)
    other = Database.from_url(postgres_url)
    try:
        async with database.session(read_only=True) as session:
            pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        async with other.session() as session:
            await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

        async def replaced() -> bool:
            async with database.session() as session:
                now = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            return bool(now != pid)

        # The goodbye arrives asynchronously; until it has, the old connection is still
        # "alive" to the client, so the first unit of work after it is what is checked.
        await asyncio.sleep(0.2)
        assert await replaced()
    finally:
        await other.dispose()
        await database.dispose()


async def test_sqlite_writers_of_one_process_queue_without_the_busy_handler(
    tmp_path: Path,
) -> None:
    # A busy timeout of 0 makes any wait in SQLite's own busy handler an immediate
    # "database is locked": every writer here must queue on the process's lock instead.
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'queue.db'}")
    _, parent, _ = fresh_tables()
    try:
        async with database.engine.begin() as connection:
            await connection.run_sync(parent.metadata.create_all)

        async def write(n: int) -> None:
            async with database.session() as session:
                await session.execute(text("PRAGMA busy_timeout=0"))
                await asyncio.sleep(0)  # hold the write lock across a suspension
                await session.execute(parent.insert().values(id=n, name=f"row {n}"))

        await asyncio.gather(*(write(n) for n in range(32)))
        async with database.session(read_only=True) as session:
            count = (await session.execute(select(func.count()).select_from(parent))).scalar()
    finally:
        await database.dispose()
    assert count == 32


async def test_a_nested_sqlite_writer_is_refused_instead_of_waiting_for_itself(
    tmp_path: Path,
) -> None:
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'nested.db'}")
    try:
        async with database.session():
            with pytest.raises(RuntimeError, match="inside another one"):
                async with database.session():
                    pass
            async with database.session(read_only=True) as reader:  # reads are fine
                assert (await reader.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await database.dispose()
