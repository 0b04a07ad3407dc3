"""What one order or payment event adds to the sales figures: pure, no SQL and no Kafka.

Every figure is a sum of increments, each filed under the hour (UTC) of the event that caused
it, so applying a set of events gives the same figures in any order. The one figure that needs
two events is a product's sales: the lines come with ``order.placed``, the moment of sale with
``order.confirmed``; each event carries its half (``Fold.lines``, ``Fold.confirmed_hour``) and
the store adds the product increments when it holds both, whichever came first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from common.descriptors import event_type
from microcommerce.payment.v1 import events_pb2

ORDER_PLACED = event_type(events_pb2.OrderPlaced)
ORDER_CONFIRMED = event_type(events_pb2.OrderConfirmed)
ORDER_FAILED = event_type(events_pb2.OrderFailed)
ORDER_CANCELLED = event_type(events_pb2.OrderCancelled)
PAYMENT_REFUNDED = event_type(events_pb2.PaymentRefunded)

ORDER_TYPES = frozenset({ORDER_PLACED, ORDER_CONFIRMED, ORDER_FAILED, ORDER_CANCELLED})
# Refunds are taken from the payment's event, not from order.refunded / order.cancelled, which
# repeat the same money: counting both would count it twice.
PAYMENT_TYPES = frozenset({PAYMENT_REFUNDED})
FOLDED_TYPES = ORDER_TYPES | PAYMENT_TYPES

MessageT = TypeVar("MessageT", bound=Message)


class Measure(StrEnum):
    """What a counter counts; its ``label`` is the failure reason or the currency."""

    PLACED = "placed"
    CONFIRMED = "confirmed"
    FAILED = "failed"  # label: the reason
    CANCELLED = "cancelled"
    REVENUE = "revenue"  # label: the currency; amount in minor units
    REFUNDS = "refunds"  # label: the currency


class BadEvent(ValueError):
    """An event whose data cannot be folded (no order id, a line without a price...)."""


@dataclass(frozen=True)
class Increment:
    """Add ``count`` and ``amount`` to the counter (hour, measure, label)."""

    hour: datetime
    measure: Measure
    label: str = ""
    count: int = 1
    amount: int = 0


@dataclass(frozen=True)
class Line:
    """One product line of an order: units and what they cost, in one currency."""

    product_id: str
    currency: str
    units: int
    revenue: int


@dataclass(frozen=True)
class Fold:
    """Everything one event adds; ``time`` moves ``as_of``."""

    order_id: str
    time: datetime
    increments: tuple[Increment, ...]
    lines: tuple[Line, ...] | None = None  # order.placed: the order's lines
    confirmed_hour: datetime | None = None  # order.confirmed: when its products sold


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def fold(event_type: str, data: Mapping[str, Any], time: datetime) -> Fold:
    """The increments of one event of ``FOLDED_TYPES``; ``BadEvent`` if its data does not fit."""
    hour = hour_of(time)
    if event_type == ORDER_PLACED:
        placed = _parse(data, events_pb2.OrderPlaced())
        lines = tuple(_line(item) for item in placed.items)
        return Fold(
            _order_id(placed.order_id), time, (Increment(hour, Measure.PLACED),), lines=lines
        )
    if event_type == ORDER_CONFIRMED:
        confirmed = _parse(data, events_pb2.OrderConfirmed())
        total = _money(confirmed.total, "total")
        return Fold(
            _order_id(confirmed.order_id),
            time,
            (
                Increment(hour, Measure.CONFIRMED),
                Increment(hour, Measure.REVENUE, total[0], count=1, amount=total[1]),
            ),
            confirmed_hour=hour,
        )
    if event_type == ORDER_FAILED:
        failed = _parse(data, events_pb2.OrderFailed())
        reason = failed.reason or "UNKNOWN"
        return Fold(
            _order_id(failed.order_id), time, (Increment(hour, Measure.FAILED, reason[:64]),)
        )
    if event_type == ORDER_CANCELLED:
        cancelled = _parse(data, events_pb2.OrderCancelled())
        return Fold(_order_id(cancelled.order_id), time, (Increment(hour, Measure.CANCELLED),))
    if event_type == PAYMENT_REFUNDED:
        refunded = _parse(data, events_pb2.PaymentRefunded())
        if not refunded.requested_by:
            # Checkout giving back the money of an order it could not confirm: that money was
            # never revenue, so it is no refund of revenue either.
            return Fold(_order_id(refunded.order_id), time, ())
        currency, amount = _money(refunded.amount, "amount")
        increment = Increment(hour, Measure.REFUNDS, currency, count=1, amount=amount)
        return Fold(_order_id(refunded.order_id), time, (increment,))
    raise BadEvent(f"{event_type} is not folded into the sales figures")


def product_increments(lines: tuple[Line, ...]) -> dict[tuple[str, str], Line]:
    """An order's lines summed per (product, currency): one upsert per product."""
    summed: dict[tuple[str, str], Line] = {}
    for line in lines:
        key = (line.product_id, line.currency)
        before = summed.get(key)
        summed[key] = (
            line
            if before is None
            else Line(
                line.product_id,
                line.currency,
                before.units + line.units,
                before.revenue + line.revenue,
            )
        )
    return summed


def _parse(data: Mapping[str, Any], message: MessageT) -> MessageT:
    try:
        return json_format.ParseDict(dict(data), message, ignore_unknown_fields=True)
    except json_format.ParseError as error:
        raise BadEvent(f"data does not fit {message.DESCRIPTOR.name}: {error}") from None


def _order_id(order_id: str) -> str:
    if not order_id:
        raise BadEvent("no order_id")
    return order_id


def _money(money: Any, name: str) -> tuple[str, int]:
    if len(money.currency) != 3 or money.amount < 0:
        raise BadEvent(f"{name} is not an amount of money")
    return money.currency, int(money.amount)


def _line(item: Any) -> Line:
    if not item.product_id or item.quantity <= 0:
        raise BadEvent("an order line without product or quantity")
    if not item.HasField("unit_price"):
        # The contract leaves an unknown price absent: the units sold still count.
        return Line(item.product_id, "", item.quantity, 0)
    currency, unit_amount = _money(item.unit_price, "unit_price")
    return Line(item.product_id, currency, item.quantity, unit_amount * item.quantity)
