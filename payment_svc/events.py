"""The payment service's event consumers: what it does when other services' events arrive."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from common.clock import parse_rfc3339
from common.consumer import IncomingEvent, PoisonEvent, Subscription, event_data
from common.descriptors import event_type
from common.inbox import Delivery
from common.topics import Topic
from microcommerce.user.v1 import events_pb2
from payment_svc.analytics.facts import ORDER_TYPES, PAYMENT_TYPES, BadEvent
from payment_svc.analytics.service import (
    ORDERS_CONSUMER,
    PAYMENTS_CONSUMER,
    DeliveredEvent,
    SalesAnalytics,
)
from payment_svc.service import Payments

USER_DELETED = event_type(events_pb2.UserDeleted)


def subscriptions(payments: Payments, analytics: SalesAnalytics) -> list[Subscription]:
    """Every consumer of the payment service."""

    async def erase_deleted_user(event: IncomingEvent, delivery: Delivery) -> None:
        message = event_data(event, events_pb2.UserDeleted())
        if not message.user_id:
            raise PoisonEvent(f"{event.type} without a user_id")
        await payments.erase_user(message.user_id, delivery)

    return [
        # A deleted account's personal data goes from its orders and payments too.
        Subscription(
            "erase-deleted-users", Topic.USER_EVENTS, frozenset({USER_DELETED}), erase_deleted_user
        ),
        *sales_subscriptions(analytics),
    ]


def sales_subscriptions(analytics: SalesAnalytics) -> list[Subscription]:
    """The sales read model's consumers (payment_svc.analytics)."""

    async def fold_sales(event: IncomingEvent, delivery: Delivery) -> None:
        try:
            await analytics.apply(event.type, event.data, _event_time(event), delivery)
        except BadEvent as error:
            raise PoisonEvent(f"{event.type}: {error}") from None

    async def fold_sales_batch(events: Sequence[tuple[IncomingEvent, Delivery]]) -> list[bool]:
        # A poison event fails the whole batch here; the consumer then finds it one by one.
        delivered = [
            DeliveredEvent(event.type, event.data, _event_time(event), delivery)
            for event, delivery in events
        ]
        try:
            return await analytics.apply_batch(delivered)
        except BadEvent as error:
            raise PoisonEvent(str(error)) from None

    # Orders from one topic, refunds from the other: the two consumers apply their increments
    # independently, in whatever order the topics deliver. A burst of events costs one
    # transaction per batch (common.consumer), not one per event.
    return [
        Subscription(
            ORDERS_CONSUMER, Topic.ORDER_EVENTS, ORDER_TYPES, fold_sales, fold_sales_batch
        ),
        Subscription(
            PAYMENTS_CONSUMER, Topic.PAYMENT_EVENTS, PAYMENT_TYPES, fold_sales, fold_sales_batch
        ),
    ]


def _event_time(event: IncomingEvent) -> datetime:
    try:
        return parse_rfc3339(event.time)
    except ValueError:
        raise PoisonEvent(f"{event.type} without a valid time: {event.time!r}") from None
