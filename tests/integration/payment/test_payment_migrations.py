"""Migration 0006 starts each existing order's audit trail from what the database still holds."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from common.db import Database
from common.migrations import alembic_config, script_location_of
from common.outbox import Outbox
from payment_svc.store import PaymentStore, placement_id
from tests.support.schemas import empty_database

PLACED_AT = datetime(2026, 11, 30, 9, 0, 0, 123456, tzinfo=UTC)
SENT_AT = datetime(2026, 11, 30, 9, 0, 1, tzinfo=UTC)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    async with empty_database(db_url, "mig") as engine:
        yield engine


async def migrate(engine: AsyncEngine, revision: str, *, down: bool = False) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config(script_location_of("payment"))
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(run)


def envelope(event_id: str, event_type: str, data: Mapping[str, object]) -> str:
    return json.dumps({"id": event_id, "type": event_type, "subject": "o1", "data": data})


async def test_existing_orders_get_their_placement_and_the_events_the_outbox_kept(
    engine: AsyncEngine,
) -> None:
    await migrate(engine, "0005")
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO payment_orders (id, user_id, status, create_time, update_time)"
                " VALUES ('o1', 'u1', 'FAILED', :t, :t)"
            ),
            {"t": PLACED_AT},
        )
        for seq, (event_id, event_type, data) in enumerate(
            [
                ("e1", "microcommerce.order.placed", {"order_id": "o1"}),
                ("e2", "microcommerce.inventory.reserved", {}),  # not an order's event
                ("e3", "microcommerce.order.failed", {"order_id": "o1", "reason": "OUT"}),
            ],
            start=1,
        ):
            await connection.execute(
                text(
                    "INSERT INTO payment_outbox (seq, event_id, topic, key, payload, created_at)"
                    " VALUES (:seq, :id, 'order-events', 'o1', :payload, :t)"
                ),
                {
                    "seq": seq,
                    "id": event_id,
                    "payload": envelope(event_id, event_type, data),
                    "t": SENT_AT,
                },
            )

    await migrate(engine, "head")

    store = PaymentStore(Database(engine), Outbox("payment"))
    async with store.reading() as uow:
        trail = await uow.order_trail("o1", 0, 10)
    assert [(entry.id, entry.type) for entry in trail] == [
        (placement_id("o1"), ""),
        ("e1", "microcommerce.order.placed"),
        ("e3", "microcommerce.order.failed"),
    ]
    assert trail[0].time == PLACED_AT
    assert trail[2].data == {"order_id": "o1", "reason": "OUT"}

    await migrate(engine, "0005", down=True)
    async with engine.connect() as connection:
        tables = await connection.run_sync(
            lambda sync: sync.dialect.get_table_names(sync, schema=None)
        )
    assert "payment_order_changes" not in tables


async def test_orders_placed_before_fraud_screening_read_back_unscreened(
    engine: AsyncEngine,
) -> None:
    await migrate(engine, "0008")
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO payment_orders (id, user_id, status, create_time, update_time)"
                " VALUES ('o1', 'u1', 'FAILED', :t, :t)"
            ),
            {"t": PLACED_AT},
        )

    await migrate(engine, "head")

    store = PaymentStore(Database(engine), Outbox("payment"))
    async with store.reading() as uow:
        order = await uow.order("o1")
    assert order is not None
    assert order.screening is None  # never screened, and none is invented

    await migrate(engine, "0008", down=True)
    async with engine.connect() as connection:
        tables = await connection.run_sync(
            lambda sync: sync.dialect.get_table_names(sync, schema=None)
        )
        columns = await connection.run_sync(
            lambda sync: {c["name"] for c in sync.dialect.get_columns(sync, "payment_orders")}
        )
    assert "payment_checkout_attempts" not in tables
    assert "screening_decision" not in columns
