"""The order state machine, card validation, money and refund rules: no I/O."""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

from common.errors import (
    FailedPrecondition,
    InvalidArgument,
    OutOfRange,
    PermissionDenied,
    Unavailable,
)
from common.money import Money
from common.reasons import Reason
from payment_svc.domain import (
    MAX_ITEMS,
    MAX_QUANTITY,
    ORDER_TRANSITIONS,
    OUT_OF_STOCK,
    PRODUCT_NOT_FOUND,
    ActorKind,
    Caller,
    CardBrand,
    CardInput,
    CardOnFile,
    CheckoutReply,
    FailureReason,
    Order,
    OrderLine,
    OrderStatus,
    Payment,
    PaymentStatus,
    ProductFacts,
    RecordedError,
    Refund,
    RefundKind,
    RefundStatus,
    RequestedItem,
    ValidCard,
    actor_of,
    check_cancellable,
    check_transition,
    checkout_error,
    checkout_fingerprint,
    detect_brand,
    first_reply,
    luhn_valid,
    new_order,
    order_total,
    orders_listed_for,
    refund_amount,
    start_cancel,
    start_refund,
    status_after_refunds,
    validate_card,
    validate_items,
)

TODAY = date(2026, 11, 25)
NOW = datetime(2026, 11, 25, tzinfo=UTC)

LEGAL = [
    ("PENDING", "STOCK_RESERVED"),
    ("PENDING", "FAILED"),
    ("STOCK_RESERVED", "PAYMENT_AUTHORIZED"),
    ("STOCK_RESERVED", "FAILED"),
    ("STOCK_RESERVED", "ON_HOLD"),
    ("ON_HOLD", "PAYMENT_AUTHORIZED"),
    ("ON_HOLD", "FAILED"),
    ("PAYMENT_AUTHORIZED", "CONFIRMED"),
    ("PAYMENT_AUTHORIZED", "FAILED"),
    ("CONFIRMED", "CANCELLED"),
    ("CONFIRMED", "PARTIALLY_REFUNDED"),
    ("CONFIRMED", "REFUNDED"),
    ("PARTIALLY_REFUNDED", "PARTIALLY_REFUNDED"),
    ("PARTIALLY_REFUNDED", "REFUNDED"),
]
ALL_PAIRS = list(itertools.product(OrderStatus, OrderStatus))


@pytest.mark.parametrize(("current", "target"), LEGAL)
def test_the_saga_and_after_sale_moves_are_allowed(current: str, target: str) -> None:
    check_transition(OrderStatus(current), OrderStatus(target))


@pytest.mark.parametrize(
    ("current", "target"),
    [(a, b) for a, b in ALL_PAIRS if (a.value, b.value) not in LEGAL],
    ids=lambda s: s.value,
)
def test_every_other_move_is_refused(current: OrderStatus, target: OrderStatus) -> None:
    with pytest.raises(FailedPrecondition) as raised:
        check_transition(current, target)
    assert raised.value.reason == Reason.ILLEGAL_TRANSITION


@pytest.mark.parametrize("final", ["CANCELLED", "FAILED", "REFUNDED"])
def test_final_states_have_no_way_out(final: str) -> None:
    assert ORDER_TRANSITIONS.successors(OrderStatus(final)) == frozenset()


def test_only_the_checkout_states_belong_to_the_saga() -> None:
    assert {s for s in OrderStatus if s.in_checkout} == {
        OrderStatus.PENDING,
        OrderStatus.STOCK_RESERVED,
        OrderStatus.PAYMENT_AUTHORIZED,
    }


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("4242424242424242", True),
        ("4000000000000002", True),
        ("4000000000009995", True),
        ("4000000000000119", True),
        ("378282246310005", True),
        ("4242424242424241", False),
        ("0000000000000001", False),
        ("42424242abcd4242", False),
    ],
)
def test_the_luhn_check_accepts_real_numbers_and_refuses_typos(number: str, valid: bool) -> None:
    assert luhn_valid(number) is valid


@pytest.mark.parametrize(
    ("number", "brand"),
    [
        ("4242424242424242", CardBrand.VISA),
        ("5555555555554444", CardBrand.MASTERCARD),
        ("2223003122003222", CardBrand.MASTERCARD),
        ("378282246310005", CardBrand.AMEX),
        ("6011111111111117", CardBrand.DISCOVER),
        ("6445644564456445", CardBrand.DISCOVER),
        ("3566002020360505", CardBrand.UNKNOWN),
    ],
)
def test_the_brand_comes_from_the_number(number: str, brand: CardBrand) -> None:
    assert detect_brand(number) is brand


