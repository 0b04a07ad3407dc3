"""Synthetic checkout traffic for fraud screening: ordinary shoppers and scripted attacks.

``shoppers`` makes a month of ordinary customers: most with one card, some with two or three;
home addresses, but also offices and mobile carriers whose one NAT address many customers
share; sessions of one to three orders minutes apart; amounts log-normal around 45.00 with
the occasional big basket; now and then a card short of funds and a retry with another card.
The attack generators script what the rules are for: card testing, a new account's big
basket, one account cycling cards, a taken-over account spending far above its history.

``replay`` screens every attempt in time order with ``payment_svc.screening.screen`` on the
counts ``Ledger`` keeps, which follow the store's queries (``UnitOfWork.screening_facts``):
counts over ``[now - window, now]`` excluding the attempt itself, distinct cards including it,
history from the user's confirmed orders, the customer's age from their first order.
``tests/integration/payment/test_fraud_population_store.py`` checks the two agree.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from payment_svc.screening import (
    Decision,
    Screening,
    ScreeningFacts,
    ScreeningPolicy,
    screen,
)

START = datetime(2026, 11, 1, tzinfo=UTC)
NORMAL = "normal"
CARD_TESTING = "card_testing"
NEW_ACCOUNT_SPREE = "new_account_spree"
CARD_CYCLING = "card_cycling"
ACCOUNT_TAKEOVER = "account_takeover"
PATTERNS = (CARD_TESTING, NEW_ACCOUNT_SPREE, CARD_CYCLING, ACCOUNT_TAKEOVER)


@dataclass(frozen=True)
class Attempt:
    """One checkout as the screening sees it; ``declined``: what the issuer would answer."""

    time: datetime
    user: str
    card: str
    address: str
    amount: int
    declined: bool = False
    pattern: str = NORMAL
    campaign: str = ""


@dataclass
class _Index:
    """Attempt times (and outcomes) of one user, card or address, in time order."""

    times: list[datetime] = field(default_factory=list)
    declined: list[datetime] = field(default_factory=list)

    def since(self, moment: datetime, *, declines: bool = False) -> int:
        times = self.declined if declines else self.times
        return len(times) - bisect_left(times, moment)


class Ledger:
    """What the store would hold after each screened attempt, kept for the next one."""

    def __init__(self, policy: ScreeningPolicy) -> None:
        self.policy = policy
        self._by: dict[tuple[str, str], _Index] = defaultdict(_Index)
        self._cards: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
        self._first: dict[str, datetime] = {}
        self._confirmed: dict[str, list[int]] = defaultdict(list)

    def facts(self, attempt: Attempt) -> ScreeningFacts:
        now, policy = attempt.time, self.policy
        velocity, declines = now - policy.velocity_window, now - policy.decline_window
        user = self._by["user", attempt.user]
        card = self._by["card", attempt.card]
        address = self._by["address", attempt.address] if attempt.address else _Index()
        since = now - policy.cards_window
        cards = {c for t, c in self._cards[attempt.user] if t >= since} | {attempt.card}
        confirmed = self._confirmed[attempt.user]
        return ScreeningFacts(
            amount=attempt.amount,
            user_attempts=user.since(velocity),
            card_attempts=card.since(velocity),
            address_attempts=address.since(velocity),
            user_declines=user.since(declines, declines=True),
            card_declines=card.since(declines, declines=True),
            address_declines=address.since(declines, declines=True),
            user_cards=len(cards),
            confirmed_orders=len(confirmed),
            largest_confirmed=max(confirmed, default=0),
            customer_since=self._first.get(attempt.user, now),
        )

    def record(self, attempt: Attempt, screening: Screening) -> None:
        """The attempt's row and, when it was sold, the user's confirmed order.

        A held ordinary shopper is taken as approved by the reviewer, a held attacker as
        rejected; a denied attempt never reaches the issuer, so it is no decline.
        """
        issuer_declined = screening.decision is not Decision.DENY and attempt.declined
        keys = [("user", attempt.user), ("card", attempt.card)]
        if attempt.address:
            keys.append(("address", attempt.address))
        for key in keys:
            self._by[key].times.append(attempt.time)
            if issuer_declined:
                self._by[key].declined.append(attempt.time)
        self._cards[attempt.user].append((attempt.time, attempt.card))
        self._first.setdefault(attempt.user, attempt.time)
        sold = not attempt.declined and (
            screening.decision is Decision.ALLOW
            or (screening.decision is Decision.REVIEW and attempt.pattern == NORMAL)
        )
        if sold:
            self._confirmed[attempt.user].append(attempt.amount)


def replay(
    attempts: Iterable[Attempt], policy: ScreeningPolicy | None = None
) -> list[tuple[Attempt, Screening]]:
    """Every attempt screened in time order, as a single payment database would see them."""
    ledger = Ledger(policy or ScreeningPolicy())
    screened = []
    for attempt in sorted(attempts, key=lambda a: a.time):
        screening = screen(ledger.facts(attempt), ledger.policy, attempt.time)
        ledger.record(attempt, screening)
        screened.append((attempt, screening))
    return screened


def _amount(rng: random.Random, median: float = 4_500, sigma: float = 0.8) -> int:
    return max(100, int(math.exp(rng.gauss(math.log(median), sigma))))


def shoppers(
    count: int, *, seed: int = 1, days: int = 30, start: datetime = START
) -> list[Attempt]:
    """A month of ordinary customers' checkouts."""
    rng = random.Random(seed)
    offices = [f"198.51.100.{n}" for n in range(20)]  # each a NAT for dozens of colleagues
    carriers = [f"203.0.113.{n}" for n in range(5)]  # mobile carrier-grade NAT
    attempts: list[Attempt] = []
    for index in range(count):
        user = f"shopper-{seed}-{index}"
        cards = [f"{user}-card-{n}" for n in range(rng.choices((1, 2, 3), (80, 17, 3))[0])]
        home = f"10.{index // 250}.{index % 250}.1"
        places = [home, home, rng.choice(offices), rng.choice(carriers)]
        joined = start + timedelta(seconds=rng.uniform(0, days * 86_400 * 0.8))
        moment = joined
        end = start + timedelta(days=days)
        # A few heavy buyers; most shop a handful of times a month.
        sessions = min(12, 1 + int(rng.expovariate(1 / 2.5)))
        for _ in range(sessions):
            address = rng.choice(places)
            for _ in range(rng.choices((1, 2, 3), (75, 20, 5))[0]):
                card = cards[0] if rng.random() < 0.8 else rng.choice(cards)
                amount = _amount(rng) if rng.random() > 0.01 else _amount(rng, 30_000, 0.5)
                short = rng.random() < 0.03
                attempts.append(Attempt(moment, user, card, address, amount, declined=short))
                if short:  # short of funds: another card a minute later, or give up
                    others = [c for c in cards if c != card]
                    if others:
                        moment += timedelta(seconds=rng.uniform(30, 120))
                        attempts.append(Attempt(moment, user, others[0], address, amount))
                moment += timedelta(seconds=rng.uniform(60, 600))
            moment += timedelta(hours=rng.expovariate(1 / 72))
            if moment > end:
                break
    return attempts


