"""The sales read model on SQLite and PostgreSQL: its figures are the orders table's, whatever
the order, duplication or concurrency of the events, and a rebuild gives them again."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select

from common.consumer import EventConsumer, EventConsumers
from common.db import Database
from common.dead_letters import ConsumedRecord, dead_letter_table
from common.errors import FailedPrecondition, InvalidArgument
from common.metrics import REGISTRY
from common.money import Money
from common.outbox import outbox_table
from common.topics import Topic
from localrun.broker import EmbeddedBroker
from payment_svc.analytics.__main__ import rebuild as rebuild_command
from payment_svc.analytics.facts import FOLDED_TYPES, PAYMENT_TYPES
from payment_svc.analytics.service import (
    ORDERS_CONSUMER,
    PAYMENTS_CONSUMER,
    Granularity,
    SalesAnalytics,
)
from payment_svc.domain import Caller, OrderStatus, RequestedItem
from payment_svc.service import Payments
from payment_svc.store import order_items, orders, refunds
from tests.integration.payment.test_payment_checkout import DECLINED, checkout, new_user
from tests.support.consumer_probe import produce, start_consumers
from tests.support.payment_fakes import FakeInventory
from tests.support.processes import wait_for

ADMIN = Caller("admin-analytics", is_admin=True)
# Every status of an order that was confirmed once (the script cancels only confirmed orders).
WAS_CONFIRMED = [
    OrderStatus.CONFIRMED,
    OrderStatus.CANCELLED,
    OrderStatus.REFUNDED,
    OrderStatus.PARTIALLY_REFUNDED,
]


@dataclass(frozen=True)
class Figures:
    """Totals over a range, in plain values so two ways of computing them compare."""

    placed: int
    confirmed: int
    cancelled: int
    failed: dict[str, int]
    revenue: dict[str, int]
    refunds: dict[str, int]
    products: dict[str, tuple[int, dict[str, int]]]


def consumer(consumers: EventConsumers, name: str) -> EventConsumer:
    [found] = [c for c in consumers.consumers if c.name == name]
    return found


async def scripted_day(payments: Payments, inventory: FakeInventory) -> list[str]:
    """Orders in two currencies, declines, a cancel, partial and full refunds; the order ids."""
    mug, poster, tea = (f"p-{uuid.uuid4().hex[:8]}" for _ in range(3))
    inventory.add_product(mug, 50, 1250)
    inventory.add_product(poster, 50, 800)
    inventory.add_product(tea, 50, 500, "EUR")
    ids = []
    for items in ([(mug, 2)], [(mug, 1), (poster, 3)], [(poster, 1)], [(tea, 4)], [(tea, 1)]):
        order = await checkout(payments, new_user(), [RequestedItem(p, q) for p, q in items])
        ids.append(order.id)
    for items in ([(mug, 1)], [(tea, 2)]):
        owner = new_user()
        with pytest.raises(FailedPrecondition):
            await checkout(payments, owner, [RequestedItem(p, q) for p, q in items], DECLINED)
        [declined], _ = await payments.list_orders(owner, "", 1, "")
        ids.append(declined.id)
    cancelled = await checkout(payments, (owner := new_user()), [RequestedItem(poster, 2)])
    await payments.cancel(owner, cancelled.id)
    ids.append(cancelled.id)
    await payments.refund(ADMIN, ids[0], Money(300, "USD"), "chipped")
    await payments.refund(ADMIN, ids[0], Money(200, "USD"), "chipped again")
    await payments.refund(ADMIN, ids[3], None, "never arrived")
    return ids


async def published(database: Database, order_ids: Sequence[str] | None) -> list[ConsumedRecord]:
    """The folded events the outbox holds (of these orders), as the relay would publish them."""
    table = outbox_table("payment")
    query = select(table).order_by(table.c.seq)
    if order_ids is not None:
        query = query.where(table.c.key.in_(order_ids))
    async with database.session() as session:
        rows = (await session.execute(query)).all()
    records = []
    for offset, row in enumerate(rows):
        if json.loads(row.payload)["type"] in FOLDED_TYPES:
            records.append(
                ConsumedRecord(row.topic, 0, offset, row.key.encode(), row.payload.encode(), {})
            )
    return records


async def deliver(consumers: EventConsumers, records: Sequence[ConsumedRecord]) -> list[str]:
    outcomes = []
    for record in records:
        name = PAYMENTS_CONSUMER if _type(record) in PAYMENT_TYPES else ORDERS_CONSUMER
        outcomes.append(await consumer(consumers, name).process(record))
    return outcomes


async def deliver_in_batches(
    consumers: EventConsumers, records: Sequence[ConsumedRecord]
) -> list[str]:
    """Each consumer handed its records as one batch, as its agent takes a burst."""
    outcomes = []
    for name in (ORDERS_CONSUMER, PAYMENTS_CONSUMER):
        mine = [r for r in records if (_type(r) in PAYMENT_TYPES) == (name == PAYMENTS_CONSUMER)]
        outcomes += await consumer(consumers, name).process_batch(mine)
    return outcomes


def transactions(database: Database) -> float:
    """Units of work committed on ``database`` so far."""
    labels = {"database": database.name, "outcome": "ok"}
    return REGISTRY.get_sample_value("mc_db_unit_of_work_seconds_count", labels) or 0.0


def _type(record: ConsumedRecord) -> str:
    return str(json.loads(record.value)["type"])


def around_now() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(days=2), now + timedelta(days=2)


async def figures(analytics: SalesAnalytics, granularity: Granularity = Granularity.DAY) -> Figures:
    start, end = around_now()
    sales = await analytics.sales(start, end, granularity)
    top = await analytics.top_products(start, end, 100)
    failed: Counter[str] = Counter()
    revenue: Counter[str] = Counter()
    refunded: Counter[str] = Counter()
    for period in sales.periods:
        failed.update(period.failed)
        revenue.update(period.revenue)
        refunded.update(period.refunds)
    return Figures(
        placed=sum(p.placed for p in sales.periods),
        confirmed=sum(p.confirmed for p in sales.periods),
        cancelled=sum(p.cancelled for p in sales.periods),
        failed=dict(failed),
        revenue=dict(revenue),
        refunds=dict(refunded),
        products={p.product_id: (p.units, p.revenue) for p in top.products},
    )


async def from_orders_table(database: Database, order_ids: Sequence[str]) -> Figures:
    """The same figures, computed straight from the orders, their lines and refunds."""
    async with database.session() as session:
        rows = (await session.execute(select(orders).where(orders.c.id.in_(order_ids)))).all()
        lines = (
            await session.execute(
                select(order_items, orders.c.status)
                .join(orders, orders.c.id == order_items.c.order_id)
                .where(orders.c.id.in_(order_ids))
            )
        ).all()
        money_back = (
            await session.execute(
                select(refunds).where(
                    refunds.c.order_id.in_(order_ids), refunds.c.status == "SUCCEEDED"
                )
            )
        ).all()
    confirmed = [row for row in rows if row.status in WAS_CONFIRMED]
    revenue: Counter[str] = Counter()
    for row in confirmed:
        revenue[row.currency] += row.total_amount
    refunded: Counter[str] = Counter()
    for refund in money_back:
        refunded[refund.currency] += refund.amount
    units: Counter[str] = Counter()
    product_revenue: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for line in lines:
        if line.status in WAS_CONFIRMED:
            units[line.product_id] += line.quantity
            product_revenue[line.product_id][line.currency] += line.unit_amount * line.quantity
    return Figures(
        placed=len(rows),
        confirmed=len(confirmed),
        cancelled=sum(row.status == OrderStatus.CANCELLED for row in rows),
        failed=dict(Counter(row.failure_reason for row in rows if row.status == "FAILED")),
        revenue=dict(revenue),
        refunds=dict(refunded),
        products={p: (units[p], dict(product_revenue[p])) for p in units},
    )


async def test_a_days_figures_are_the_orders_tables(
    payments: Payments,
    inventory: FakeInventory,
    payment_db: Database,
    analytics: SalesAnalytics,
    consumers: EventConsumers,
) -> None:
    ids = await scripted_day(payments, inventory)

    outcomes = await deliver(consumers, await published(payment_db, ids))

    assert set(outcomes) == {"handled"}
    expected = await from_orders_table(payment_db, ids)
    assert await figures(analytics) == expected
    assert await figures(analytics, Granularity.HOUR) == expected
    assert expected.placed == 8
    assert expected.failed == {"CARD_DECLINED": 2}
    assert expected.refunds == {"USD": 500 + 1600, "EUR": 2000}
    # The ranking: most units first, ties by product id.
    top = (await analytics.top_products(*around_now(), 2)).products
    assert [p.units for p in top] == sorted((u for u, _ in expected.products.values()))[::-1][:2]


async def test_duplicates_and_any_order_across_topics_change_nothing(
    payments: Payments,
    inventory: FakeInventory,
    payment_db: Database,
    analytics: SalesAnalytics,
    consumers: EventConsumers,
) -> None:
    ids = await scripted_day(payments, inventory)
    records = await published(payment_db, ids)
    order_events = [r for r in records if _type(r) not in PAYMENT_TYPES]
    payment_events = [r for r in records if _type(r) in PAYMENT_TYPES]
    shuffled = order_events * 2
    random.Random(14).shuffle(shuffled)  # confirmations before placements, each one twice

    # Two partitions' consumers at once; every refund is applied before any confirmation.
    await deliver(consumers, payment_events)
    outcomes = await asyncio.gather(
        deliver(consumers, shuffled), deliver(consumers, list(reversed(payment_events)))
    )

    assert Counter(outcomes[0]) == {"handled": len(order_events), "duplicate": len(order_events)}
    assert set(outcomes[1]) == {"duplicate"}
    assert await figures(analytics) == await from_orders_table(payment_db, ids)


async def test_a_rebuild_from_the_stored_changes_gives_the_same_figures_once(
    payments: Payments,
    inventory: FakeInventory,
    payment_db: Database,
    analytics: SalesAnalytics,
    consumers: EventConsumers,
) -> None:
    ids = await scripted_day(payments, inventory)
    # Every event of the database: the rebuild reads all of them too.
    everything = await published(payment_db, None)
    await deliver(consumers, everything[: len(everything) // 2])
    half = await figures(analytics, Granularity.HOUR)
    await deliver(consumers, everything[len(everything) // 2 :])
    live = await figures(analytics, Granularity.HOUR)
    live_as_of = (await analytics.sales(*around_now(), Granularity.DAY)).as_of

    assert await analytics.rebuild() == len(everything)
    assert await figures(analytics, Granularity.HOUR) == live != half
    rebuilt_as_of = (await analytics.sales(*around_now(), Granularity.DAY)).as_of
    assert live_as_of is not None
    assert rebuilt_as_of is not None
    # The envelope keeps milliseconds, the stored change microseconds.
    assert abs(rebuilt_as_of - live_as_of) < timedelta(milliseconds=1)
    # Delivered again after the rebuild, the events are known: nothing counts twice.
    assert set(await deliver(consumers, everything)) == {"duplicate"}
    assert await figures(analytics, Granularity.HOUR) == live
    # Rebuilt again, with every event already in the inbox: the same figures.
    assert await analytics.rebuild() == len(everything)
    assert await figures(analytics, Granularity.HOUR) == live
    if len(everything) == len(await published(payment_db, ids)):  # SQLite: only this test's
        assert live == await from_orders_table(payment_db, ids)


async def test_an_event_that_cannot_be_folded_is_dead_lettered_and_others_go_on(
    payments: Payments,
    inventory: FakeInventory,
    payment_db: Database,
    analytics: SalesAnalytics,
    consumers: EventConsumers,
) -> None:
    ids = await scripted_day(payments, inventory)
    records = await published(payment_db, ids)
    poison, envelope = _placed_without_its_order(records[0])

    assert await deliver(consumers, [poison, *records]) == ["dead_lettered"] + ["handled"] * len(
        records
    )
    letters, _ = await consumers.admin.list(100, "", None)
    [letter] = [letter for letter in letters if letter.event_id == envelope["id"]]
    assert letter.consumer == ORDERS_CONSUMER
    assert "no order_id" in letter.error
    assert await figures(analytics) == await from_orders_table(payment_db, ids)
    # PostgreSQL is shared by the session: other tests count the dead letters they expect.
    letters_table = dead_letter_table("payment")
    async with payment_db.session() as session:
        await session.execute(delete(letters_table).where(letters_table.c.id == letter.id))


async def test_a_batch_is_applied_once_in_one_transaction_per_consumer(
    payments: Payments,
    inventory: FakeInventory,
    payment_db: Database,
    analytics: SalesAnalytics,
    consumers: EventConsumers,
) -> None:
    ids = await scripted_day(payments, inventory)
    records = await published(payment_db, ids)
    before = transactions(payment_db)

    outcomes = await deliver_in_batches(consumers, records)

    assert outcomes == ["handled"] * len(records)
    assert transactions(payment_db) - before == 2  # the orders' batch and the refunds'
    assert await figures(analytics) == await from_orders_table(payment_db, ids)


async def test_a_redelivered_batch_changes_nothing(
    payments: Payments,
    inventory: FakeInventory,
    payment_db: Database,
    analytics: SalesAnalytics,
    consumers: EventConsumers,
) -> None:
    ids = await scripted_day(payments, inventory)
    records = await published(payment_db, ids)
    half = records[: len(records) // 2]
    await deliver(consumers, half[:3])  # some of it was handled one by one before
    # The first half again, with the rest: a consumer that died before committing its offsets.
    first = await deliver_in_batches(consumers, [*half, *records])
    again = await deliver_in_batches(consumers, records)

    assert Counter(first) == {"handled": len(records) - 3, "duplicate": len(half) + 3}
    assert set(again) == {"duplicate"}
    assert await figures(analytics) == await from_orders_table(payment_db, ids)


async def test_a_poison_event_in_a_batch_is_dead_lettered_alone_and_the_rest_apply(
    payments: Payments,
    inventory: FakeInventory,
    payment_db: Database,
    analytics: SalesAnalytics,
    consumers: EventConsumers,
) -> None:
    ids = await scripted_day(payments, inventory)
    records = await published(payment_db, ids)
    poison, envelope = _placed_without_its_order(records[0])
    garbage = ConsumedRecord("order-events", 0, 1, b"k", b"not an event", {})
    middle = len(records) // 2
    batch = [*records[:middle], poison, garbage, *records[middle:]]
    letters_before = await dead_letter_ids(payment_db)

    outcomes = await consumer(consumers, ORDERS_CONSUMER).process_batch(batch)

    # The refunds are not this consumer's: its topic would not carry them.
    expected = [
        "dead_lettered"
        if r in (poison, garbage)
        else "skipped"
        if _type_or(r) in PAYMENT_TYPES
        else "handled"
        for r in batch
    ]
    assert outcomes == expected
    letters, _ = await consumers.admin.list(100, "", None)
    new = [letter for letter in letters if letter.id not in letters_before]
    assert sorted(letter.record.offset for letter in new) == [0, 1]
    assert [letter.event_id for letter in new if letter.record.offset == 0] == [envelope["id"]]
    await deliver(consumers, [r for r in records if _type(r) in PAYMENT_TYPES])
    assert await figures(analytics) == await from_orders_table(payment_db, ids)
    letters_table = dead_letter_table("payment")
    async with payment_db.session() as session:
        await session.execute(
            delete(letters_table).where(letters_table.c.id.in_([letter.id for letter in new]))
        )


async def dead_letter_ids(database: Database) -> set[str]:
    table = dead_letter_table("payment")
    async with database.session() as session:
        return set((await session.scalars(select(table.c.id))).all())


def _type_or(record: ConsumedRecord) -> str:
    try:
        return _type(record)
    except ValueError:
        return ""


async def test_ranges_are_rounded_bounded_and_filled(analytics: SalesAnalytics) -> None:
    start = datetime(2026, 1, 1, 10, 30, tzinfo=UTC)
    with pytest.raises(InvalidArgument):
        await analytics.sales(start, start - timedelta(hours=1), Granularity.HOUR)
    with pytest.raises(InvalidArgument):
        await analytics.sales(start, start + timedelta(days=31), Granularity.HOUR)
    with pytest.raises(InvalidArgument):
        await analytics.sales(start, start + timedelta(days=366), Granularity.DAY)
    days = await analytics.sales(start, start + timedelta(days=31), Granularity.DAY)
    assert days.periods[0].start == datetime(2026, 1, 1, tzinfo=UTC)
    assert days.periods[-1].start == datetime(2026, 2, 1, tzinfo=UTC)
    hours = await analytics.sales(start, start + timedelta(hours=3), Granularity.HOUR)
    assert [p.start.hour for p in hours.periods] == [10, 11, 12, 13]
    assert all(p.placed == 0 and not p.revenue for p in hours.periods)
    assert hours.as_of is None


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker.start()
    yield broker
    broker.stop()


async def test_the_consumers_fold_what_the_broker_delivers(
    payments: Payments,
    inventory: FakeInventory,
    payment_db: Database,
    analytics: SalesAnalytics,
    consumers: EventConsumers,
    own_broker: EmbeddedBroker,
) -> None:
    ids = await scripted_day(payments, inventory)
    records = await published(payment_db, ids)
    expected = await from_orders_table(payment_db, ids)
    stream = start_consumers(consumers, own_broker.bootstrap, f"payment-{uuid.uuid4().hex}")
    try:
        for topic in {r.topic for r in records}:
            batch = [(r.key.decode(), r.value) for r in records if r.topic == topic and r.key]
            # Each event twice: the relay's at-least-once delivery.
            topic_of = next(t for t in Topic if t.value == topic)
            await produce(own_broker.bootstrap, batch * 2, topic=topic_of)

        async def caught_up() -> Figures | None:
            now = await figures(analytics)
            return now if now == expected else None

        await wait_for(caught_up, within=60)
    finally:
        await stream.stop()


async def test_the_rebuild_command_replays_the_database_it_is_pointed_at(
    payments: Payments,
    inventory: FakeInventory,
    payment_db: Database,
    analytics: SalesAnalytics,
    db_url: str,
) -> None:
    ids = await scripted_day(payments, inventory)

    # What `make analytics-rebuild` runs, on its own engine (migrating first is a no-op here).
    folded = await rebuild_command(db_url)

    assert folded == len(await published(payment_db, None))
    if folded == len(await published(payment_db, ids)):  # SQLite: only this test's events
        assert await figures(analytics) == await from_orders_table(payment_db, ids)
    else:
        assert (await figures(analytics)).placed >= 8


def _placed_without_its_order(
    placed: ConsumedRecord,
) -> tuple[ConsumedRecord, dict[str, Any]]:
    """A copy of an order.placed record, under a new event id, with its order missing."""
    envelope = json.loads(placed.value)
    envelope["id"] = str(uuid.uuid4())
    envelope["data"] = {"user_id": "u"}
    poison = ConsumedRecord("order-events", 0, 0, b"k", json.dumps(envelope).encode(), {})
    return poison, envelope
