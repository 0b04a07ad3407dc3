"""Service metrics read from a real database: units of work timed, outbox backlog and age."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from common import clock
from common.db import Database
from common.metrics import REGISTRY
from common.outbox import Outbox, OutgoingEvent
from common.outbox_metrics import refresh_outbox_gauges


@pytest.fixture
async def outbox(database: Database) -> Outbox:
    # A fresh name per test: the PostgreSQL database is shared by the whole session.
    box = Outbox(f"m{uuid.uuid4().hex[:10]}")
    async with database.engine.begin() as connection:
        await connection.run_sync(box.table.metadata.create_all)
    return box


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_units_of_work_are_timed_and_failures_counted_by_error(database: Database) -> None:
    name = database.name
    ok_before = sample("mc_db_unit_of_work_seconds_count", database=name, outcome="ok")
    failed_before = sample("mc_db_unit_of_work_failures_total", database=name, error="KeyError")

    async with database.session():
        pass
    with pytest.raises(KeyError):
        async with database.session():
            raise KeyError("boom")

    assert sample("mc_db_unit_of_work_seconds_count", database=name, outcome="ok") == ok_before + 1
    assert (
        sample("mc_db_unit_of_work_failures_total", database=name, error="KeyError")
        == failed_before + 1
    )


async def test_outbox_gauges_give_the_backlog_and_the_age_of_its_oldest_event(
    database: Database, outbox: Outbox
) -> None:
    await refresh_outbox_gauges(database, outbox)
    assert sample("mc_outbox_backlog", service=outbox.service) == 0
    assert sample("mc_outbox_oldest_unpublished_age_seconds", service=outbox.service) == 0

    async with database.session() as session:
        await outbox.add(
            session,
            *(OutgoingEvent("t", "microcommerce.test.happened", "s", {"n": n}) for n in range(3)),
        )
        # Backdated, so the age is known without waiting for it.
        await session.execute(
            update(outbox.table).values(created_at=clock.now() - timedelta(minutes=10))
        )
    await refresh_outbox_gauges(database, outbox)

    assert sample("mc_outbox_backlog", service=outbox.service) == 3
    age = sample("mc_outbox_oldest_unpublished_age_seconds", service=outbox.service)
    assert 600 <= age < 660