def card_testing(campaigns: int, *, seed: int = 2, start: datetime = START) -> list[Attempt]:
    """Bursts of small charges on stolen cards from one address, most declined, through a
    few throwaway accounts: the attacker learns which cards work."""
    rng = random.Random(seed)
    attempts = []
    for n in range(campaigns):
        moment = start + timedelta(days=rng.uniform(1, 29))
        address = f"192.0.2.{n % 250}"
        account = f"tester-{seed}-{n}-0"
        for k in range(rng.randint(15, 40)):
            if k % rng.randint(2, 4) == 0:
                account = f"tester-{seed}-{n}-{k}"
            attempts.append(
                Attempt(
                    moment,
                    account,
                    f"stolen-{seed}-{n}-{k}",
                    address,
                    rng.randint(100, 500),
                    declined=rng.random() < 0.85,
                    pattern=CARD_TESTING,
                    campaign=f"ct-{n}",
                )
            )
            moment += timedelta(seconds=rng.uniform(5, 40))
    return attempts


def new_account_spree(campaigns: int, *, seed: int = 3, start: datetime = START) -> list[Attempt]:
    """A brand-new account buying far above what shoppers buy, with a card that works."""
    rng = random.Random(seed)
    attempts = []
    for n in range(campaigns):
        moment = start + timedelta(days=rng.uniform(1, 29))
        user = f"spree-{seed}-{n}"
        for k in range(rng.randint(1, 3)):
            attempts.append(
                Attempt(
                    moment,
                    user,
                    f"spree-card-{seed}-{n}",
                    f"192.0.2.{100 + n % 100}",
                    rng.randint(60_000, 400_000),
                    pattern=NEW_ACCOUNT_SPREE,
                    campaign=f"spree-{n}",
                )
            )
            moment += timedelta(minutes=rng.uniform(2, 20) * (k + 1))
    return attempts


