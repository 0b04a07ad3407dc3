"""The store's screening counts are the ones bench/fraud.py simulates, on both backends.

A small generated population (ordinary shoppers, a card-testing burst, a card cycler) goes
into the real tables in time order, each attempt's order moved to the end its screening and
its issuer give it; before each, ``UnitOfWork.screening_facts`` must equal
``tests.support.fraud_population.Ledger.facts``. So the false-positive figures of the
simulation are those of the service.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from common.money import Money
from payment_svc.domain import (
    CardBrand,
    CardOnFile,
    FailureReason,
    OrderLine,
    RequestedItem,
    new_order,
)
from payment_svc.screening import Decision, ScreeningPolicy, screen
from payment_svc.store import PaymentStore
from tests.support.fraud_population import (
    NORMAL,
    Attempt,
    Ledger,
    card_cycling,
    card_testing,
    shoppers,
)

CARD = CardOnFile("tok", CardBrand.VISA, "4242", 12, 2099, "Ada")


def _unique(attempts: list[Attempt], run: str) -> list[Attempt]:
    """The population with ids of this run only: PostgreSQL is shared by the session."""
    return [
        Attempt(
            a.time,
            f"{run}-{a.user}",
            f"{run}-{a.card}",
            f"{run}-{a.address}" if a.address else "",
            a.amount,
            a.declined,
            a.pattern,
            a.campaign,
        )
        for a in attempts
    ]


async def test_the_stores_sliding_window_counts_match_the_simulation(
    store: PaymentStore,
) -> None:
    run = uuid.uuid4().hex[:8]
    population = _unique(
        [
            *shoppers(60, seed=21, days=3),
            *card_testing(1, seed=22),
            *card_cycling(1, seed=23),
        ],
        run,
    )
    policy = ScreeningPolicy()
    ledger = Ledger(policy)
    compared = 0
    for attempt in sorted(population, key=lambda a: a.time)[:220]:
        order = new_order(
            f"{run}-{compared}",
            f"{run}-pay-{compared}",
            attempt.user,
            [RequestedItem("p", 1)],
            CARD,
            attempt.time,
        )
        async with store.unit_of_work() as uow:
            await uow.add_order(order, "tok")
            await uow.add_attempt(order, attempt.card, attempt.address)
        priced = order.priced(
            [OrderLine("p", 1, "SKU", "P", Money(attempt.amount, "USD"))], attempt.time
        )
        async with store.unit_of_work() as uow:
            assert await uow.save_order(priced, expected=order.status)
            facts = await uow.screening_facts(priced, policy, attempt.time)

        assert facts == ledger.facts(attempt), attempt

        screening = screen(facts, policy, attempt.time)
        ledger.record(attempt, screening)
        screened = priced.screened(screening, attempt.time)
        later = attempt.time + timedelta(seconds=1)
        if screening.decision is Decision.DENY:
            end = screened.denied(later)
        elif attempt.declined:
            end = screened.declined(FailureReason.CARD_DECLINED, later)
        elif screening.decision is Decision.REVIEW and attempt.pattern != NORMAL:
            end = screened.authorized("auth", later).rejected("SCREENING_REJECTED", later)
        else:
            authorized = screened.authorized("auth", later)
            end = (
                (authorized.approved(later) if authorized.status.value == "ON_HOLD" else authorized)
                .captured()
                .confirmed(later)
            )
        async with store.unit_of_work() as uow:
            assert await uow.save_order(end, expected=priced.status)
        compared += 1

    assert compared >= 120
