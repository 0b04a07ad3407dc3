"""Domain objects as the event messages of payment/v1/events.proto, ready for the outbox.

Every event, order or payment, is keyed by the order id: one order's events then share a
partition and stay in order for consumers. No event carries more of a card than CardSummary.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.outbox import OutgoingEvent
from common.proto_values import money_message
from common.topics import Topic
from microcommerce.payment.v1 import events_pb2, order_service_pb2
from payment_svc.domain import Order, OrderStatus, Payment, Refund

ORDER_EVENTS = Topic.ORDER_EVENTS
PAYMENT_EVENTS = Topic.PAYMENT_EVENTS


def card_summary(payment: Payment) -> order_service_pb2.CardSummary:
    return order_service_pb2.CardSummary(brand=payment.card_brand.value, last4=payment.card_last4)


def order_items(order: Order) -> list[order_service_pb2.OrderItem]:
    return [
        order_service_pb2.OrderItem(
            product_id=line.product_id,
            sku=line.sku,
            name=line.name,
            quantity=line.quantity,
            unit_price=money_message(line.unit_price),
        )
        for line in order.lines
    ]


def _order_event(kind: str, order: Order, data: object) -> OutgoingEvent:
    return OutgoingEvent(ORDER_EVENTS, f"microcommerce.order.{kind}", order.id, data)  # type: ignore[arg-type]


def _payment_event(kind: str, order: Order, data: object) -> OutgoingEvent:
    return OutgoingEvent(PAYMENT_EVENTS, f"microcommerce.payment.{kind}", order.id, data)  # type: ignore[arg-type]


def order_placed(order: Order) -> OutgoingEvent:
    data = events_pb2.OrderPlaced(
        order_id=order.id,
        user_id=order.user_id,
        items=order_items(order),
        total=money_message(order.total),
    )
    return _order_event("placed", order, data)


def order_confirmed(order: Order, payment: Payment) -> OutgoingEvent:
    data = events_pb2.OrderConfirmed(
        order_id=order.id,
        user_id=order.user_id,
        payment_id=payment.id,
        total=money_message(order.total),
    )
    return _order_event("confirmed", order, data)


def order_failed(order: Order, reason: str) -> OutgoingEvent:
    data = events_pb2.OrderFailed(order_id=order.id, user_id=order.user_id, reason=reason)
    return _order_event("failed", order, data)


def order_cancelled(order: Order, refund: Refund) -> OutgoingEvent:
    data = events_pb2.OrderCancelled(
        order_id=order.id,
        user_id=order.user_id,
        cancelled_by=refund.requested_by,
        refunded_amount=money_message(refund.amount),
    )
    return _order_event("cancelled", order, data)


def order_refunded(order: Order, payment: Payment, refund: Refund) -> OutgoingEvent:
    data = events_pb2.OrderRefunded(
        order_id=order.id,
        user_id=order.user_id,
        refund_id=refund.id,
        amount=money_message(refund.amount),
        total_refunded=money_message(payment.refunded_so_far),
        fully_refunded=payment.refunded_so_far.amount >= payment.amount.amount,
    )
    return _order_event("refunded", order, data)


def payment_authorized(order: Order, payment: Payment) -> OutgoingEvent:
    data = events_pb2.PaymentAuthorized(
        payment_id=payment.id,
        order_id=order.id,
        amount=money_message(order.total),
        card=card_summary(payment),
    )
    return _payment_event("authorized", order, data)


def payment_captured(order: Order, payment: Payment) -> OutgoingEvent:
    data = events_pb2.PaymentCaptured(
        payment_id=payment.id, order_id=order.id, amount=money_message(order.total)
    )
    return _payment_event("captured", order, data)


def payment_failed(order: Order, payment: Payment, reason: str, retryable: bool) -> OutgoingEvent:
    data = events_pb2.PaymentFailed(
        payment_id=payment.id,
        order_id=order.id,
        amount=money_message(order.total),
        reason=order_service_pb2.PaymentFailureReason.Value(f"PAYMENT_FAILURE_REASON_{reason}"),
        retryable=retryable,
    )
    return _payment_event("failed", order, data)


def payment_voided(order: Order, payment: Payment) -> OutgoingEvent:
    data = events_pb2.PaymentVoided(
        payment_id=payment.id, order_id=order.id, amount=money_message(order.total)
    )
    return _payment_event("voided", order, data)


def payment_refunded(order: Order, payment: Payment, refund: Refund) -> OutgoingEvent:
    data = events_pb2.PaymentRefunded(
        payment_id=payment.id,
        order_id=order.id,
        refund_id=refund.id,
        amount=money_message(refund.amount),
        total_refunded=money_message(payment.refunded_so_far),
    )
    return _payment_event("refunded", order, data)


def refund_events(order: Order, refund: Refund) -> Sequence[OutgoingEvent]:
    """A settled refund: the payment refunded, and the order cancelled or refunded."""
    payment = order.payment
    assert payment is not None
    if order.status is OrderStatus.CANCELLED:
        return [
            payment_refunded(order, payment, refund),
            order_cancelled(order, refund),
        ]
    return [
        payment_refunded(order, payment, refund),
        order_refunded(order, payment, refund),
    ]


def personal_data_erased(user_id: str, orders: int, payments: int) -> OutgoingEvent:
    # Keyed by the user: the erasure is about all of their orders at once.
    data = events_pb2.PersonalDataErased(user_id=user_id, orders=orders, payments=payments)
    return OutgoingEvent(
        PAYMENT_EVENTS, "microcommerce.payment.personal_data_erased", user_id, data
    )
