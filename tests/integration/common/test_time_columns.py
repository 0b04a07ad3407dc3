"""Store time columns read back aware UTC datetimes and refuse naive ones, on both backends."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select
from sqlalchemy.exc import StatementError

from common.db import Database, UtcDateTime


@pytest.fixture
async def times(database: Database) -> Table:
    metadata = MetaData()
    table = Table(
        f"times_{uuid.uuid4().hex[:10]}",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("at", UtcDateTime, nullable=True),
    )
    async with database.engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    return table


async def test_a_time_written_in_any_zone_reads_back_as_the_same_instant_in_utc(
    database: Database, times: Table
) -> None:
    paris = datetime(2026, 12, 2, 10, 15, 30, 123456, tzinfo=timezone(timedelta(hours=1)))
    async with database.session() as session:
        await session.execute(insert(times).values(id=1, at=paris))
    async with database.session() as session:
        row = (await session.execute(select(times.c.at))).one()

    assert row.at == paris
    assert row.at.tzinfo == UTC


async def test_comparisons_in_queries_use_the_utc_instant(database: Database, times: Table) -> None:
    moment = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    async with database.session() as session:
        await session.execute(insert(times).values(id=1, at=moment))
    earlier_elsewhere = (moment - timedelta(minutes=1)).astimezone(timezone(timedelta(hours=-5)))
    async with database.session() as session:
        after = (
            await session.execute(select(times.c.id).where(times.c.at > earlier_elsewhere))
        ).all()

    assert len(after) == 1


async def test_a_naive_datetime_is_refused_on_write(database: Database, times: Table) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        async with database.session() as session:
            await session.execute(insert(times).values(id=1, at=datetime(2026, 12, 2)))
