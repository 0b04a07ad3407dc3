"""Every google.rpc.ErrorInfo reason any process sends, with the HTTP status it overrides, if any.

A reason refines a gRPC status (AIP-193): FAILED_PRECONDITION is a 400 at the gateway, but one
that means "the card was declined" is a 402. Such overrides are declared here, once, next to
the reason; the gateway derives its reason → HTTP table from this enum, and domain errors carry
their member, so neither side spells the reason as a string.
"""

from __future__ import annotations

from enum import StrEnum
from http import HTTPStatus


class Reason(StrEnum):
    """An ErrorInfo reason (UPPER_SNAKE_CASE on the wire) and its HTTP status override."""

    http_status: HTTPStatus | None

    def __new__(cls, value: str, http_status: HTTPStatus | None = None) -> Reason:
        member = str.__new__(cls, value)
        member._value_ = value
        member.http_status = http_status
        return member

    # payment_svc: checkout (CONTRACT.md, "Orders and payments").
    PAYMENT_DECLINED = "PAYMENT_DECLINED", HTTPStatus.PAYMENT_REQUIRED
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED", HTTPStatus.UNPROCESSABLE_ENTITY
    PAYMENT_PROCESSOR_ERROR = "PAYMENT_PROCESSOR_ERROR"
    CHECKOUT_IN_PROGRESS = "CHECKOUT_IN_PROGRESS"
    PRODUCT_NOT_FOUND = "PRODUCT_NOT_FOUND"
    RESERVATION_REFUSED = "RESERVATION_REFUSED"
    RESERVATION_LOST = "RESERVATION_LOST"
    INVENTORY_UNAVAILABLE = "INVENTORY_UNAVAILABLE"
    CAPTURE_FAILED = "CAPTURE_FAILED"
    NOT_REFUNDABLE = "NOT_REFUNDABLE"
    NOT_CANCELLABLE = "NOT_CANCELLABLE"
    NOT_ON_HOLD = "NOT_ON_HOLD"
    ILLEGAL_TRANSITION = "ILLEGAL_TRANSITION"
    # product_svc (and payment_svc, reporting product_svc's answer).
    OUT_OF_STOCK = "OUT_OF_STOCK"
    # user_svc.
    LOGIN_THROTTLED = "LOGIN_THROTTLED"
    # Any service using common.money.
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    # The gateway's own refusals.
    RATE_LIMITED = "RATE_LIMITED"
    CIRCUIT_OPEN = "CIRCUIT_OPEN"
    BULKHEAD_FULL = "BULKHEAD_FULL"

    @classmethod
    def named(cls, text: str) -> Reason | None:
        """The member spelled ``text``, or None for text that is no declared reason."""
        return cls.__members__.get(text)


# ErrorInfo.domain of every reason we send (AIP-193).
ERROR_DOMAIN = "microcommerce"


def http_overrides() -> dict[str, HTTPStatus]:
    """Reason → HTTP status for the reasons whose HTTP status is not their gRPC status's."""
    return {reason.value: reason.http_status for reason in Reason if reason.http_status}
