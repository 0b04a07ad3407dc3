"""The false-positive budget of fraud screening: ordinary shoppers stay ALLOW, attacks don't.

The population is tests/support/fraud_population.py's (bench/fraud.py prints the same figures
for a larger one). At the default settings at most 1 % of ordinary checkouts may be held or
denied; every scripted attack pattern must be caught in nearly every campaign.
"""

from __future__ import annotations

import pytest

from payment_svc.screening import Screening, ScreeningPolicy
from tests.support.fraud_population import (
    ACCOUNT_TAKEOVER,
    CARD_CYCLING,
    CARD_TESTING,
    NEW_ACCOUNT_SPREE,
    NORMAL,
    Attempt,
    account_takeover,
    card_cycling,
    card_testing,
    new_account_spree,
    rates,
    replay,
    shoppers,
)

FP_BUDGET = 0.01
Screened = list[tuple[Attempt, Screening]]


@pytest.fixture(scope="module")
def screened() -> Screened:
    normal = shoppers(2_000, seed=11)
    attacks = [
        *card_testing(20, seed=12),
        *new_account_spree(20, seed=13),
        *card_cycling(20, seed=14),
        *account_takeover(normal, 20, seed=15),
    ]
    return replay([*normal, *attacks], ScreeningPolicy())


def test_at_most_one_percent_of_ordinary_checkouts_are_held_or_denied(screened: Screened) -> None:
    normal = rates(screened, NORMAL)

    assert normal.attempts > 5_000
    assert normal.attempt_rate <= FP_BUDGET, f"false positives: {normal}"


@pytest.mark.parametrize(
    "pattern", [CARD_TESTING, NEW_ACCOUNT_SPREE, CARD_CYCLING, ACCOUNT_TAKEOVER]
)
def test_every_attack_pattern_is_caught_in_nearly_every_campaign(
    screened: Screened,
    pattern: str,
) -> None:
    caught = rates(screened, pattern)

    assert caught.campaigns >= 15
    assert caught.campaign_rate >= 0.9, caught


def test_card_testing_is_denied_after_its_first_few_declines(screened: Screened) -> None:
    caught = rates(screened, CARD_TESTING)

    assert caught.denied / caught.attempts >= 0.75, caught