def card(number: str = "4242424242424242", **changes: object) -> CardInput:
    fields: dict[str, object] = {
        "number": number,
        "exp_month": 12,
        "exp_year": 2030,
        "cvc": "123",
        "holder_name": "Ada Lovelace",
    }
    fields.update(changes)
    return CardInput(**fields)  # type: ignore[arg-type]


def test_a_valid_card_keeps_only_brand_and_last4_visible() -> None:
    valid = validate_card(card("4242 4242-4242 4242"), today=TODAY)

    assert (valid.brand, valid.last4) == (CardBrand.VISA, "4242")
    assert "4242424242424242" not in repr(valid)
    assert "123" not in repr(valid)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (card("4242424242424241"), "number"),
        (card(""), "number"),
        (card("4242"), "number"),
        (card(exp_month=13), "exp_month"),
        (card(exp_month=0), "exp_month"),
        (card(exp_year=26), "exp_year"),
        (card(exp_year=2026, exp_month=10), "exp_year"),
        (card(cvc="12"), "cvc"),
        (card(cvc="1234"), "cvc"),
        (card("378282246310005", cvc="123"), "cvc"),
        (card(holder_name="  "), "holder_name"),
    ],
)
def test_an_invalid_card_names_the_field_and_never_echoes_the_number(
    bad: CardInput, field: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_card(bad, today=TODAY)

    assert raised.value.field == f"payment_method.card.{field}"
    assert bad.number not in raised.value.message or not bad.number


def test_a_card_is_valid_through_its_expiry_month_and_amex_takes_four_digits() -> None:
    validate_card(card(exp_year=2026, exp_month=11), today=TODAY)
    validate_card(card("378282246310005", cvc="1234"), today=TODAY)


def test_a_card_at_every_edge_of_its_fields_is_accepted_and_passed_on_whole() -> None:
    # What the provider's tokenizer is given: every field as the shopper typed it, trimmed.
    valid = validate_card(
        card("900000000001", exp_month=1, exp_year=9999, cvc="321", holder_name=f" {'H' * 100} "),
        today=TODAY,
    )

    assert valid == ValidCard("900000000001", 1, 9999, "321", "H" * 100, CardBrand.UNKNOWN)
    assert validate_card(card("9000000000000000001"), today=TODAY).number == "9000000000000000001"


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (card("90000000001"), "number"),  # 11 digits, Luhn-valid
        (card("90000000000000000001"), "number"),  # 20 digits, Luhn-valid
        (card(holder_name="H" * 101), "holder_name"),
    ],
)
def test_a_card_just_past_an_edge_is_refused(bad: CardInput, field: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_card(bad, today=TODAY)

    assert raised.value.field == f"payment_method.card.{field}"


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([], "items"),
        ([RequestedItem("", 1)], "items[0].product_id"),
        ([RequestedItem("p", 0)], "items[0].quantity"),
        ([RequestedItem("p", 1), RequestedItem("p", 2)], "items[1].product_id"),
    ],
)
def test_items_need_a_product_once_and_a_positive_quantity(
    items: list[RequestedItem], field: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_items(items)
    assert raised.value.field == field


def on_file(**changes: object) -> CardOnFile:
    fields: dict[str, object] = {
        "token": "tok",
        "brand": CardBrand.VISA,
        "last4": "4242",
        "exp_month": 1,
        "exp_year": 2030,
        "holder_name": "A",
    }
    fields.update(changes)
    return CardOnFile(**fields)  # type: ignore[arg-type]


def test_the_request_fingerprint_ignores_the_token_but_not_the_items() -> None:
    items = [RequestedItem("p", 1)]

    assert checkout_fingerprint(items, on_file()) == checkout_fingerprint(
        items, on_file(token="other")
    )
    assert checkout_fingerprint(items, on_file()) != checkout_fingerprint(
        [RequestedItem("p", 2)], on_file()
    )


def test_money_of_different_currencies_does_not_add_up() -> None:
    assert Money(100, "USD") + Money(5, "USD") == Money(105, "USD")
    with pytest.raises(FailedPrecondition):
        _ = Money(100, "USD") + Money(5, "EUR")


def payment(status: PaymentStatus = PaymentStatus.CAPTURED, refunded: int = 0) -> Payment:
    refunds = (
        (Refund("r", Money(refunded, "USD"), "x", RefundStatus.SUCCEEDED, NOW),) if refunded else ()
    )
    return Payment(
        "pay", "o", status, Money(1000, "USD"), CardBrand.VISA, "4242", NOW, refunds=refunds
    )


def test_a_refund_without_amount_takes_the_rest() -> None:
    assert refund_amount(payment(refunded=300), None) == Money(700, "USD")


def test_a_refund_above_what_is_left_is_out_of_range() -> None:
    with pytest.raises(OutOfRange):
        refund_amount(payment(refunded=300), Money(701, "USD"))


@pytest.mark.parametrize("amount", [0, -5])
def test_a_refund_must_be_positive(amount: int) -> None:
    with pytest.raises(InvalidArgument):
        refund_amount(payment(), Money(amount, "USD"))


def test_a_refund_of_an_uncaptured_payment_is_refused() -> None:
    with pytest.raises(FailedPrecondition):
        refund_amount(payment(PaymentStatus.AUTHORIZED), None)


def test_refunds_make_the_order_partially_then_fully_refunded() -> None:
    captured = Money(1000, "USD")
    assert status_after_refunds(captured, Money(1, "USD"))[0] is OrderStatus.PARTIALLY_REFUNDED
    assert status_after_refunds(captured, captured) == (
        OrderStatus.REFUNDED,
        PaymentStatus.REFUNDED,
    )


def order(status: OrderStatus, failure: str | None = None) -> Order:
    return Order("o", "u", status, (), None, None, NOW, NOW, failure)


@pytest.mark.parametrize("status", [s for s in OrderStatus if s is not OrderStatus.CONFIRMED])
def test_only_a_confirmed_order_can_be_cancelled(status: OrderStatus) -> None:
    with pytest.raises(FailedPrecondition):
        check_cancellable(order(status))


@pytest.mark.parametrize(
    ("failure", "status_name", "reason"),
    [
        ("OUT_OF_STOCK", "ABORTED", "OUT_OF_STOCK"),
        ("CARD_DECLINED", "FAILED_PRECONDITION", "PAYMENT_DECLINED"),
        ("INSUFFICIENT_FUNDS", "FAILED_PRECONDITION", "PAYMENT_DECLINED"),
        ("PROCESSOR_ERROR", "UNAVAILABLE", "PAYMENT_PROCESSOR_ERROR"),
        ("PRODUCT_NOT_FOUND", "NOT_FOUND", None),
    ],
)
def test_a_failed_checkout_answers_the_error_of_its_cause(
    failure: str, status_name: str, reason: str | None
) -> None:
    error = checkout_error(order(OrderStatus.FAILED, failure))
    assert (error.status_name, error.reason) == (status_name, reason)


def test_a_confirmed_checkout_answers_the_rendered_order() -> None:
    reply = first_reply(order(OrderStatus.CONFIRMED), lambda o: o.status.value.encode())

    assert reply.answer() == CheckoutReply("o", body=b"CONFIRMED")


def test_a_failed_checkout_answers_its_error_again_with_every_detail() -> None:
    reply = first_reply(order(OrderStatus.FAILED, "PROCESSOR_ERROR"), lambda o: b"unused")

    with pytest.raises(Unavailable) as raised:
        reply.answer()

    assert reply.body == b""
    assert (raised.value.status_name, raised.value.reason) == (
        "UNAVAILABLE",
        "PAYMENT_PROCESSOR_ERROR",
    )


def test_a_recorded_error_rebuilds_the_same_status_field_and_retry_time() -> None:
    recorded = RecordedError("INVALID_ARGUMENT", "bad", "OUT_OF_STOCK", "items[0]", 2.5)

    error = recorded.rebuild()

    assert isinstance(error, InvalidArgument)
    assert RecordedError.of(error) == recorded


def test_a_checkout_still_running_has_no_answer_to_keep() -> None:
    with pytest.raises(FailedPrecondition):
        first_reply(order(OrderStatus.STOCK_RESERVED), lambda o: b"")


def checked_out(status: OrderStatus = OrderStatus.CONFIRMED, refunded: int = 0) -> Order:
    return Order(
        "o",
        "u",
        status,
        (),
        Money(1000, "USD"),
        payment(
            PaymentStatus.CAPTURED if not refunded else PaymentStatus.PARTIALLY_REFUNDED, refunded
        ),
        NOW,
        NOW,
    )


def new() -> Order:
    card = CardOnFile("tok", CardBrand.VISA, "4242", 12, 2099, "Ada")
    return new_order("o", "pay", "u", [RequestedItem("p", 2)], card, NOW)


def test_a_checkout_moves_order_and_payment_together_through_the_saga() -> None:
    line = OrderLine("p", 2, "SKU", "Name", Money(500, "USD"))

    priced = new().priced([line], NOW)
    authorized = priced.authorized("auth-1", NOW)
    captured = authorized.captured()
    confirmed = captured.confirmed(NOW)

    assert (priced.status, priced.total, priced.paid_by.amount) == (
        OrderStatus.STOCK_RESERVED,
        Money(1000, "USD"),
        Money(1000, "USD"),
    )
    assert (authorized.paid_by.status, authorized.paid_by.authorization_id) == (
        PaymentStatus.AUTHORIZED,
        "auth-1",
    )
    assert (captured.status, captured.paid_by.status) == (
        OrderStatus.PAYMENT_AUTHORIZED,
        PaymentStatus.CAPTURED,
    )
    assert confirmed.status is OrderStatus.CONFIRMED


def test_a_declined_card_fails_order_and_payment_with_the_providers_reason() -> None:
    line = OrderLine("p", 2, "SKU", "Name", Money(500, "USD"))
    declined = new().priced([line], NOW).declined(FailureReason.CARD_DECLINED, NOW)

    assert (declined.status, declined.failure_reason) == (OrderStatus.FAILED, "CARD_DECLINED")
    assert declined.paid_by.status is PaymentStatus.FAILED


def test_a_step_out_of_order_is_refused() -> None:
    with pytest.raises(FailedPrecondition):
        new().confirmed(NOW)
    with pytest.raises(FailedPrecondition):
        new().captured()


def test_a_refund_is_set_aside_only_on_a_confirmed_or_partly_refunded_order() -> None:
    refund = start_refund(
        checked_out(), Money(300, "USD"), reason="r", refund_id="r1", requested_by="a", now=NOW
    )

    assert (refund.amount, refund.status, refund.kind) == (
        Money(300, "USD"),
        RefundStatus.PENDING,
        RefundKind.REFUND,
    )
    with pytest.raises(FailedPrecondition):
        start_refund(
            checked_out(OrderStatus.CANCELLED),
            None,
            reason="r",
            refund_id="r",
            requested_by="a",
            now=NOW,
        )


def test_a_cancel_refunds_the_rest_and_reuses_one_under_way() -> None:
    order = checked_out()
    refund = start_cancel(order, refund_id="c1", requested_by="u", now=NOW)
    assert refund is not None
    under_way = replace(order, payment=replace(order.paid_by, refunds=(refund,)))

    again = start_cancel(under_way, refund_id="c2", requested_by="u", now=NOW)

    assert (refund.amount, refund.kind) == (Money(1000, "USD"), RefundKind.CANCEL)
    assert again == refund
    assert (
        start_cancel(checked_out(OrderStatus.CANCELLED), refund_id="x", requested_by="u", now=NOW)
        is None
    )


def with_refund(order: Order, refund: Refund) -> Order:
    refunds = (*order.paid_by.refunds, refund)
    return replace(order, payment=replace(order.paid_by, refunds=refunds))


def test_a_settled_refund_moves_order_and_payment_to_partly_then_fully_refunded() -> None:
    first = Refund("r1", Money(300, "USD"), "x", RefundStatus.PENDING, NOW)
    partly = with_refund(checked_out(), first).refund_settled("r1", True, NOW)
    second = Refund("r2", Money(700, "USD"), "x", RefundStatus.PENDING, NOW)
    fully = with_refund(partly, second).refund_settled("r2", True, NOW)

    assert (partly.status, partly.paid_by.status) == (
        OrderStatus.PARTIALLY_REFUNDED,
        PaymentStatus.PARTIALLY_REFUNDED,
    )
    assert (fully.status, fully.paid_by.status) == (OrderStatus.REFUNDED, PaymentStatus.REFUNDED)


def test_a_settled_cancel_cancels_and_a_refused_refund_changes_no_status() -> None:
    cancel = Refund("c", Money(1000, "USD"), "x", RefundStatus.PENDING, NOW, "u", RefundKind.CANCEL)
    pending = with_refund(checked_out(), cancel)

    cancelled = pending.refund_settled("c", True, NOW)
    refused = pending.refund_settled("c", False, NOW)

    assert (cancelled.status, cancelled.paid_by.status) == (
        OrderStatus.CANCELLED,
        PaymentStatus.REFUNDED,
    )
    assert (refused.status, refused.paid_by.refunds[-1].status) == (
        OrderStatus.CONFIRMED,
        RefundStatus.FAILED,
    )
    assert cancelled.refund_settled("c", True, NOW) is cancelled


def test_only_an_admin_lists_another_users_orders_or_everyones() -> None:
    admin = Caller("a", is_admin=True)

    assert orders_listed_for(Caller("u"), "") == "u"
    assert orders_listed_for(Caller("u"), "u") == "u"
    assert orders_listed_for(admin, "other") == "other"
    assert orders_listed_for(admin, "-") is None
    with pytest.raises(PermissionDenied):
        orders_listed_for(Caller("u"), "other")


def test_an_order_is_visible_to_its_owner_and_admins_only() -> None:
    mine = order(OrderStatus.CONFIRMED)

    assert mine.visible_to(Caller("u"))
    assert mine.visible_to(Caller("a", is_admin=True))
    assert not mine.visible_to(Caller("someone else"))


# Found by `make mutants`: the refund cap's exact edges, and a total of several lines.


@pytest.mark.parametrize("amount", [1, 700])
def test_a_refund_from_one_cent_up_to_exactly_what_is_left_is_allowed(amount: int) -> None:
    assert refund_amount(payment(refunded=300), Money(amount, "USD")) == Money(amount, "USD")


def test_the_last_cent_can_be_refunded_and_then_nothing_more() -> None:
    assert refund_amount(payment(refunded=999), None) == Money(1, "USD")
    with pytest.raises(OutOfRange) as refused:
        refund_amount(payment(PaymentStatus.PARTIALLY_REFUNDED, refunded=1000), None)
    assert refused.value.field == "amount"


@pytest.mark.parametrize(
    ("requested", "field"),
    [(Money(0, "USD"), "amount.amount"), (Money(10, "EUR"), "amount.currency")],
)
def test_a_refused_refund_names_the_field_at_fault(requested: Money, field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        refund_amount(payment(), requested)
    assert refused.value.field == field


def test_an_order_total_adds_every_line_times_its_quantity() -> None:
    lines = [
        OrderLine("p-1", 2, "S1", "One", Money(250, "USD")),
        OrderLine("p-2", 3, "S2", "Two", Money(100, "USD")),
    ]

    assert order_total(lines) == Money(800, "USD")


# Found by `make mutants`: every edge of the IIN ranges and lengths, and a doubled 5 in Luhn.


@pytest.mark.parametrize(
    ("prefix", "length", "brand"),
    [
        *(("4", n, CardBrand.VISA) for n in (13, 16, 19)),
        ("4", 14, CardBrand.UNKNOWN),
        ("4", 20, CardBrand.UNKNOWN),
        ("51", 16, CardBrand.MASTERCARD),
        ("55", 16, CardBrand.MASTERCARD),
        ("50", 16, CardBrand.UNKNOWN),
        ("56", 16, CardBrand.UNKNOWN),
        ("2221", 16, CardBrand.MASTERCARD),
        ("2720", 16, CardBrand.MASTERCARD),
        ("2220", 16, CardBrand.UNKNOWN),
        ("2721", 16, CardBrand.UNKNOWN),
        ("34", 15, CardBrand.AMEX),
        ("37", 15, CardBrand.AMEX),
        ("35", 15, CardBrand.UNKNOWN),
        ("34", 16, CardBrand.UNKNOWN),
        ("6011", 16, CardBrand.DISCOVER),
        ("644", 16, CardBrand.DISCOVER),
        ("649", 19, CardBrand.DISCOVER),
        ("650", 16, CardBrand.DISCOVER),
        ("66", 16, CardBrand.UNKNOWN),
        ("622126", 16, CardBrand.DISCOVER),
        ("622925", 16, CardBrand.DISCOVER),
        ("622125", 16, CardBrand.UNKNOWN),
        ("622926", 16, CardBrand.UNKNOWN),
        ("6011", 20, CardBrand.UNKNOWN),
        ("", 0, CardBrand.UNKNOWN),
    ],
)
def test_the_brand_follows_the_iin_ranges_and_lengths_to_their_edges(
    prefix: str, length: int, brand: CardBrand
) -> None:
    assert detect_brand(prefix.ljust(length, "0")) is brand


def test_luhn_folds_a_doubled_digit_above_nine() -> None:
    assert luhn_valid("5555555555554444")
    assert not luhn_valid("5555555555554445")
    assert luhn_valid("59")  # the 5 doubles to 10, folded to 1


# Found by `make mutants`: what a checkout that ran out of stock tells the buyer, and who acted.


def _short_of_stock(reason: str = OUT_OF_STOCK) -> Order:
    card = CardOnFile("tok", CardBrand.VISA, "4242", 12, 2099, "Ada")
    items = [RequestedItem(p, q) for p, q in (("tea", 3), ("mug", 2), ("pot", 1), ("cup", 5))]
    described = [
        ProductFacts("tea", "TEA-SKU", "Green tea", Money(400, "USD"), available=1),
        ProductFacts("mug", "MUG-SKU", "Mug", Money(900, "USD"), available=2),  # just enough
        ProductFacts("pot", "POT-SKU", "Teapot", Money(3000, "USD"), available=None),
    ]  # no facts at all about "cup": the catalog could not say
    return new_order("o", "pay", "u", items, card, NOW).failed(reason, NOW, described)


def test_a_checkout_short_of_stock_marks_only_the_lines_the_catalog_could_not_fill() -> None:
    failed = _short_of_stock()

    assert [line.available for line in failed.lines] == [1, None, None, None]
    assert [(line.sku, line.name) for line in failed.lines] == [
        ("TEA-SKU", "Green tea"),
        ("MUG-SKU", "Mug"),
        ("POT-SKU", "Teapot"),
        ("", ""),
    ]
    assert failed.lines[0].unit_price == Money(400, "USD")


def test_a_checkout_failed_for_another_reason_says_nothing_about_stock() -> None:
    failed = _short_of_stock(PRODUCT_NOT_FOUND)

    assert [line.available for line in failed.lines] == [None, None, None, None]
    assert failed.lines[0].name == "Green tea"


def test_the_out_of_stock_answer_flags_each_short_item_with_what_was_left() -> None:
    error = checkout_error(_short_of_stock())

    assert error.reason == Reason.OUT_OF_STOCK
    [violation] = error.violations
    assert violation.field == "items[0].quantity"
    # Names the product as the buyer knows it, then the units available and requested.
    assert "TEA-SKU" in violation.description
    assert "Green tea" in violation.description
    assert re.findall(r"\d+", violation.description) == ["1", "3"]


def test_the_audit_trail_tells_the_system_the_owner_and_an_administrator_apart() -> None:
    assert actor_of("", "u-1") is ActorKind.SYSTEM
    assert actor_of("u-1", "u-1") is ActorKind.USER
    assert actor_of("admin-1", "u-1") is ActorKind.ADMIN


def test_a_refund_remembers_who_asked_for_it() -> None:
    refund = start_refund(
        checked_out(), None, reason="damaged", refund_id="r1", requested_by="admin-1", now=NOW
    )

    assert refund.requested_by == "admin-1"


def test_a_failed_checkouts_answer_is_kept_for_its_order() -> None:
    # The idempotency key's row is matched by this id: without it a replay finds no answer.
    reply = first_reply(order(OrderStatus.FAILED, "CARD_DECLINED"), lambda o: b"unused")

    assert reply.order_id == "o"


def test_an_order_may_hold_exactly_the_most_items_and_units_allowed() -> None:
    most = [RequestedItem(f"p-{n}", 1) for n in range(MAX_ITEMS - 1)]
    most.append(RequestedItem("bulk", MAX_QUANTITY))

    assert validate_items(most) == most
    with pytest.raises(InvalidArgument):
        validate_items([*most, RequestedItem("one-more", 1)])
    with pytest.raises(InvalidArgument):
        validate_items([RequestedItem("bulk", MAX_QUANTITY + 1)])


def test_a_new_orders_payment_is_for_nothing_until_the_order_is_priced() -> None:
    # A checkout that fails before pricing shows this payment: it must not claim any money.
    placed = new()

    assert placed.paid_by.amount == Money(0, "")
    assert placed.paid_by.order_id == "o"
