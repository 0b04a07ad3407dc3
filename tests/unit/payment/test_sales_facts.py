"""The pure part of the sales read model: what one event adds, and what it refuses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from payment_svc.analytics.facts import (
    BadEvent,
    Increment,
    Line,
    Measure,
    fold,
    product_increments,
)

AT = datetime(2026, 12, 2, 10, 42, 7, 123000, tzinfo=UTC)
HOUR = datetime(2026, 12, 2, 10, tzinfo=UTC)


def usd(amount: int) -> dict[str, Any]:
    return {"amount": str(amount), "currency": "USD"}


def test_a_placement_counts_once_and_carries_its_lines_for_the_confirmation() -> None:
    data = {
        "order_id": "o1",
        "items": [
            {"product_id": "mug", "quantity": 2, "unit_price": usd(1250)},
            {"product_id": "tea", "quantity": 1, "unit_price": usd(500)},
        ],
    }
    folded = fold("microcommerce.order.placed", data, AT)
    assert folded.increments == (Increment(HOUR, Measure.PLACED),)
    assert folded.lines == (Line("mug", "USD", 2, 2500), Line("tea", "USD", 1, 500))
    assert folded.confirmed_hour is None
    assert folded.time == AT


def test_a_confirmation_adds_revenue_in_its_currency_and_names_its_hour() -> None:
    folded = fold("microcommerce.order.confirmed", {"order_id": "o1", "total": usd(3000)}, AT)
    assert folded.increments == (
        Increment(HOUR, Measure.CONFIRMED),
        Increment(HOUR, Measure.REVENUE, "USD", amount=3000),
    )
    assert folded.confirmed_hour == HOUR


def test_only_refunds_someone_asked_for_are_refunds_of_revenue() -> None:
    asked = {"order_id": "o1", "amount": usd(300), "requested_by": "admin-1"}
    by_checkout = {"order_id": "o1", "amount": usd(3000), "requested_by": ""}
    assert fold("microcommerce.payment.refunded", asked, AT).increments == (
        Increment(HOUR, Measure.REFUNDS, "USD", amount=300),
    )
    assert fold("microcommerce.payment.refunded", by_checkout, AT).increments == ()


def test_a_failure_counts_under_its_reason() -> None:
    folded = fold("microcommerce.order.failed", {"order_id": "o1", "reason": "CARD_DECLINED"}, AT)
    assert folded.increments == (Increment(HOUR, Measure.FAILED, "CARD_DECLINED"),)
    unnamed = fold("microcommerce.order.failed", {"order_id": "o1"}, AT)
    assert unnamed.increments == (Increment(HOUR, Measure.FAILED, "UNKNOWN"),)


@pytest.mark.parametrize(
    ("event_type", "data"),
    [
        ("microcommerce.order.placed", {"items": []}),
        ("microcommerce.order.placed", {"order_id": "o1", "items": [{"product_id": "mug"}]}),
        ("microcommerce.order.confirmed", {"order_id": "o1"}),
        ("microcommerce.order.confirmed", {"order_id": "o1", "total": "lots"}),
        ("microcommerce.payment.refunded", {"order_id": "o1", "requested_by": "a"}),
        ("microcommerce.order.refunded", {"order_id": "o1"}),
    ],
)
def test_data_that_cannot_be_folded_is_refused(event_type: str, data: dict[str, Any]) -> None:
    with pytest.raises(BadEvent):
        fold(event_type, data, AT)


def test_a_line_without_a_known_price_still_counts_its_units() -> None:
    data = {"order_id": "o1", "items": [{"product_id": "mug", "quantity": 2}]}
    assert fold("microcommerce.order.placed", data, AT).lines == (Line("mug", "", 2, 0),)


def test_an_orders_lines_are_summed_per_product_and_currency() -> None:
    lines = (Line("mug", "USD", 1, 1250), Line("mug", "USD", 2, 2400), Line("mug", "EUR", 1, 9))
    assert product_increments(lines) == {
        ("mug", "USD"): Line("mug", "USD", 3, 3650),
        ("mug", "EUR"): Line("mug", "EUR", 1, 9),
    }
