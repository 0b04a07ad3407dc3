"""Fraud screening's false-positive rate on ordinary shoppers and its catch rate per attack.

A generated month of ordinary customers (tests/support/fraud_population.py: one to three
cards, home, office and mobile-carrier addresses shared through NAT, sessions of a few orders,
log-normal amounts with the occasional big basket, now and then a card short of funds) is
screened together with scripted attacks: card testing from one address, a new account's big
basket, one account cycling cards, a taken-over account spending far above its history. Every
attempt goes through ``payment_svc.screening.screen`` at the default settings (or those
given), in time order, on the sliding-window counts the store keeps.

Printed: per pattern the attempts, the share held or denied (for ordinary shoppers: the
false-positive rate, also per shopper), the share denied, and the share of campaigns caught at
least once; then which rules the false positives came from. No service runs: this measures
the rules, not the saga (the store's counts are checked against the simulation by
tests/integration/payment/test_fraud_population_store.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from payment_svc.screening import Decision, ScreeningPolicy
from tests.support.fraud_population import (
    NORMAL,
    PATTERNS,
    account_takeover,
    card_cycling,
    card_testing,
    new_account_spree,
    rates,
    replay,
    shoppers,
)

RESULTS_FILE = Path("var/bench/fraud.json")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fraud", description=__doc__)
    parser.add_argument("--shoppers", type=int, default=5_000, help="ordinary customers")
    parser.add_argument("--campaigns", type=int, default=50, help="campaigns per attack pattern")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--review-score", type=int, default=ScreeningPolicy().review_score, help="cut-off"
    )
    parser.add_argument("--deny-score", type=int, default=ScreeningPolicy().deny_score)
    options, _unknown = parser.parse_known_args(argv)
    policy = ScreeningPolicy(review_score=options.review_score, deny_score=options.deny_score)

    started = time.perf_counter()
    normal = shoppers(options.shoppers, seed=options.seed)
    seed = options.seed * 100
    attacks = [
        *card_testing(options.campaigns, seed=seed + 1),
        *new_account_spree(options.campaigns, seed=seed + 2),
        *card_cycling(options.campaigns, seed=seed + 3),
        *account_takeover(normal, options.campaigns, seed=seed + 4),
    ]
    screened = replay([*normal, *attacks], policy)
    elapsed = time.perf_counter() - started

    header = f"{'pattern':<18} {'attempts':>8} {'flagged':>8} {'denied':>7} {'campaigns':>9}"
    print(header)  # noqa: T201
    results = []
    for pattern in (NORMAL, *PATTERNS):
        found = rates(screened, pattern)
        results.append({**asdict(found), "attempt_rate": found.attempt_rate})
        unit = "shoppers" if pattern == NORMAL else "caught"
        print(  # noqa: T201
            f"{pattern:<18} {found.attempts:>8} {found.attempt_rate:>8.2%} "
            f"{found.denied / max(found.attempts, 1):>7.2%} "
            f"{found.campaign_rate:>9.2%} ({unit}: {found.campaigns_flagged}/{found.campaigns})"
        )
    false_positives = Counter(
        rule
        for attempt, screening in screened
        if attempt.pattern == NORMAL and screening.decision is not Decision.ALLOW
        for rule in screening.reasons
    )
    normal_rates = rates(screened, NORMAL)
    print(  # noqa: T201
        f"false-positive rate: {normal_rates.attempt_rate:.2%} of ordinary checkouts, "
        f"{normal_rates.campaign_rate:.2%} of shoppers held or denied at least once; "
        f"by rule: {dict(false_positives.most_common())}"
    )
    print(f"{len(screened)} checkouts screened in {elapsed:.1f} s")  # noqa: T201
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
