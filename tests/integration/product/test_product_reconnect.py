"""PostgreSQL restarted under a running product service: the next requests still succeed."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from common.db import Database
from common.migrations import script_location_of, upgrade_to_head
from common.outbox import Outbox
from common.pagination import PageTokens
from localrun.postgres import database_of_its_own
from product_svc.service import Catalog
from product_svc.store import CatalogStore

pytestmark = pytest.mark.postgres


@pytest.fixture
async def own_url(postgres_url: str) -> AsyncIterator[str]:
    """A product database of this test alone, so killing its connections touches no other."""
    async with database_of_its_own(postgres_url, "mc_test_product_reconnect") as url:
        await upgrade_to_head(url, script_location_of("product"))
        yield url


async def test_use_cases_succeed_right_after_every_pooled_connection_was_killed(
    own_url: str,
) -> None:
    database = Database.from_url(own_url, application_name="product")
    operator = Database.from_url(own_url)
    catalog = Catalog(
        CatalogStore(database, Outbox("product")),
        PageTokens(secrets.token_bytes(32)),
        reservation_ttl_s=900,
        default_low_stock_threshold=5,
    )
    try:
        # Several requests at once leave several connections in the pool.
        await asyncio.gather(
            *(catalog.create_category(f"Before {i}", f"b-{i}", "") for i in range(4))
        )
        async with operator.session() as session:
            killed = await session.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            assert len(killed.all()) >= 1

        created = await asyncio.gather(
            *(catalog.create_category(f"After {i}", f"a-{i}", "") for i in range(4))
        )
        listed, _ = await catalog.list_categories(20, "")
    finally:
        await operator.dispose()
        await database.dispose()

    assert {c.slug for c in created} <= {c.slug for c in listed}
    assert len(listed) == 8
