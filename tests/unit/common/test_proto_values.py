"""Datetimes and Money survive the trip to their protobuf messages and back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from common.errors import InvalidArgument
from common.money import Money
from common.proto_values import datetime_of, money_message, money_of, timestamp
from microcommerce.common.v1 import money_pb2


def test_a_datetime_in_any_zone_round_trips_as_the_same_utc_instant() -> None:
    moment = datetime(2026, 12, 2, 10, 15, 30, 123456, tzinfo=timezone(timedelta(hours=2)))

    back = datetime_of(timestamp(moment))

    assert back == moment
    assert back.tzinfo == UTC


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        timestamp(datetime(2026, 12, 2))


def test_money_round_trips_and_none_is_the_empty_message() -> None:
    price = Money(1999, "USD")

    assert money_of(money_message(price), field="price") == price
    assert money_message(None) == money_pb2.Money()


@pytest.mark.parametrize(
    ("amount", "currency", "field"),
    [(-1, "USD", "refund.amount"), (100, "usd", "refund.currency"), (100, "", "refund.currency")],
)
def test_a_callers_money_is_checked_and_the_error_names_the_field(
    amount: int, currency: str, field: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        money_of(money_pb2.Money(amount=amount, currency=currency), field="refund")

    assert raised.value.field == field
