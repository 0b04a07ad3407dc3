"""payment_svc consumes user-events: a deleted user's personal data goes, the accounts stay."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import select

from common.consumer import EventConsumers, RetryPolicy
from common.db import Database
from common.dead_letters import DeadLetterStore
from common.errors import FailedPrecondition
from common.metrics import REGISTRY
from common.outbox import Outbox, OutgoingEvent, outbox_table
from common.pagination import PageTokens
from common.topics import Topic
from localrun.broker import EmbeddedBroker
from microcommerce.user.v1 import events_pb2
from payment_svc import events
from payment_svc.analytics.service import SalesAnalytics
from payment_svc.analytics.store import AnalyticsStore
from payment_svc.domain import Caller, RequestedItem
from payment_svc.service import Payments
from payment_svc.store import idempotency_keys, orders, payments
from tests.integration.payment.test_payment_checkout import DECLINED, checkout, product
from tests.support.consumer_probe import encoded, produce, start_consumers
from tests.support.payment_fakes import FakeInventory
from tests.support.processes import wait_for

WITHIN_S = 30.0


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    # Its own: the consumer group reads user-events from the start.
    broker = EmbeddedBroker.start()
    yield broker
    broker.stop()


@pytest.fixture
async def consuming(
    payments: Payments, payment_db: Database, own_broker: EmbeddedBroker
) -> AsyncIterator[EventConsumers]:
    consumers = EventConsumers.build(
        DeadLetterStore(payment_db, "payment"),
        events.subscriptions(
            payments, SalesAnalytics(AnalyticsStore(payment_db, Outbox("payment")))
        ),
        RetryPolicy(attempts=2, first_delay_s=0.05),
        PageTokens(b"payment-events-test-key-0123456"),
    )
    stream = start_consumers(consumers, own_broker.bootstrap, f"payment-{uuid.uuid4().hex}")
    yield consumers
    await stream.stop()


def user_deleted(user_id: str) -> OutgoingEvent:
    data = events_pb2.UserDeleted(user_id=user_id)
    return OutgoingEvent(Topic.USER_EVENTS, "microcommerce.user.deleted", user_id, data)


async def payment_rows(database: Database, user_id: str) -> list[dict[str, Any]]:
    query = (
        select(payments, orders.c.status.label("order_status"), orders.c.total_amount)
        .join(orders, orders.c.id == payments.c.order_id)
        .where(orders.c.user_id == user_id)
        .order_by(payments.c.id)
    )
    async with database.session() as session:
        return [dict(row) for row in (await session.execute(query)).mappings()]


async def keys_of(database: Database, user_id: str) -> int:
    async with database.session() as session:
        rows = await session.execute(
            select(idempotency_keys.c.key).where(idempotency_keys.c.user_id == user_id)
        )
        return len(rows.all())


async def erasure_events(database: Database) -> list[dict[str, Any]]:
    table = outbox_table("payment")
    async with database.session() as session:
        rows = await session.scalars(select(table.c.payload).order_by(table.c.seq))
    decoded = [json.loads(payload) for payload in rows]
    return [e for e in decoded if e["type"] == "microcommerce.payment.personal_data_erased"]


async def test_a_deleted_users_card_data_is_erased_once_and_their_accounts_are_kept(
    payments: Payments,
    payment_db: Database,
    inventory: FakeInventory,
    own_broker: EmbeddedBroker,
    consuming: EventConsumers,
) -> None:
    ada, bob = Caller(f"user-{uuid.uuid4().hex[:8]}"), Caller(f"user-{uuid.uuid4().hex[:8]}")
    item = product(inventory)
    await checkout(payments, ada, [RequestedItem(item, 1)])
    with pytest.raises(FailedPrecondition):  # declined: the order and payment stay, FAILED
        await checkout(payments, ada, [RequestedItem(item, 2)], DECLINED)
    await checkout(payments, bob, [RequestedItem(item, 1)])
    before = await payment_rows(payment_db, ada.user_id)
    bobs_before = await payment_rows(payment_db, bob.user_id)
    assert len(before) == 2
    assert all(row["card_token"] for row in before)
    assert {row["card_last4"] for row in before} == {"4242", "0002"}
    assert await keys_of(payment_db, ada.user_id) == 2

    duplicates_before = duplicates()
    deleted = encoded(user_deleted(ada.user_id))
    await produce(own_broker.bootstrap, [deleted, deleted], topic=Topic.USER_EVENTS)

    async def erased_and_redelivered() -> bool:
        return bool(await erasure_events(payment_db)) and duplicates() > duplicates_before

    await wait_for(erased_and_redelivered, within=WITHIN_S)
    after = await payment_rows(payment_db, ada.user_id)
    assert [(row["card_token"], row["card_last4"]) for row in after] == [("", "")] * 2
    kept = (
        "id",
        "status",
        "amount",
        "currency",
        "card_brand",
        "create_time",
        "order_status",
        "total_amount",
    )
    assert [{k: row[k] for k in kept} for row in after] == [
        {k: row[k] for k in kept} for row in before
    ]
    assert await keys_of(payment_db, ada.user_id) == 0
    # Nobody else's data is touched.
    assert await payment_rows(payment_db, bob.user_id) == bobs_before
    assert await keys_of(payment_db, bob.user_id) == 1

    # One erasure however often the deletion arrives, and it says what it did.
    announced = await erasure_events(payment_db)
    assert len(announced) == 1
    assert announced[0]["subject"] == ada.user_id
    assert announced[0]["data"] == {"user_id": ada.user_id, "orders": 2, "payments": 2}
    letters, _ = await consuming.admin.list(None, "", None)
    assert letters == []


def duplicates() -> float:
    value = REGISTRY.get_sample_value(
        "mc_consumer_events_total", {"consumer": "erase-deleted-users", "outcome": "duplicate"}
    )
    return value or 0.0
