"""Every order and payment refusal names its field and reason exactly.

Clients branch on ``reason`` (google.rpc.ErrorInfo: a 402 for PAYMENT_DECLINED, a 422 for
IDEMPOTENCY_KEY_REUSED, "wait" for CHECKOUT_IN_PROGRESS) and show a message next to ``field``.
Both are public contract (CONTRACT.md), so a renamed or dropped field or reason must fail a
test here, not only change a message.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from common.errors import (
    Aborted,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    Unavailable,
)
from common.money import Money
from common.reasons import Reason
from payment_svc import domain
from payment_svc.domain import (
    Caller,
    IdempotencyKey,
    Order,
    OrderStatus,
    PaymentStatus,
    RequestedItem,
)
from tests.unit.payment.test_payment_domain import card, checked_out, order, payment

TODAY = datetime(2026, 11, 25, tzinfo=UTC).date()
NOW = datetime(2026, 11, 25, tzinfo=UTC)


def refund(target: Order, amount: int | None = None) -> object:
    return domain.start_refund(
        target,
        None if amount is None else Money(amount, "USD"),
        reason="scratched",
        refund_id="r",
        requested_by="admin",
        now=NOW,
    )


def replayed_with_another_body() -> None:
    key = IdempotencyKey("u", "k", "first body", "o", NOW, NOW)
    key.same_body("second body")


Refusal = tuple[Callable[[], object], type[DomainError], str | None, str | None]
REFUSALS: dict[str, Refusal] = {
    # Refunds: the cap and the states that can be refunded.
    "refund of an order still in checkout": (
        lambda: refund(checked_out(OrderStatus.PAYMENT_AUTHORIZED)),
        FailedPrecondition,
        None,
        Reason.NOT_REFUNDABLE,
    ),
    "refund of a payment not captured": (
        lambda: domain.refund_amount(payment(PaymentStatus.AUTHORIZED), None),
        FailedPrecondition,
        None,
        Reason.NOT_REFUNDABLE,
    ),
    "refund of the rest when nothing is left": (
        lambda: domain.refund_amount(payment(PaymentStatus.PARTIALLY_REFUNDED, 1000), None),
        OutOfRange,
        "amount",
        None,
    ),
    "refund above what is left": (
        lambda: refund(checked_out(refunded=300), 701),
        OutOfRange,
        "amount.amount",
        None,
    ),
    "refund of nothing": (
        lambda: domain.refund_amount(payment(), Money(0, "USD")),
        InvalidArgument,
        "amount.amount",
        None,
    ),
    "refund in another currency": (
        lambda: domain.refund_amount(payment(), Money(10, "EUR")),
        InvalidArgument,
        "amount.currency",
        None,
    ),
    # Cancels.
    "cancel during checkout": (
        lambda: domain.check_cancellable(order(OrderStatus.STOCK_RESERVED)),
        FailedPrecondition,
        None,
        Reason.CHECKOUT_IN_PROGRESS,
    ),
    "cancel of a refunded order": (
        lambda: domain.check_cancellable(order(OrderStatus.REFUNDED)),
        FailedPrecondition,
        None,
        Reason.NOT_CANCELLABLE,
    ),
    "cancel of a failed order": (
        lambda: domain.start_cancel(
            checked_out(OrderStatus.FAILED), refund_id="r", requested_by="u", now=NOW
        ),
        FailedPrecondition,
        None,
        Reason.NOT_CANCELLABLE,
    ),
    # Checkout answers.
    "answer before the saga ended": (
        lambda: domain.first_reply(order(OrderStatus.PENDING), lambda o: b""),
        FailedPrecondition,
        None,
        Reason.CHECKOUT_IN_PROGRESS,
    ),
    "key reused with another body": (
        replayed_with_another_body,
        domain.IdempotencyKeyReused,
        None,
        Reason.IDEMPOTENCY_KEY_REUSED,
    ),
    # Access.
    "customer listing another user's orders": (
        lambda: domain.orders_listed_for(Caller("u"), "v"),
        PermissionDenied,
        None,
        None,
    ),
    # Validation.
    "no items": (lambda: domain.validate_items([]), InvalidArgument, "items", None),
    "too many items": (
        lambda: domain.validate_items([RequestedItem(f"p{i}", 1) for i in range(101)]),
        InvalidArgument,
        "items",
        None,
    ),
    "quantity above the maximum": (
        lambda: domain.validate_items([RequestedItem("p", 1), RequestedItem("q", 10_001)]),
        InvalidArgument,
        "items[1].quantity",
        None,
    ),
    "blank product id": (
        lambda: domain.validate_items([RequestedItem("p", 1), RequestedItem(" ", 1)]),
        InvalidArgument,
        "items[1].product_id",
        None,
    ),
    "card number with letters": (
        lambda: domain.validate_card(card("4242abcd42424242"), today=TODAY),
        InvalidArgument,
        "payment_method.card.number",
        None,
    ),
    "card number of 20 digits": (
        lambda: domain.validate_card(card("4" * 20), today=TODAY),
        InvalidArgument,
        "payment_method.card.number",
        None,
    ),
    "five-digit year": (
        lambda: domain.validate_card(card(exp_year=10_000), today=TODAY),
        InvalidArgument,
        "payment_method.card.exp_year",
        None,
    ),
    "holder name above 100 characters": (
        lambda: domain.validate_card(card(holder_name="A" * 101), today=TODAY),
        InvalidArgument,
        "payment_method.card.holder_name",
        None,
    ),
    "letters in the cvc": (
        lambda: domain.validate_card(card(cvc="12a"), today=TODAY),
        InvalidArgument,
        "payment_method.card.cvc",
        None,
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_refusal_names_its_field_and_reason(case: str) -> None:
    call, kind, field, reason = REFUSALS[case]

    with pytest.raises(kind) as refused:
        call()

    assert type(refused.value) is kind
    assert refused.value.field == field
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    ("failure", "kind", "field", "reason"),
    [
        (domain.OUT_OF_STOCK, Aborted, None, Reason.OUT_OF_STOCK),
        (domain.PRODUCT_NOT_FOUND, NotFound, "items", None),
        ("CARD_DECLINED", domain.PaymentDeclined, None, Reason.PAYMENT_DECLINED),
        ("INSUFFICIENT_FUNDS", domain.PaymentDeclined, None, Reason.PAYMENT_DECLINED),
        ("PROCESSOR_ERROR", Unavailable, None, Reason.PAYMENT_PROCESSOR_ERROR),
        (domain.INVENTORY_UNAVAILABLE, Unavailable, None, None),
        (domain.CAPTURE_FAILED, Aborted, None, Reason.CAPTURE_FAILED),
        (domain.RESERVATION_REFUSED, Aborted, None, Reason.RESERVATION_REFUSED),
        (domain.RESERVATION_LOST, Aborted, None, Reason.RESERVATION_LOST),
    ],
)
def test_a_failed_checkout_answers_its_causes_field_and_reason(
    failure: str, kind: type[DomainError], field: str | None, reason: str | None
) -> None:
    error = domain.checkout_error(order(OrderStatus.FAILED, failure))

    assert (type(error), error.field, error.reason) == (kind, field, reason)
