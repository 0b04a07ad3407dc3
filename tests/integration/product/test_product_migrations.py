"""Migration 0004 turns the catalog's microsecond columns into DateTimes without losing a value."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from common.clock import from_micros, to_micros
from common.db import Database
from common.migrations import alembic_config, script_location_of
from common.money import Money
from common.outbox import Outbox
from common.pagination import PageTokens
from product_svc.service import Catalog
from product_svc.store import CatalogStore
from tests.support.schemas import empty_database

# 2025-12-01T12:00:00.123457Z: a value a float of seconds could not carry exactly.
CREATED_US = 1_764_590_400_123_457
EXPIRES_US = CREATED_US + 900_000_001


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on an empty database: on PostgreSQL, a schema of this test's own."""
    async with empty_database(db_url, "mig") as engine:
        yield engine


async def migrate(engine: AsyncEngine, revision: str, *, down: bool = False) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config(script_location_of("product"))
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(run)


async def execute(engine: AsyncEngine, statement: str, **values: object) -> list[Any]:
    async with engine.begin() as connection:
        result = await connection.execute(text(statement), values)
        return list(result.all()) if result.returns_rows else []


def catalog_on(engine: AsyncEngine) -> Catalog:
    return Catalog(CatalogStore(Database(engine), Outbox("product")), PageTokens(b"k" * 32))


async def catalog_at_0003(engine: AsyncEngine) -> None:
    """A category, a product with a price change and an adjustment, and a reservation."""
    await migrate(engine, "0003")
    for statement in (
        "INSERT INTO product_categories (id, name, slug, create_time_us)"
        " VALUES ('c1', 'Tea', 'tea', :t)",
        "INSERT INTO products (id, sku, name, description, category_id, price_amount,"
        " price_currency, available, reserved, low_stock_threshold, archived, search_name,"
        " search_body, create_time_us, update_time_us, version) VALUES ('p1', 'KET-1',"
        " 'Steel kettle', 'Boils water', 'c1', 3500, 'USD', 4, 1, 0, false, 'steel kettle',"
        " 'boils water', :t, :t, 1)",
        "INSERT INTO product_price_changes (product_id, amount, currency, changed_by,"
        " change_time_us) VALUES ('p1', 3500, 'USD', 'admin-1', :t)",
        "INSERT INTO product_stock_adjustments (product_id, delta, reason, adjusted_by,"
        " adjust_time_us) VALUES ('p1', 5, 'delivery', 'admin-1', :t)",
        "INSERT INTO stock_reservations (order_id, status, expire_time_us, create_time_us)"
        " VALUES ('o1', 'ACTIVE', :e, :t)",
        "INSERT INTO stock_reservation_items (order_id, position, product_id, sku, name,"
        " quantity, unit_amount, unit_currency) VALUES ('o1', 0, 'p1', 'KET-1',"
        " 'Steel kettle', 1, 3500, 'USD')",
    ):
        await execute(engine, statement, t=CREATED_US, e=EXPIRES_US)


async def test_every_time_keeps_its_exact_instant_and_search_keeps_working(
    engine: AsyncEngine,
) -> None:
    await catalog_at_0003(engine)

    await migrate(engine, "head")

    catalog = catalog_on(engine)
    kettle = await catalog.get_product("p1")
    history, _ = await catalog.price_history("p1", None, "")
    found, _ = await catalog.search(
        q="kettle", category_id="", min_price=None, max_price=None, in_stock=None,
        order_by="", requested_size=None, page_token="",
    )  # fmt: skip
    released = await catalog.release("o1")
    assert to_micros(kettle.create_time) == to_micros(kettle.update_time) == CREATED_US
    assert [to_micros(change.change_time) for change in history] == [CREATED_US]
    assert [product.id for product in found] == ["p1"]
    assert released.expire_time == from_micros(EXPIRES_US)


async def test_products_created_after_the_migration_are_indexed_and_ordered(
    engine: AsyncEngine,
) -> None:
    await catalog_at_0003(engine)
    await migrate(engine, "head")
    catalog = catalog_on(engine)

    newer = await catalog.create_product(
        sku="KET-2", name="Glass kettle", description="", category_id="c1",
        price=Money(4000, "USD"), stock=1, low_stock_threshold=None, actor="admin-1",
    )  # fmt: skip
    page, token = await catalog.search(
        q="kettle", category_id="", min_price=None, max_price=None, in_stock=None,
        order_by="-create_time", requested_size=1, page_token="",
    )  # fmt: skip
    rest, _ = await catalog.search(
        q="kettle", category_id="", min_price=None, max_price=None, in_stock=None,
        order_by="-create_time", requested_size=1, page_token=token,
    )  # fmt: skip

    assert [p.id for p in page + rest] == [newer.id, "p1"]


async def test_stock_still_cannot_go_negative_after_the_rebuild(engine: AsyncEngine) -> None:
    await catalog_at_0003(engine)
    await migrate(engine, "head")

    with pytest.raises(IntegrityError):
        await execute(engine, "UPDATE products SET available = -1 WHERE id = 'p1'")


async def test_a_downgrade_gives_back_the_microseconds(engine: AsyncEngine) -> None:
    await catalog_at_0003(engine)
    await migrate(engine, "head")

    await migrate(engine, "0003", down=True)

    rows = await execute(
        engine,
        "SELECT p.create_time_us, p.update_time_us, c.change_time_us, r.expire_time_us"
        " FROM products p JOIN product_price_changes c ON c.product_id = p.id"
        " JOIN stock_reservations r ON r.order_id = 'o1'",
    )
    assert [tuple(row) for row in rows] == [(CREATED_US, CREATED_US, CREATED_US, EXPIRES_US)]


async def test_0008_gives_the_counters_of_existing_sales_their_products_category(
    engine: AsyncEngine,
) -> None:
    await catalog_at_0003(engine)
    await migrate(engine, "0007")
    await execute(
        engine,
        "INSERT INTO product_purchases (product_id, orders) VALUES ('p1', 3), ('gone', 2)",
    )

    await migrate(engine, "0008")

    rows = await execute(
        engine, "SELECT product_id, category_id FROM product_purchases ORDER BY product_id"
    )
    assert [tuple(row) for row in rows] == [("gone", None), ("p1", "c1")]
    await migrate(engine, "0007", down=True)
    assert await execute(engine, "SELECT product_id, orders FROM product_purchases") != []
