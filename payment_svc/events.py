"""The payment service's event consumers: what it does when other services' events arrive."""

from __future__ import annotations

from common.consumer import IncomingEvent, PoisonEvent, Subscription, event_data
from common.inbox import Delivery
from common.topics import Topic
from microcommerce.user.v1 import events_pb2
from payment_svc.service import Payments

USER_DELETED = "microcommerce.user.deleted"


def subscriptions(payments: Payments) -> list[Subscription]:
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
    ]
