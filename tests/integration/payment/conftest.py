"""Payment fixtures: a migrated database on each backend and the use cases on fake ports."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import delete

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


@pytest.fixture
async def payment_db(db_url: str) -> AsyncIterator[Database]:
    """The payment schema, migrated, on a fresh SQLite file or the session's PostgreSQL."""
    database = Database.from_url(db_url)
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
