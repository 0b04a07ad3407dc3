"""PostgreSQL: a unit of work whose pooled connection died runs on a fresh one, once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, event, exc, func, select
from sqlalchemy import text as sql
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from common.db import Database, after_commit, connection_lost
from localrun.postgres import database_of_its_own

pytestmark = pytest.mark.postgres

METADATA = MetaData()
ORDERS = Table(
    "reconnect_orders",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("note", String(40), nullable=False),
)

# The brief's way of killing every pooled connection: from another connection, as an operator
# or a PostgreSQL restart would.
KILL_THE_OTHERS = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


@pytest.fixture
async def own_url(postgres_url: str) -> AsyncIterator[str]:
    """A database of this test alone: killing "every other connection" touches no other test."""
    async with database_of_its_own(postgres_url, "mc_test_reconnect") as url:
        engine = create_async_engine(url, poolclass=NullPool)
        async with engine.begin() as connection:
            await connection.run_sync(METADATA.create_all)
        await engine.dispose()
        yield url


@pytest.fixture
async def database(own_url: str) -> AsyncIterator[Database]:
    db = Database.from_url(own_url)
    yield db
    await db.dispose()


@pytest.fixture
async def operator(own_url: str) -> AsyncIterator[Database]:
    """Another process's connection, the one that kills the service's connections."""
    db = Database.from_url(own_url)
    yield db
    await db.dispose()


@pytest.fixture
def connects(database: Database) -> Iterator[list[object]]:
    """Every new connection the service's engine opens."""
    opened: list[object] = []

    def record(dbapi_connection: Any, _record: Any) -> None:
        opened.append(dbapi_connection)

    event.listen(database.engine.sync_engine, "connect", record)
    yield opened
    event.remove(database.engine.sync_engine, "connect", record)


async def kill_the_others(operator: Database) -> int:
    async with operator.session() as session:
        return len((await session.execute(sql(KILL_THE_OTHERS))).all())


async def notes(database: Database) -> list[str]:
    async with database.session(read_only=True) as session:
        return list((await session.scalars(select(ORDERS.c.note).order_by(ORDERS.c.id))).all())


async def test_a_unit_of_work_whose_connection_was_killed_before_its_first_statement_commits(
    database: Database, operator: Database, connects: list[object]
) -> None:
    ran: list[str] = []
    async with database.session() as session:
        # The connection is checked out and alive as far as the client knows; then it dies.
        assert await kill_the_others(operator) == 1
        await session.execute(ORDERS.insert().values(id=1, note="placed"))
        after_commit(session, lambda: ran.append("committed"))
        await session.execute(ORDERS.update().where(ORDERS.c.id == 1).values(note="confirmed"))

    assert await notes(database) == ["confirmed"]
    assert ran == ["committed"]  # the unit's after-commit work moved to the new connection
    assert len(connects) == 2


async def test_the_next_use_cases_succeed_after_every_pooled_connection_was_killed(
    database: Database, operator: Database
) -> None:
    async def place(order_id: int) -> None:
        async with database.session() as session:
            await session.execute(ORDERS.insert().values(id=order_id, note=f"order {order_id}"))
            # Held across a yield so the five units use five pooled connections at once.
            await asyncio.sleep(0)
            await session.execute(select(func.count()).select_from(ORDERS))

    await asyncio.gather(*(place(i) for i in range(1, 6)))
    assert await kill_the_others(operator) >= 1

    # At once, with no pause for the client to notice the server's goodbyes.
    await asyncio.gather(*(place(i) for i in range(6, 11)))

    assert await notes(database) == [f"order {i}" for i in range(1, 11)]


async def test_a_read_whose_connection_was_killed_answers_from_a_fresh_connection(
    database: Database, operator: Database, connects: list[object]
) -> None:
    async with database.session() as session:
        await session.execute(ORDERS.insert().values(id=1, note="placed"))

    async with database.session(read_only=True) as session:
        await kill_the_others(operator)
        assert (await session.scalars(select(ORDERS.c.note))).all() == ["placed"]

    assert len(connects) == 2


async def test_a_unit_that_begins_with_a_savepoint_survives_a_killed_connection(
    database: Database, operator: Database
) -> None:
    async with database.session() as session:
        await kill_the_others(operator)
        async with session.begin_nested():
            await session.execute(ORDERS.insert().values(id=1, note="registered"))

    assert await notes(database) == ["registered"]


async def test_a_connection_lost_again_on_the_retry_is_reported_not_retried_again(
    database: Database, connects: list[object]
) -> None:
    # The statement ends its own session, on the pooled connection and on the fresh one alike.
    with pytest.raises(exc.DBAPIError) as failed:
        async with database.session() as session:
            await session.execute(sql("SELECT pg_terminate_backend(pg_backend_pid())"))

    assert connection_lost(failed.value)
    assert len(connects) == 2  # the first connection and one retry, no loop
    assert await notes(database) == []  # and the engine still serves the next unit


async def test_a_server_that_refuses_the_new_connection_fails_the_unit_with_that_refusal(
    database: Database, operator: Database, connects: list[object]
) -> None:
    # PostgreSQL still restarting: the retry's connect is refused.
    def refuse(*_args: Any) -> None:
        raise ConnectionRefusedError("PostgreSQL is restarting")

    async def place_while_restarting() -> None:
        async with database.session() as session:
            await kill_the_others(operator)
            event.listen(database.engine.sync_engine, "do_connect", refuse)
            await session.execute(ORDERS.insert().values(id=1, note="lost"))

    with pytest.raises(ConnectionRefusedError, match="restarting"):
        await place_while_restarting()

    event.remove(database.engine.sync_engine, "do_connect", refuse)
    assert len(connects) == 1  # the refused one never opened
    assert await notes(database) == []


async def test_a_first_statement_that_fails_for_itself_is_not_retried(
    database: Database, connects: list[object]
) -> None:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    try:
        with pytest.raises(exc.DBAPIError) as failed:
            async with database.session() as session:
                await session.execute(sql("SELECT 1 / 0"))
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", record)

    assert not connection_lost(failed.value)
    assert statements.count("SELECT 1 / 0") == 1
    assert len(connects) == 1


async def test_a_connection_killed_after_the_first_statement_fails_the_unit_and_commits_nothing(
    database: Database, operator: Database
) -> None:
    # Mid-transaction the earlier statements are gone with the connection: replaying the last
    # one alone would commit half a unit, so the unit fails instead.
    async def place_both_halves() -> None:
        async with database.session() as session:
            await session.execute(ORDERS.insert().values(id=1, note="half"))
            await kill_the_others(operator)
            await session.execute(ORDERS.insert().values(id=2, note="other half"))

    with pytest.raises(exc.DBAPIError) as failed:
        await place_both_halves()

    assert connection_lost(failed.value)
    assert await notes(database) == []
