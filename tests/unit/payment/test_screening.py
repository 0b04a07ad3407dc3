"""Fraud screening rules: each rule's threshold, score and reason, and the decision cut-offs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from common.errors import FailedPrecondition
from common.money import Money
from payment_svc.domain import (
    CardBrand,
    CardOnFile,
    FailureReason,
    Order,
    OrderLine,
    OrderStatus,
    PaymentStatus,
    RequestedItem,
    attempt_outcome,
    checkout_error,
    new_order,
)
from payment_svc.screening import (
    AttemptOutcome,
    Decision,
    Rule,
    Screening,
    ScreeningFacts,
    ScreeningPolicy,
    card_fingerprint,
    screen,
)
from payment_svc.settings import PaymentSettings

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
POLICY = ScreeningPolicy()
# A customer for a month with a few ordinary orders: nothing fires.
ORDINARY = ScreeningFacts(
    amount=4_500,
    user_attempts=1,
    card_attempts=1,
    address_attempts=2,
    confirmed_orders=3,
    largest_confirmed=6_000,
    customer_since=NOW - timedelta(days=30),
)


def _with(field: str, count: int) -> ScreeningFacts:
    changes: dict[str, Any] = {field: count}
    return replace(ORDINARY, **changes)


def rules_of(facts: ScreeningFacts, policy: ScreeningPolicy = POLICY) -> set[Rule]:
    return {finding.rule for finding in screen(facts, policy, NOW).findings}


def test_an_ordinary_checkout_is_allowed_with_no_reason() -> None:
    screening = screen(ORDINARY, POLICY, NOW)

    assert screening == Screening(Decision.ALLOW, 0, ())


@pytest.mark.parametrize(
    ("field", "rule", "limit"),
    [
        ("user_attempts", Rule.USER_VELOCITY, POLICY.max_attempts_per_user),
        ("card_attempts", Rule.CARD_VELOCITY, POLICY.max_attempts_per_card),
        ("address_attempts", Rule.ADDRESS_VELOCITY, POLICY.max_attempts_per_address),
    ],
)
def test_each_velocity_rule_fires_at_its_threshold_and_alone_still_allows(
    field: str, rule: Rule, limit: int
) -> None:
    assert rule not in rules_of(_with(field, limit - 1))

    screening = screen(_with(field, limit), POLICY, NOW)

    assert screening.reasons == (rule.value,)
    assert screening.score == POLICY.velocity_score
    assert screening.decision is Decision.ALLOW


def test_two_velocities_ask_for_review_and_three_deny() -> None:
    busy = replace(ORDINARY, user_attempts=5, card_attempts=5)
    assert screen(busy, POLICY, NOW).decision is Decision.REVIEW

    assert screen(replace(busy, address_attempts=20), POLICY, NOW).decision is Decision.DENY


@pytest.mark.parametrize("field", ["user_declines", "card_declines", "address_declines"])
def test_a_run_of_declines_denies_card_testing(field: str) -> None:
    assert screen(_with(field, 2), POLICY, NOW).decision is Decision.ALLOW

    screening = screen(_with(field, 3), POLICY, NOW)

    assert screening.decision is Decision.DENY
    assert screening.reasons == ("DECLINE_RUN",)
    assert "3 declined attempts" in screening.findings[0].detail


def test_an_amount_far_above_the_history_is_reviewed() -> None:
    spree = replace(ORDINARY, amount=30_001)  # 5x the largest (6000) is 30000

    screening = screen(spree, POLICY, NOW)

    assert screening.decision is Decision.REVIEW
    assert screening.reasons == ("AMOUNT_ABOVE_HISTORY",)
    assert Rule.AMOUNT_ABOVE_HISTORY not in rules_of(replace(spree, amount=30_000))


def test_one_confirmed_order_is_no_history_to_be_far_above() -> None:
    one_order = replace(ORDINARY, confirmed_orders=1, amount=60_000)

    assert Rule.AMOUNT_ABOVE_HISTORY not in rules_of(one_order)
    assert Rule.AMOUNT_ABOVE_HISTORY in rules_of(replace(one_order, confirmed_orders=2))


def test_a_small_amount_never_counts_as_far_above_the_history() -> None:
    tiny_history = replace(ORDINARY, largest_confirmed=100, amount=POLICY.history_min_amount - 1)

    assert rules_of(tiny_history) == set()


def test_a_high_amount_on_a_brand_new_account_is_reviewed() -> None:
    newcomer = ScreeningFacts(amount=POLICY.new_account_high_amount, customer_since=NOW)

    screening = screen(newcomer, POLICY, NOW)

    assert screening.decision is Decision.REVIEW
    assert screening.reasons == ("NEW_ACCOUNT_HIGH_AMOUNT",)
    a_month_old = replace(newcomer, customer_since=NOW - timedelta(days=30))
    assert rules_of(a_month_old) == set()
    assert rules_of(replace(newcomer, amount=POLICY.new_account_high_amount - 1)) == set()


def test_a_first_order_counts_as_a_brand_new_account() -> None:
    assert rules_of(ScreeningFacts(amount=60_000)) == {Rule.NEW_ACCOUNT_HIGH_AMOUNT}


def test_many_distinct_cards_for_one_account_are_reviewed() -> None:
    assert rules_of(replace(ORDINARY, user_cards=POLICY.max_cards_per_user)) == set()

    screening = screen(replace(ORDINARY, user_cards=4), POLICY, NOW)

    assert screening.decision is Decision.REVIEW
    assert screening.reasons == ("MANY_CARDS",)


def test_cycling_cards_with_declines_is_denied() -> None:
    cycling = replace(ORDINARY, user_cards=5, user_declines=3)

    screening = screen(cycling, POLICY, NOW)

    assert screening.decision is Decision.DENY
    assert set(screening.reasons) == {"MANY_CARDS", "DECLINE_RUN"}
    assert screening.score == POLICY.cards_score + POLICY.decline_score


def test_thresholds_and_cut_offs_come_from_the_policy() -> None:
    strict = ScreeningPolicy(max_attempts_per_user=2, velocity_score=10, review_score=10)

    screening = screen(replace(ORDINARY, user_attempts=2), strict, NOW)

    assert screening == screen(replace(ORDINARY, user_attempts=2), strict, NOW)
    assert screening.decision is Decision.REVIEW
    assert screening.score == 10


def test_a_policy_whose_review_score_is_above_its_deny_score_is_refused() -> None:
    with pytest.raises(ValueError, match="review score"):
        ScreeningPolicy(review_score=90, deny_score=80)


def test_the_card_fingerprint_is_keyed_and_never_the_number() -> None:
    number = "4242424242424242"
    first = card_fingerprint(number, b"k" * 32)

    assert first == card_fingerprint(number, b"k" * 32)
    assert first != card_fingerprint(number, b"j" * 32)
    assert first != card_fingerprint("4000000000000002", b"k" * 32)
    assert number not in first
    assert len(first) == 64


# ---- the order's moves around screening -------------------------------------------------


def _reserved(decision: Decision | None = None) -> Order:
    card = CardOnFile("tok", CardBrand.VISA, "4242", 12, 2099, "Ada")
    order = new_order("o1", "p1", "u1", [RequestedItem("x", 1)], card, NOW)
    priced = order.priced([OrderLine("x", 1, "SKU", "X", Money(1000, "USD"))], NOW)
    if decision is None:
        return priced
    return priced.screened(Screening(decision, 0), NOW)


def test_a_screened_order_keeps_its_status_and_cannot_be_screened_twice() -> None:
    order = _reserved(Decision.ALLOW)

    assert order.status is OrderStatus.STOCK_RESERVED
    with pytest.raises(FailedPrecondition):
        order.screened(Screening(Decision.DENY, 90), NOW)


def test_review_puts_the_authorized_order_on_hold_and_allow_does_not() -> None:
    held = _reserved(Decision.REVIEW).authorized("auth-1", NOW)
    allowed = _reserved(Decision.ALLOW).authorized("auth-1", NOW)

    assert held.status is OrderStatus.ON_HOLD
    assert held.paid_by.status is PaymentStatus.AUTHORIZED
    assert allowed.status is OrderStatus.PAYMENT_AUTHORIZED
    assert held.approved(NOW).status is OrderStatus.PAYMENT_AUTHORIZED
    rejected = held.rejected("SCREENING_REJECTED", NOW)
    assert (rejected.status, rejected.paid_by.status) == (OrderStatus.FAILED, PaymentStatus.VOIDED)


def test_a_denied_checkout_answers_a_plain_decline_that_names_no_rule() -> None:
    denied = _reserved(Decision.DENY).denied(NOW)

    error = checkout_error(denied)

    assert denied.paid_by.status is PaymentStatus.FAILED
    assert denied.paid_by.failure_reason is None
    assert error.message == "the payment was declined; nothing was charged"
    assert error.reason is not None
    assert error.reason == "PAYMENT_DECLINED"
    assert FailureReason.CARD_DECLINED.value not in error.message


def test_the_mc_fraud_settings_make_the_policy_and_can_switch_screening_off() -> None:
    settings = PaymentSettings.model_validate(
        {
            "environment": "test",
            "MC_FRAUD_MAX_DECLINES": 5,
            "MC_FRAUD_VELOCITY_WINDOW_S": 120,
            "MC_FRAUD_REVIEW_SCORE": 30,
        }
    )

    policy = settings.screening_policy()

    assert policy is not None
    assert policy.max_declines == 5
    assert policy.velocity_window == timedelta(minutes=2)
    assert policy.review_score == 30
    assert policy.deny_score == POLICY.deny_score
    off = PaymentSettings.model_validate({"environment": "test", "MC_FRAUD_ENABLED": False})
    assert off.screening_policy() is None


def test_settings_refuse_a_review_score_above_the_deny_score() -> None:
    with pytest.raises(ValueError, match="MC_FRAUD_REVIEW_SCORE"):
        PaymentSettings.model_validate({"MC_FRAUD_REVIEW_SCORE": 90, "MC_FRAUD_DENY_SCORE": 80})


@pytest.mark.parametrize(
    ("end", "outcome"),
    [
        ("declined", AttemptOutcome.DECLINED),
        ("denied", AttemptOutcome.DENIED),
        ("held", AttemptOutcome.AUTHORIZED),
        ("reserved", AttemptOutcome.PENDING),
        ("out_of_stock", AttemptOutcome.FAILED),
    ],
)
def test_an_attempt_counts_as_declined_only_when_the_issuer_refused_the_card(
    end: str, outcome: AttemptOutcome
) -> None:
    orders = {
        "declined": lambda: _reserved(Decision.ALLOW).declined(
            FailureReason.INSUFFICIENT_FUNDS, NOW
        ),
        "denied": lambda: _reserved(Decision.DENY).denied(NOW),
        "held": lambda: _reserved(Decision.REVIEW).authorized("a", NOW),
        "reserved": lambda: _reserved(),
        "out_of_stock": lambda: _reserved().failed("OUT_OF_STOCK", NOW),
    }

    assert attempt_outcome(orders[end]()) is outcome


# Found by `make mutants`: the exact edges of the history and new-account rules.


def test_an_amount_of_exactly_the_history_minimum_can_count_as_far_above() -> None:
    tiny_history = replace(ORDINARY, largest_confirmed=100, amount=POLICY.history_min_amount)

    assert rules_of(tiny_history) == {Rule.AMOUNT_ABOVE_HISTORY}


def test_an_account_exactly_as_old_as_the_new_account_age_is_no_longer_new() -> None:
    newcomer = ScreeningFacts(amount=POLICY.new_account_high_amount)
    just_under = NOW - POLICY.new_account_age + timedelta(seconds=1)

    assert rules_of(replace(newcomer, customer_since=just_under)) == {Rule.NEW_ACCOUNT_HIGH_AMOUNT}
    assert rules_of(replace(newcomer, customer_since=NOW - POLICY.new_account_age)) == set()
