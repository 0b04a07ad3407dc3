"""Domain objects as the event messages of payment/v1/events.proto, ready for the outbox.

Every event, order or payment, is keyed by the order id: one order's events then share a
partition and stay in order for consumers. No event carries more of a card than CardSummary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from common.money import Money
from common.outbox import OutgoingEvent
from common.proto_values import money_message
from common.topics import Topic
from microcommerce.payment.v1 import events_pb2, order_service_pb2
from payment_svc.domain import (
    ActorKind,
    ChangeKind,
    Order,
    OrderChange,
    OrderLine,
    OrderStatus,
    Payment,
    Refund,
    actor_of,
)
from payment_svc.screening import Screening

ORDER_EVENTS = Topic.ORDER_EVENTS
PAYMENT_EVENTS = Topic.PAYMENT_EVENTS


def card_summary(payment: Payment) -> order_service_pb2.CardSummary:
    return order_service_pb2.CardSummary(brand=payment.card_brand.value, last4=payment.card_last4)


def order_items(order: Order) -> list[order_service_pb2.OrderItem]:
    return [_order_item(line) for line in order.lines]


def _order_item(line: OrderLine) -> order_service_pb2.OrderItem:
    """A line as the contract shows it: what is not known is absent, never "" or a zero price."""
    item = order_service_pb2.OrderItem(product_id=line.product_id, quantity=line.quantity)
    if line.sku:
        item.sku = line.sku
    if line.name:
        item.name = line.name
    if line.unit_price is not None:
        item.unit_price.CopyFrom(money_message(line.unit_price))
    return item


def screening_message(screening: Screening) -> order_service_pb2.FraudScreening:
    """A screening as administrators and events see it (never a customer)."""
    return order_service_pb2.FraudScreening(
        decision=order_service_pb2.ScreeningDecision.Value(
            f"SCREENING_DECISION_{screening.decision.value}"
        ),
        score=screening.score,
        reasons=[
            order_service_pb2.ScreeningReason(code=f.rule.value, score=f.score, detail=f.detail)
            for f in screening.findings
        ],
    )


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
        items=order_items(order),
    )
    if order.screening is not None:
        data.screening.CopyFrom(screening_message(order.screening))
    return _order_event("confirmed", order, data)


def order_failed(order: Order, reason: str) -> OutgoingEvent:
    data = events_pb2.OrderFailed(order_id=order.id, user_id=order.user_id, reason=reason)
    if order.screening is not None:
        data.screening.CopyFrom(screening_message(order.screening))
    return _order_event("failed", order, data)


def order_approved(order: Order, reviewed_by: str) -> OutgoingEvent:
    data = events_pb2.OrderApproved(
        order_id=order.id, user_id=order.user_id, reviewed_by=reviewed_by
    )
    return _order_event("approved", order, data)


def order_rejected(order: Order, reviewed_by: str, reason: str) -> OutgoingEvent:
    data = events_pb2.OrderRejected(
        order_id=order.id, user_id=order.user_id, reviewed_by=reviewed_by, reason=reason
    )
    return _order_event("rejected", order, data)


def order_held(order: Order) -> OutgoingEvent:
    assert order.screening is not None
    data = events_pb2.OrderHeld(
        order_id=order.id,
        user_id=order.user_id,
        total=money_message(order.total),
        screening=screening_message(order.screening),
    )
    return _order_event("held", order, data)


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
        requested_by=refund.requested_by,
        reason=refund.reason,
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
        reason=refund.reason,
        requested_by=refund.requested_by,
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


# ---- the audit trail, read back from the recorded events --------------------------------

_CHANGE_OF_TYPE = {
    "microcommerce.order.placed": ChangeKind.STOCK_RESERVED,
    "microcommerce.order.confirmed": ChangeKind.CONFIRMED,
    "microcommerce.order.failed": ChangeKind.FAILED,
    "microcommerce.order.cancelled": ChangeKind.CANCELLED,
    "microcommerce.order.refunded": ChangeKind.REFUNDED,
    "microcommerce.order.held": ChangeKind.HELD,
    "microcommerce.order.approved": ChangeKind.APPROVED,
    "microcommerce.order.rejected": ChangeKind.REJECTED,
    "microcommerce.payment.authorized": ChangeKind.PAYMENT_AUTHORIZED,
    "microcommerce.payment.captured": ChangeKind.PAYMENT_CAPTURED,
    "microcommerce.payment.failed": ChangeKind.PAYMENT_FAILED,
    "microcommerce.payment.voided": ChangeKind.PAYMENT_VOIDED,
    "microcommerce.payment.refunded": ChangeKind.PAYMENT_REFUNDED,
}
_AMOUNT_FIELDS = ("amount", "refunded_amount", "total")
_FAILURE_PREFIX = "PAYMENT_FAILURE_REASON_"


def order_change(
    change_id: str, event_type: str, time: datetime, data: Mapping[str, Any], owner: str
) -> OrderChange:
    """The trail entry of a recorded event of the order owned by ``owner``.

    The placement (recorded with the order, ``event_type`` empty) is the owner's; a cancel is
    whoever ``cancelled_by`` names, a refund whoever asked for it; the saga's steps are the
    system's. An event type this version does not know (a newer replica wrote it) is kept as a
    change of unknown kind rather than hidden.
    """
    if not event_type:
        return OrderChange(change_id, ChangeKind.PLACED, time, ActorKind.USER, owner)
    kind = _CHANGE_OF_TYPE.get(event_type)
    acting = str(
        data.get("cancelled_by") or data.get("requested_by") or data.get("reviewed_by") or ""
    )
    reason = str(data.get("reason") or "")
    if reason.startswith(_FAILURE_PREFIX):
        reason = reason.removeprefix(_FAILURE_PREFIX)
    return OrderChange(
        change_id,
        kind or ChangeKind.UNKNOWN,
        time,
        actor_of(acting, owner),
        acting,
        reason,
        _amount(data),
        event_type,
    )


def _amount(data: Mapping[str, Any]) -> Money | None:
    for name in _AMOUNT_FIELDS:
        value = data.get(name)
        if isinstance(value, Mapping) and value.get("currency"):
            return Money(int(value.get("amount", 0)), str(value["currency"]))
    return None


def personal_data_erased(user_id: str, orders: int, payments: int) -> OutgoingEvent:
    # Keyed by the user: the erasure is about all of their orders at once.
    data = events_pb2.PersonalDataErased(user_id=user_id, orders=orders, payments=payments)
    return OutgoingEvent(
        PAYMENT_EVENTS, "microcommerce.payment.personal_data_erased", user_id, data
    )
