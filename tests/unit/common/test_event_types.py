"""Consumers name the event types they take from the same proto option producers publish by."""

from __future__ import annotations

import pytest

from common.descriptors import event_type
from microcommerce.common.v1 import annotations_pb2
from microcommerce.payment.v1 import events_pb2 as payment_events
from microcommerce.payment.v1 import order_service_pb2
from microcommerce.user.v1 import events_pb2 as user_events
from payment_svc import events as payment_consumers
from payment_svc.analytics import facts
from product_svc import events as product_consumers


def test_a_message_without_the_event_option_has_no_event_type() -> None:
    with pytest.raises(ValueError, match="declares no event option"):
        event_type(order_service_pb2.Order)


def test_the_types_consumers_wait_for_are_the_types_producers_publish() -> None:
    published = {
        message.DESCRIPTOR.GetOptions().Extensions[annotations_pb2.event].type
        for message in (
            payment_events.OrderPlaced,
            payment_events.OrderConfirmed,
            payment_events.OrderFailed,
            payment_events.OrderCancelled,
            payment_events.PaymentRefunded,
            user_events.UserDeleted,
        )
    }
    consumed = {
        *facts.ORDER_TYPES,
        *facts.PAYMENT_TYPES,
        product_consumers.ORDER_FAILED,
        product_consumers.ORDER_CANCELLED,
        product_consumers.ORDER_CONFIRMED,
        payment_consumers.USER_DELETED,
    }
    assert consumed == published
