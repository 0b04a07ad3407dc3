"""The kernel's values as protobuf messages: aware datetimes as Timestamps, Money as Money."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from common.money import Money
from microcommerce.common.v1 import money_pb2


def timestamp(moment: datetime) -> Timestamp:
    """The Timestamp of an aware datetime; a naive one is refused, as on every wire."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no place on the wire; attach a time zone")
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def datetime_of(stamp: Timestamp) -> datetime:
    """The aware UTC datetime of a Timestamp."""
    return stamp.ToDatetime(tzinfo=UTC)


def money_message(value: Money | None) -> money_pb2.Money:
    """``microcommerce.common.v1.Money`` of a value; None is the empty message (no amount yet)."""
    if value is None:
        return money_pb2.Money()
    return money_pb2.Money(amount=value.amount, currency=value.currency)


def money_of(message: money_pb2.Money, *, field: str) -> Money:
    """A caller's Money message, checked as ``Money.parse`` does; ``field`` names it in errors."""
    return Money.parse(message.amount, message.currency, field=field)
