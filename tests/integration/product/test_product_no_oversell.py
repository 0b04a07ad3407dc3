"""No oversell without the database's help: the reservation's own guard refuses, not the CHECK.

``ck_products_available`` (available >= 0) backs the reservation code up, so with it in place
a broken guard would only turn OUT_OF_STOCK into a constraint error. Here the constraint is off
(dropped on PostgreSQL, ignored on SQLite) and concurrent reservations must still stop at the
stock, each refusal an OUT_OF_STOCK.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from sqlalchemy import event, text, update

from common.db import Database
from common.migrations import script_location_of, upgrade_to_head
from product_svc.store import products
from tests.integration.product.conftest import Clients
from tests.integration.product.product_helpers import reason_of
from tests.integration.product.test_product_inventory import order, reserve_request, stock

_ADD_BACK = "ALTER TABLE products ADD CONSTRAINT ck_products_available CHECK (available >= 0)"


def _ignore_check_constraints(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA ignore_check_constraints = ON")
    cursor.close()


# Replaces the conftest fixture of the same name for this module only.
@pytest.fixture
async def product_db(db_url: str) -> AsyncIterator[Database]:
    """The conftest's database, minus the CHECK constraint on ``available`` (restored after)."""
    await upgrade_to_head(db_url, script_location_of("product"))
    database = Database.from_url(db_url)
    postgres = database.engine.dialect.name == "postgresql"
    if postgres:
        async with database.engine.begin() as connection:
            await connection.execute(
                text("ALTER TABLE products DROP CONSTRAINT ck_products_available")
            )
    else:
        event.listen(database.engine.sync_engine, "connect", _ignore_check_constraints)
    yield database
    if postgres:  # the PostgreSQL database is the session's: leave it as it was
        async with database.engine.begin() as connection:
            await connection.execute(text(f"{_ADD_BACK} NOT VALID"))
    await database.dispose()


async def test_the_constraint_is_really_off_in_this_module(
    clients: Clients, product_db: Database
) -> None:
    category = await clients.category()
    scratch = await clients.product(category.id, stock=0)

    async with product_db.session() as session:
        await session.execute(
            update(products).where(products.c.id == scratch.id).values(available=-1)
        )

    assert (await stock(clients, scratch.id))[0] == -1


async def test_concurrent_reservations_stop_at_the_stock_with_out_of_stock_not_a_db_error(
    clients: Clients,
) -> None:
    category = await clients.category()
    product = await clients.product(category.id, stock=30)

    async def attempt() -> str:
        try:
            await clients.inventory.ReserveStock(
                reserve_request(order(), (product.id, 1)), metadata=clients.service
            )
        except grpc.aio.AioRpcError as error:
            return reason_of(error) or str(error.code())
        return "RESERVED"

    outcomes = await asyncio.gather(*(attempt() for _ in range(100)))

    assert outcomes.count("RESERVED") == 30
    assert set(outcomes) - {"RESERVED"} == {"OUT_OF_STOCK"}, set(outcomes)
    assert await stock(clients, product.id) == (0, 30)


async def test_an_order_larger_than_the_stock_is_out_of_stock_and_moves_nothing(
    clients: Clients,
) -> None:
    category = await clients.category()
    product = await clients.product(category.id, stock=2)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await clients.inventory.ReserveStock(
            reserve_request(order(), (product.id, 3)), metadata=clients.service
        )

    assert reason_of(refused.value) == "OUT_OF_STOCK"
    assert await stock(clients, product.id) == (2, 0)
