"""The product service's event consumers: what it does when other services' events arrive."""

from __future__ import annotations

from collections.abc import Sequence

from common.consumer import IncomingEvent, PoisonEvent, Subscription, event_data
from common.descriptors import event_type
from common.inbox import Delivery
from common.topics import Topic
from microcommerce.payment.v1 import events_pb2
from product_svc.service import Catalog

ORDER_FAILED = event_type(events_pb2.OrderFailed)
ORDER_CANCELLED = event_type(events_pb2.OrderCancelled)
ORDER_CONFIRMED = event_type(events_pb2.OrderConfirmed)


def subscriptions(catalog: Catalog) -> list[Subscription]:
    """Every consumer of the product service."""

    async def release_ended_order(event: IncomingEvent, delivery: Delivery) -> None:
        message = (
            event_data(event, events_pb2.OrderFailed())
            if event.type == ORDER_FAILED
            else event_data(event, events_pb2.OrderCancelled())
        )
        if not message.order_id:
            raise PoisonEvent(f"{event.type} without an order_id")
        await catalog.release_for_ended_order(message.order_id, delivery)

    async def count_confirmed_order(event: IncomingEvent, delivery: Delivery) -> None:
        order_id, product_ids = _confirmed_order(event)
        await catalog.count_confirmed_order(order_id, product_ids, delivery)

    async def count_confirmed_orders(
        events: Sequence[tuple[IncomingEvent, Delivery]],
    ) -> list[bool]:
        # A poison event fails the whole batch here; the consumer then finds it one by one.
        orders = [(*_confirmed_order(event), delivery) for event, delivery in events]
        return await catalog.count_confirmed_orders(orders)

    return [
        # The safety net behind the checkout saga and the expiry sweeper: an order that ended
        # failed or cancelled must not keep stock held.
        Subscription(
            "release-ended-orders",
            Topic.ORDER_EVENTS,
            frozenset({ORDER_FAILED, ORDER_CANCELLED}),
            release_ended_order,
        ),
        # "Bought together" recommendations learn from what was actually paid for.
        Subscription(
            "count-co-purchases",
            Topic.ORDER_EVENTS,
            frozenset({ORDER_CONFIRMED}),
            count_confirmed_order,
            count_confirmed_orders,  # a burst of orders: one transaction
        ),
    ]


def _confirmed_order(event: IncomingEvent) -> tuple[str, list[str]]:
    message = event_data(event, events_pb2.OrderConfirmed())
    if not message.order_id:
        raise PoisonEvent(f"{event.type} without an order_id")
    product_ids = [item.product_id for item in message.items]
    if not all(product_ids):
        raise PoisonEvent(f"{event.type} with an item without a product_id")
    return message.order_id, product_ids