def card_cycling(campaigns: int, *, seed: int = 4, start: datetime = START) -> list[Attempt]:
    """One account trying card after card until one goes through."""
    rng = random.Random(seed)
    attempts = []
    for n in range(campaigns):
        moment = start + timedelta(days=rng.uniform(1, 29))
        user = f"cycler-{seed}-{n}"
        for k in range(rng.randint(5, 10)):
            attempts.append(
                Attempt(
                    moment,
                    user,
                    f"cycled-{seed}-{n}-{k}",
                    f"198.18.{n % 250}.{k}",  # hops addresses too
                    rng.randint(3_000, 20_000),
                    declined=rng.random() < 0.6,
                    pattern=CARD_CYCLING,
                    campaign=f"cycle-{n}",
                )
            )
            moment += timedelta(minutes=rng.uniform(1, 30))
    return attempts


def account_takeover(victims: Sequence[Attempt], campaigns: int, *, seed: int = 5) -> list[Attempt]:
    """A thief in a shopper's account, with a card of their own, spending far above its history.

    ``victims``: ordinary traffic to pick accounts with a history from (not itself returned).
    """
    rng = random.Random(seed)
    histories: dict[str, list[Attempt]] = defaultdict(list)
    for attempt in victims:
        histories[attempt.user].append(attempt)
    seasoned = sorted(user for user, its in histories.items() if len(its) >= 2)
    attempts = []
    for n, user in enumerate(rng.sample(seasoned, min(campaigns, len(seasoned)))):
        last = max(a.time for a in histories[user])
        largest = max(a.amount for a in histories[user])
        attempts.append(
            Attempt(
                last + timedelta(days=1),
                user,
                f"thief-card-{seed}-{n}",
                f"192.0.2.{200 + n % 50}",
                max(25_000, largest * rng.randint(6, 15)),
                pattern=ACCOUNT_TAKEOVER,
                campaign=f"ato-{n}",
            )
        )
    return attempts


@dataclass(frozen=True)
class Rates:
    """How a pattern's attempts fared: flagged is REVIEW or DENY."""

    pattern: str
    attempts: int
    flagged: int
    denied: int
    campaigns: int
    campaigns_flagged: int

    @property
    def attempt_rate(self) -> float:
        return self.flagged / self.attempts if self.attempts else 0.0

    @property
    def campaign_rate(self) -> float:
        return self.campaigns_flagged / self.campaigns if self.campaigns else 0.0


def rates(screened: Iterable[tuple[Attempt, Screening]], pattern: str) -> Rates:
    mine = [(a, s) for a, s in screened if a.pattern == pattern]
    flagged = [(a, s) for a, s in mine if s.decision is not Decision.ALLOW]

    def group(attempt: Attempt) -> str:  # a shopper, or an attack campaign
        return attempt.user if pattern == NORMAL else attempt.campaign

    return Rates(
        pattern,
        len(mine),
        len(flagged),
        sum(1 for _, s in flagged if s.decision is Decision.DENY),
        len({group(a) for a, _ in mine}),
        len({group(a) for a, _ in flagged}),
    )
