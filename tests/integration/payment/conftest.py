"""Payment fixtures: a migrated database on each backend and the use cases on fake ports."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import delete, make_url

from common.consumer import EventConsumers, RetryPolicy
from common.db import Database
from common.dead_letters import DeadLetterStore
from common.inbox import inbox_table
from common.migrations import script_location_of, upgrade_to_head
from common.outbox import Outbox
from common.pagination import PageTokens
from payment_svc import events
from payment_svc.analytics.service import ORDERS_CONSUMER, PAYMENTS_CONSUMER, SalesAnalytics
from payment_svc.analytics.store import MODEL_TABLES, AnalyticsStore
from payment_svc.provider import ResilientProvider, SandboxProvider
from payment_svc.saga import CheckoutSaga
from payment_svc.service import PaymentPolicy, Payments
from payment_svc.store import PaymentStore
from tests.support.payment_fakes import FakeInventory


@pytest.fixture(scope="session")
def migrated_payment_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with the payment schema at head, migrated once per session."""
    path = tmp_path_factory.mktemp("payment-schema") / "payment.db"
    migrate = upgrade_to_head(f"sqlite+aiosqlite:///{path}", script_location_of("payment"))
    # A thread of its own has no event loop, so asyncio.run cannot disturb pytest-asyncio's.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, migrate).result()
    return path


@pytest.fixture
async def payment_db(db_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    """The payment schema, migrated, on a fresh SQLite file or the session's PostgreSQL.

    A SQLite test starts from a copy of one migrated file: running the migrations for each
    test was half the time of a checkout test, and ``make mutants`` runs these tests again for
    every mutant of the saga.
    """
    sqlite_file = make_url(db_url).database if db_url.startswith("sqlite") else None
    if sqlite_file:
        shutil.copyfile(request.getfixturevalue("migrated_payment_sqlite"), sqlite_file)
    database = Database.from_url(db_url)
    if not sqlite_file:
        await upgrade_to_head(database.engine, script_location_of("payment"))
    yield database
    await database.dispose()


@pytest.fixture
def inventory() -> FakeInventory:
    return FakeInventory()


@pytest.fixture
def store(payment_db: Database) -> PaymentStore:
    return PaymentStore(payment_db, Outbox("payment"))


@pytest.fixture
def payments(payment_db: Database, store: PaymentStore, inventory: FakeInventory) -> Payments:
    provider = ResilientProvider(SandboxProvider(payment_db), attempts=3, backoff_s=0.001)
    saga = CheckoutSaga(store, inventory, provider, inventory_backoff_s=0.001)
    return Payments(
        store,
        saga,
        provider,
        policy=PaymentPolicy(replay_wait_s=10, replay_poll_s=0.01, recovery_grace_s=0),
    )


@pytest.fixture
async def analytics(payment_db: Database) -> SalesAnalytics:
    # PostgreSQL is the session's database: start from an empty read model and inbox.
    async with payment_db.session() as session:
        for table in MODEL_TABLES:
            await session.execute(delete(table))
        inbox = inbox_table("payment")
        await session.execute(
            delete(inbox).where(inbox.c.consumer.in_([ORDERS_CONSUMER, PAYMENTS_CONSUMER]))
        )
    return SalesAnalytics(AnalyticsStore(payment_db, Outbox("payment")))


@pytest.fixture
def consumers(
    payments: Payments, payment_db: Database, analytics: SalesAnalytics
) -> EventConsumers:
    return EventConsumers.build(
        DeadLetterStore(payment_db, "payment"),
        events.subscriptions(payments, analytics),
        RetryPolicy(attempts=2, first_delay_s=0.01),
        PageTokens(b"payment-analytics-test-key-01234"),
    )
