"""Reasons are declared once: domain errors carry them and the gateway's HTTP table follows."""

from __future__ import annotations

from http import HTTPStatus

from common.errors import FailedPrecondition
from common.reasons import Reason
from gateway.problems import REASON_TO_HTTP
from payment_svc.domain import IdempotencyKeyReused, PaymentDeclined


def test_an_error_class_for_one_cause_carries_its_reason_without_repeating_it() -> None:
    assert PaymentDeclined("the card was declined").reason == "PAYMENT_DECLINED"
    assert IdempotencyKeyReused("another body").reason == "IDEMPOTENCY_KEY_REUSED"
    assert FailedPrecondition("plain").reason is None
    assert FailedPrecondition("finer", reason=Reason.NOT_REFUNDABLE).reason == "NOT_REFUNDABLE"


def test_the_gateway_maps_exactly_the_reasons_declared_with_an_http_status() -> None:
    assert REASON_TO_HTTP == {
        "PAYMENT_DECLINED": HTTPStatus.PAYMENT_REQUIRED,
        "IDEMPOTENCY_KEY_REUSED": HTTPStatus.UNPROCESSABLE_ENTITY,
    }
    assert Reason.OUT_OF_STOCK.http_status is None


def test_a_reason_is_looked_up_by_its_wire_spelling() -> None:
    assert Reason.named("OUT_OF_STOCK") is Reason.OUT_OF_STOCK
    assert Reason.named("SOMETHING_ELSE") is None
