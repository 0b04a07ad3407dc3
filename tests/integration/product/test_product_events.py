"""product_svc consumes order-events: an order that ended failed or cancelled holds no stock."""

from __future__ import annotations

import uuid

from common.consumer import EventConsumers
from common.db import Database
from common.money import Money
from common.outbox import Outbox, OutgoingEvent
from common.topics import Topic
from localrun.broker import EmbeddedBroker
from microcommerce.payment.v1 import events_pb2
from product_svc.domain import ReservationStatus
from product_svc.service import Catalog
from product_svc.store import CatalogStore
from tests.support.consumer_probe import encoded, produce
from tests.support.processes import wait_for

WITHIN_S = 30.0


def order_event(kind: str, order_id: str) -> OutgoingEvent:
    data: object
    if kind == "failed":
        data = events_pb2.OrderFailed(order_id=order_id, user_id="u1", reason="PAYMENT_DECLINED")
    elif kind == "cancelled":
        data = events_pb2.OrderCancelled(order_id=order_id, user_id="u1", cancelled_by="u1")
    else:
        data = events_pb2.OrderConfirmed(order_id=order_id, user_id="u1", payment_id="p1")
    return OutgoingEvent(Topic.ORDER_EVENTS, f"microcommerce.order.{kind}", order_id, data)


async def status_of(product_db: Database, order_id: str) -> str | None:
    async with CatalogStore(product_db, Outbox("product")).reading() as unit:
        reservation = await unit.reservation(order_id)
    return None if reservation is None else reservation.status.value


async def test_failed_and_cancelled_orders_give_their_held_stock_back_once(
    catalog: Catalog,
    product_db: Database,
    own_broker: EmbeddedBroker,
    consuming: EventConsumers,
) -> None:
    slug = f"cat-{uuid.uuid4().hex[:12]}"
    category = await catalog.create_category("Mugs", slug, "")
    mug = await catalog.create_product(
        sku=f"SKU-{uuid.uuid4().hex[:12]}",
        name="Mug",
        description="A mug.",
        category_id=category.id,
        price=Money(900, "USD"),
        stock=10,
        low_stock_threshold=None,
        actor="admin",
    )
    failed, cancelled, released, confirmed, never_reserved = (
        f"order-{uuid.uuid4().hex}" for _ in range(5)
    )
    for order_id in (failed, cancelled, released, confirmed):
        await catalog.reserve(order_id, [(mug.id, 1)])
    await catalog.release(released)  # the saga compensated before its event went out
    assert (await catalog.get_product(mug.id)).available == 7

    failed_event = encoded(order_event("failed", failed))
    await produce(
        own_broker.bootstrap,
        [
            failed_event,
            failed_event,  # delivered twice
            encoded(order_event("cancelled", cancelled)),
            encoded(order_event("failed", released)),
            encoded(order_event("confirmed", confirmed)),
            encoded(order_event("failed", never_reserved)),
        ],
        topic=Topic.ORDER_EVENTS,
    )

    async def all_settled() -> bool:
        statuses = [
            await status_of(product_db, order_id)
            for order_id in (failed, cancelled, never_reserved)
        ]
        return statuses == ["RELEASED"] * 3

    await wait_for(all_settled, within=WITHIN_S)
    product = await catalog.get_product(mug.id)
    # Three released (one by the saga, two by the consumer), one still held for the order
    # that is confirmed; the duplicate gave nothing back twice.
    assert (product.available, product.reserved) == (9, 1)
    assert await status_of(product_db, confirmed) == ReservationStatus.ACTIVE.value
    letters, _ = await consuming.admin.list(None, "", None)
    assert letters == []


async def test_an_order_event_without_an_order_id_is_dead_lettered(
    own_broker: EmbeddedBroker, consuming: EventConsumers
) -> None:
    await produce(
        own_broker.bootstrap, [encoded(order_event("failed", ""))], topic=Topic.ORDER_EVENTS
    )

    async def dead_lettered() -> list[str] | None:
        letters, _ = await consuming.admin.list(None, "", None)
        return [letter.error for letter in letters] or None

    errors = await wait_for(dead_lettered, within=WITHIN_S)
    assert errors == ["PoisonEvent: microcommerce.order.failed without an order_id"]
