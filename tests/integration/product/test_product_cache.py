"""The shared Redis cache of catalog reads (product_svc/catalog_cache.py): a real Redis
(MC_TEST_REDIS_URL, default 127.0.0.1:6379, a key prefix of its own per test), the real gRPC
server and gateway, on SQLite and PostgreSQL. Reads come from the cache; every write that
changes what a reader sees shows in the next read; Redis refusing or stopped leaves reads
served from the database.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import structlog
from sqlalchemy import update

from common.db import Database
from common.money import Money
from common.outbox import Outbox
from common.pagination import PageTokens
from microcommerce.product.v1 import inventory_service_pb2 as inv
from product_svc.catalog_cache import CACHE_ERRORS, CACHE_READS, RedisCatalogCache
from product_svc.domain import Product, ProductChanges
from product_svc.service import Catalog
from product_svc.store import CatalogStore, products
from tests.integration.product.conftest import Clients
from tests.support.gateway_testing import Client
from tests.support.processes import wait_for

REDIS_URL = os.environ.get("MC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex[:12]}:product:"


@pytest.fixture
async def cache(prefix: str) -> AsyncIterator[RedisCatalogCache]:
    cache = RedisCatalogCache(REDIS_URL, ttl_s=60, prefix=prefix)
    yield cache
    await cache.close()
    redis = aioredis.Redis.from_url(REDIS_URL)
    keys = [key async for key in redis.scan_iter(match=prefix + "*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


@pytest.fixture
def catalog(product_db: Database, outbox: Outbox, cache: RedisCatalogCache) -> Catalog:
    """The catalog every fixture of the package serves (gRPC server, gateway), cached."""
    return Catalog(
        CatalogStore(product_db, outbox),
        PageTokens(secrets.token_bytes(32)),
        reservation_ttl_s=900,
        default_low_stock_threshold=5,
        cache=cache,
    )


def reads(read: str, outcome: str) -> float:
    return float(CACHE_READS.labels(read, outcome)._value.get())


async def behind_the_caches_back(database: Database, product_id: str, name: str) -> None:
    """Change a row without the use cases: only the database sees it."""
    async with database.session() as session:
        await session.execute(update(products).where(products.c.id == product_id).values(name=name))


async def new_product(catalog: Catalog, category_id: str, stock: int = 10) -> Product:
    return await catalog.create_product(
        sku=f"SKU-{uuid.uuid4().hex[:12]}",
        name="Mug",
        description="",
        category_id=category_id,
        price=Money(900, "USD"),
        stock=stock,
        low_stock_threshold=None,
        actor="admin",
    )


async def test_a_product_read_twice_is_served_the_second_time_from_redis(
    catalog: Catalog, product_db: Database, rest: Client
) -> None:
    category = await catalog.create_category("Kitchen", f"k-{uuid.uuid4().hex[:12]}", "")
    mug = await new_product(catalog, category.id)
    hits, misses = reads("product", "hit"), reads("product", "miss")

    first = await rest.get(f"/api/v1/products/{mug.id}")
    await behind_the_caches_back(product_db, mug.id, "Renamed in the database only")
    second = await rest.get(f"/api/v1/products/{mug.id}")

    assert first.status == second.status == 200
    assert (await second.json())["name"] == "Mug"  # from the cache
    assert reads("product", "miss") == misses + 1
    assert reads("product", "hit") == hits + 1


async def test_a_reservation_changes_the_stock_the_next_read_shows(
    catalog: Catalog, clients: Clients, rest: Client
) -> None:
    category = await clients.category()
    mug = await clients.product(category.id, stock=10)

    async def stock() -> tuple[int, int]:
        body = await (await rest.get(f"/api/v1/products/{mug.id}")).json()
        return int(body["stock"]["available"]), int(body["stock"].get("reserved", 0))

    assert await stock() == (10, 0)  # cached now
    reserve = inv.ReserveStockRequest(
        order_id=f"order-{uuid.uuid4().hex}",
        items=[inv.ReserveStockRequest.Item(product_id=mug.id, quantity=3)],
    )
    await clients.inventory.ReserveStock(reserve, metadata=clients.service)
    assert await stock() == (7, 3)
    await clients.inventory.CommitReservation(
        inv.CommitReservationRequest(order_id=reserve.order_id), metadata=clients.service
    )
    assert await stock() == (7, 0)

    released = inv.ReserveStockRequest(
        order_id=f"order-{uuid.uuid4().hex}",
        items=[inv.ReserveStockRequest.Item(product_id=mug.id, quantity=2)],
    )
    await clients.inventory.ReserveStock(released, metadata=clients.service)
    assert await stock() == (5, 2)
    await clients.inventory.ReleaseReservation(
        inv.ReleaseReservationRequest(order_id=released.order_id), metadata=clients.service
    )
    assert await stock() == (7, 0)


async def test_every_product_write_shows_in_the_next_read(catalog: Catalog) -> None:
    category = await catalog.create_category("Kitchen", f"k-{uuid.uuid4().hex[:12]}", "")
    other = await catalog.create_category("Garden", f"g-{uuid.uuid4().hex[:12]}", "")
    mug = await new_product(catalog, category.id)
    await catalog.get_product(mug.id)

    await catalog.update_product(
        mug.id, ProductChanges(name="Big mug", category_id=other.id), mug.etag
    )
    assert (await catalog.get_product(mug.id)).name == "Big mug"
    await catalog.set_price(mug.id, Money(1200, "USD"), "admin")
    assert (await catalog.get_product(mug.id)).price == Money(1200, "USD")
    await catalog.adjust_stock(mug.id, -4, "stock count", "admin")
    assert (await catalog.get_product(mug.id)).available == 6
    order_id = f"order-{uuid.uuid4().hex}"
    await catalog.reserve(order_id, [(mug.id, 1)])
    assert (await catalog.get_product(mug.id)).reserved == 1
    await catalog.release(order_id)
    assert (await catalog.get_product(mug.id)).reserved == 0
    await catalog.archive_product(mug.id, "")
    with pytest.raises(Exception, match="no product"):
        await catalog.get_product(mug.id)


async def test_a_write_committed_while_a_miss_loads_is_not_overwritten_by_the_old_row(
    catalog: Catalog, cache: RedisCatalogCache
) -> None:
    category = await catalog.create_category("Kitchen", f"k-{uuid.uuid4().hex[:12]}", "")
    mug = await new_product(catalog, category.id)

    async def load_then_lose_the_race() -> Product | None:
        old = mug  # what the reader loaded before the writer committed
        await catalog.set_price(mug.id, Money(1500, "USD"), "admin")  # commits, forgets
        return old

    assert await cache.product(mug.id, load_then_lose_the_race) == mug
    # The old row was not stored: the next read loads the new one.
    assert (await catalog.get_product(mug.id)).price == Money(1500, "USD")


async def test_a_new_category_shows_in_the_next_listing(catalog: Catalog, rest: Client) -> None:
    async def slugs() -> set[str]:
        answer = await rest.get("/api/v1/categories?page_size=1000")
        assert answer.status == 200, await answer.text()
        return {c["slug"] for c in (await answer.json())["categories"]}

    before = await slugs()
    hits = reads("categories", "hit")
    assert await slugs() == before
    assert reads("categories", "hit") == hits + 1
    created = await catalog.create_category("Garden", f"g-{uuid.uuid4().hex[:12]}", "")
    assert await slugs() == before | {created.slug}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_with_redis_refusing_reads_and_writes_are_served_from_the_database_logged_once(
    product_db: Database, outbox: Outbox
) -> None:
    cache = RedisCatalogCache(f"redis://127.0.0.1:{closed_port()}/0", ttl_s=60, retry_after_s=0.0)
    catalog = Catalog(CatalogStore(product_db, outbox), PageTokens(b"k" * 32), cache=cache)
    errors = CACHE_ERRORS.labels("read")._value.get()
    try:
        with structlog.testing.capture_logs() as logged:
            category = await catalog.create_category("Kitchen", f"k-{uuid.uuid4().hex[:9]}", "")
            mug = await new_product(catalog, category.id)
            for _ in range(3):
                assert (await catalog.get_product(mug.id)).name == "Mug"
            await catalog.set_price(mug.id, Money(1100, "USD"), "admin")
            assert (await catalog.get_product(mug.id)).price == Money(1100, "USD")
            page, _ = await catalog.list_categories(1000, "")
            assert category.id in {c.id for c in page}
    finally:
        await cache.close()
    outages = [e for e in logged if e["event"] == "product_cache_unavailable"]
    assert len(outages) == 1, logged
    assert outages[0]["served_from"] == "database"
    assert CACHE_ERRORS.labels("read")._value.get() >= errors + 4


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A Redis of this test's own, to stop mid-test (the shared one serves other tests)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = closed_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    yield port, process
    if process.poll() is None:
        process.terminate()
        process.wait(10)


async def test_redis_stopped_mid_run_leaves_reads_and_writes_served_from_the_database(
    product_db: Database, outbox: Outbox, own_redis: tuple[int, subprocess.Popen[bytes]]
) -> None:
    port, process = own_redis
    cache = RedisCatalogCache(f"redis://127.0.0.1:{port}/0", ttl_s=60, retry_after_s=0.0)
    catalog = Catalog(CatalogStore(product_db, outbox), PageTokens(b"k" * 32), cache=cache)
    category = await catalog.create_category("Kitchen", f"k-{uuid.uuid4().hex[:9]}", "")
    mug = await new_product(catalog, category.id)

    async def cached() -> bool:
        await catalog.get_product(mug.id)
        return reads("product", "hit") > hits

    try:
        hits = reads("product", "hit")
        await wait_for(cached, within=10)  # until the process answers
        with structlog.testing.capture_logs() as logged:
            process.terminate()
            process.wait(10)
            await catalog.adjust_stock(mug.id, -3, "stock count", "admin")
            for _ in range(3):
                assert (await catalog.get_product(mug.id)).available == 7
        assert [e["event"] for e in logged if "product_cache" in e["event"]] == [
            "product_cache_unavailable"
        ]
    finally:
        await cache.close()
