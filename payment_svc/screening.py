"""Fraud screening of a checkout: explainable rules over counts and amounts, no I/O.

Each rule that fires adds its score and a reason code; the sum decides ALLOW, REVIEW or DENY
against the policy's cut-offs. The inputs (``ScreeningFacts``) are counts the store took over
sliding windows of payment_svc's own checkout attempts and orders: no card number, no name,
only a keyed hash of the card (``card_fingerprint``), the user id and the client address.

Plain Python only: no gRPC, SQL, Kafka or HTTP here (tests/unit/test_architecture.py).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class Decision(StrEnum):
    """What the screening lets a checkout do; names match ``SCREENING_DECISION_*``."""

    ALLOW = "ALLOW"
    REVIEW = "REVIEW"
    DENY = "DENY"


class Rule(StrEnum):
    """The reason codes a screening gives, one per rule that fired."""

    USER_VELOCITY = "USER_VELOCITY"
    CARD_VELOCITY = "CARD_VELOCITY"
    ADDRESS_VELOCITY = "ADDRESS_VELOCITY"
    DECLINE_RUN = "DECLINE_RUN"
    AMOUNT_ABOVE_HISTORY = "AMOUNT_ABOVE_HISTORY"
    NEW_ACCOUNT_HIGH_AMOUNT = "NEW_ACCOUNT_HIGH_AMOUNT"
    MANY_CARDS = "MANY_CARDS"


class AttemptOutcome(StrEnum):
    """How a recorded checkout attempt ended, as far as screening cares."""

    PENDING = "PENDING"  # screened or not yet, no answer from the provider yet
    AUTHORIZED = "AUTHORIZED"
    DECLINED = "DECLINED"  # the issuer refused the card (declined, short of funds)
    DENIED = "DENIED"  # refused by screening (or rejected by an administrator)
    FAILED = "FAILED"  # ended for another reason (stock, processor error)


def card_fingerprint(number: str, key: bytes) -> str:
    """A keyed hash (HMAC-SHA256) of the card number: the same card gives the same value.

    Keyed so that the stored value cannot be reversed by hashing every possible number (a card
    number has too little entropy for a plain hash to protect it). The number goes no further.
    """
    return hmac.new(key, number.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class ScreeningPolicy:
    """Windows, thresholds, scores and cut-offs of the rules (settings: ``MC_FRAUD_*``).

    A rule fires when its count reaches its threshold; counts exclude the attempt screened.
    """

    velocity_window: timedelta = timedelta(minutes=10)
    max_attempts_per_user: int = 5
    max_attempts_per_card: int = 5
    max_attempts_per_address: int = 20
    velocity_score: int = 30
    decline_window: timedelta = timedelta(hours=1)
    max_declines: int = 3
    decline_score: int = 80
    # An amount this many times the user's largest confirmed order, and at least min_amount,
    # once there is a history (one order is none: bench/fraud.py halved false positives so).
    history_factor: float = 5.0
    history_min_orders: int = 2
    history_min_amount: int = 20_000
    history_score: int = 50
    # A customer whose first order is younger than this, buying at least this much.
    new_account_age: timedelta = timedelta(days=1)
    new_account_high_amount: int = 50_000
    new_account_score: int = 50
    cards_window: timedelta = timedelta(days=1)
    max_cards_per_user: int = 3
    cards_score: int = 50
    review_score: int = 50
    deny_score: int = 80

    def __post_init__(self) -> None:
        if not 0 < self.review_score <= self.deny_score:
            raise ValueError("the review score must be positive and at most the deny score")


@dataclass(frozen=True)
class ScreeningFacts:
    """What the rules look at, counted over the policy's windows before this attempt."""

    amount: int  # the order's total in minor units
    user_attempts: int = 0
    card_attempts: int = 0
    address_attempts: int = 0  # 0 when the client address is unknown
    user_declines: int = 0
    card_declines: int = 0
    address_declines: int = 0
    user_cards: int = 1  # distinct cards of the user in the cards window, this one included
    confirmed_orders: int = 0  # the user's confirmed orders before this one, same currency
    largest_confirmed: int = 0  # the largest of those, in minor units
    customer_since: datetime | None = None  # the user's first order (this one if none before)


@dataclass(frozen=True)
class Finding:
    """One rule that fired: its code, its score and what it saw (for administrators)."""

    rule: Rule
    score: int
    detail: str


@dataclass(frozen=True)
class Screening:
    """A checkout's screening as recorded on its order."""

    decision: Decision
    score: int
    findings: tuple[Finding, ...] = ()

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(finding.rule.value for finding in self.findings)


def _minutes(window: timedelta) -> str:
    minutes = int(window.total_seconds() // 60)
    return f"{minutes // 60} h" if minutes % 60 == 0 and minutes >= 60 else f"{minutes} min"


def screen(facts: ScreeningFacts, policy: ScreeningPolicy, now: datetime) -> Screening:
    """The decision on one checkout: every rule that fires, their total score, the verdict."""
    found: list[Finding] = []
    velocity = _minutes(policy.velocity_window)
    for rule, count, limit, whose in (
        (Rule.USER_VELOCITY, facts.user_attempts, policy.max_attempts_per_user, "this user"),
        (Rule.CARD_VELOCITY, facts.card_attempts, policy.max_attempts_per_card, "this card"),
        (
            Rule.ADDRESS_VELOCITY,
            facts.address_attempts,
            policy.max_attempts_per_address,
            "this client address",
        ),
    ):
        if count >= limit:
            found.append(
                Finding(rule, policy.velocity_score, f"{count} attempts by {whose} in {velocity}")
            )
    # Card testing: a run of refused cards from one user, card or address.
    declines = max(facts.user_declines, facts.card_declines, facts.address_declines)
    if declines >= policy.max_declines:
        whose = (
            "this client address"
            if declines == facts.address_declines
            else "this card"
            if declines == facts.card_declines
            else "this user"
        )
        found.append(
            Finding(
                Rule.DECLINE_RUN,
                policy.decline_score,
                f"{declines} declined attempts by {whose} in {_minutes(policy.decline_window)}",
            )
        )
    if (
        facts.confirmed_orders >= policy.history_min_orders
        and facts.amount >= policy.history_min_amount
        and facts.amount > policy.history_factor * facts.largest_confirmed
    ):
        found.append(
            Finding(
                Rule.AMOUNT_ABOVE_HISTORY,
                policy.history_score,
                f"amount {facts.amount} is over {policy.history_factor:g}x the largest of "
                f"{facts.confirmed_orders} confirmed orders ({facts.largest_confirmed})",
            )
        )
    since = facts.customer_since or now
    if now - since < policy.new_account_age and facts.amount >= policy.new_account_high_amount:
        found.append(
            Finding(
                Rule.NEW_ACCOUNT_HIGH_AMOUNT,
                policy.new_account_score,
                f"amount {facts.amount} from a customer whose first order is under "
                f"{_minutes(policy.new_account_age)} old",
            )
        )
    if facts.user_cards > policy.max_cards_per_user:
        found.append(
            Finding(
                Rule.MANY_CARDS,
                policy.cards_score,
                f"{facts.user_cards} distinct cards for this user in "
                f"{_minutes(policy.cards_window)}",
            )
        )
    score = sum(finding.score for finding in found)
    if score >= policy.deny_score:
        decision = Decision.DENY
    elif score >= policy.review_score:
        decision = Decision.REVIEW
    else:
        decision = Decision.ALLOW
    return Screening(decision, score, tuple(found))
