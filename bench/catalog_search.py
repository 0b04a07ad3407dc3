"""Catalog reads at scale: full-text search with a price filter and a category listing.

Loads ``--products`` (default 100,000, then 1,000,000: each size is a case of its own)
generated products straight through the store (bulk
inserts, so the indexes and full-text triggers are the production ones), then measures p50 and
p95 of sequential ``ListProducts`` calls through gRPC (the real server bootstrap with the access
interceptor) and through the REST gateway (``gateway.app.create_app``), on SQLite and on
PostgreSQL. Client, gateway and service share one event loop, so the gateway figures include
the client's own cost. Results go to ``bench/results/catalog_search.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import grpc
from sqlalchemy import event, text

from bench._product_bench import (
    ROOT,
    add_backend_options,
    finish,
    fresh_database,
    gateway_in_front,
    product_server,
)
from common.db import Database
from common.logging import configure_logging
from common.money import Money
from common.outbox import Outbox
from common.pagination import PageTokens
from gateway.settings import GatewaySettings
from microcommerce.product.v1 import product_service_pb2 as pb
from microcommerce.product.v1 import product_service_pb2_grpc
from product_svc.domain import NewProduct
from product_svc.service import Catalog
from product_svc.store import CatalogStore

RESULTS_FILE = ROOT / "bench" / "results" / "catalog_search.json"

ADJECTIVES = [
    "classic",
    "compact",
    "deluxe",
    "essential",
    "premium",
    "rugged",
    "sleek",
    "smart",
    "vintage",
    "wireless",
    "portable",
    "quiet",
    "bright",
    "heavy",
    "light",
    "modern",
    "rustic",
    "solid",
    "soft",
    "warm",
]
MATERIALS = [
    "steel",
    "oak",
    "glass",
    "ceramic",
    "cotton",
    "leather",
    "bamboo",
    "copper",
    "wool",
    "linen",
]
NOUNS = [
    "kettle",
    "mug",
    "teapot",
    "grinder",
    "skillet",
    "knife",
    "board",
    "lamp",
    "chair",
    "desk",
    "shelf",
    "speaker",
    "headphones",
    "charger",
    "cable",
    "backpack",
    "tent",
    "jacket",
    "helmet",
    "bottle",
    "blanket",
    "pillow",
    "clock",
    "mirror",
    "vase",
    "basket",
    "stool",
    "rug",
    "towel",
    "candle",
]
FILLER = [
    "made",
    "for",
    "everyday",
    "use",
    "with",
    "a",
    "durable",
    "finish",
    "designed",
    "to",
    "last",
    "easy",
    "to",
    "clean",
    "and",
    "simple",
    "to",
    "store",
    "great",
    "gift",
    "for",
    "home",
    "kitchen",
    "office",
    "travel",
    "and",
    "outdoor",
    "life",
]


def generated(
    first: int, count: int, categories: Sequence[str], rng: random.Random
) -> list[NewProduct]:
    products = []
    for index in range(first, first + count):
        noun = rng.choice(NOUNS)
        name = f"{rng.choice(ADJECTIVES)} {rng.choice(MATERIALS)} {noun}".capitalize()
        words = [*rng.sample(FILLER, 12), noun, rng.choice(MATERIALS)]
        products.append(
            NewProduct(
                sku=f"BENCH-{index:07d}",
                name=name,
                description=" ".join(words).capitalize() + ".",
                category_id=categories[index % len(categories)],
                price=Money(rng.randrange(100, 50_000), "USD"),
                stock=rng.randrange(0, 100),
                low_stock_threshold=5,
            )
        )
    return products


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50_ms": round(cuts[49], 2), "p95_ms": round(cuts[94], 2), "n": len(ordered)}


async def timed(
    call: Callable[[], Awaitable[None]], requests: int, warmup: int
) -> tuple[list[float], int]:
    """Latencies of the calls that succeeded, and how many failed (a 504 from the gateway's
    deadline on a loaded machine is counted, not allowed to end a run that loaded for an
    hour)."""
    failed = 0
    for _ in range(warmup):
        try:
            await call()
        except (RuntimeError, grpc.aio.AioRpcError):
            failed += 1
    samples = []
    for _ in range(requests):
        start = time.perf_counter()
        try:
            await call()
        except (RuntimeError, grpc.aio.AioRpcError):
            failed += 1
            continue
        samples.append((time.perf_counter() - start) * 1000)
    return samples, failed


async def load(catalog: Catalog, store: CatalogStore, count: int) -> list[str]:
    """Create the category tree and ``count`` products; the root category ids."""
    roots, leaves = [], []
    suffix = uuid.uuid4().hex[:6]
    for r in range(5):
        root = await catalog.create_category(f"Department {r}", f"dept-{r}-{suffix}", "")
        roots.append(root.id)
        for c in range(3):
            child = await catalog.create_category(
                f"Aisle {r}.{c}", f"aisle-{r}-{c}-{suffix}", root.id
            )
            leaves.append(child.id)
    rng = random.Random(7)
    batch = 5_000
    for start in range(0, count, batch):
        chunk = generated(start, min(batch, count - start), [*roots, *leaves], rng)
        await catalog.insert_products(chunk)
    return roots


async def measure_backend(url: str, *, products: int, requests: int, warmup: int) -> dict[str, Any]:
    started = time.perf_counter()
    database = Database.from_url(url)
    store = CatalogStore(database, Outbox("product"))
    catalog = Catalog(store, PageTokens(os.urandom(32)))
    roots = await load(catalog, store, products)
    async with database.engine.begin() as connection:
        await connection.execute(text("ANALYZE"))
    load_s = time.perf_counter() - started
    plans = await query_plans(database, catalog, roots)
    rng = random.Random(11)

    def search_params() -> dict[str, Any]:
        low = rng.randrange(0, 20_000)
        return {"q": rng.choice(NOUNS), "min_price": low, "max_price": low + 15_000}

    results: dict[str, Any] = {"products": products, "load_s": round(load_s, 1), "plans": plans}
    try:
        async with (
            product_server(catalog) as address,
            gateway_in_front(
                # Rate limits off: they would answer 429 to one client sending this many
                # requests, measuring the limiter (bench.checkout does the same).
                address,
                GatewaySettings(environment="test", rate_limit_enabled=False),
            ) as base_url,
            grpc.aio.insecure_channel(address) as channel,
            aiohttp.ClientSession() as http,
        ):
            stub = product_service_pb2_grpc.ProductServiceStub(channel)

            async def grpc_search() -> None:
                await stub.ListProducts(pb.ListProductsRequest(**search_params(), page_size=20))

            async def grpc_category() -> None:
                await stub.ListProducts(
                    pb.ListProductsRequest(category_id=rng.choice(roots), page_size=20)
                )

            async def rest(params: dict[str, Any]) -> None:
                query = {key: str(value) for key, value in params.items()}
                async with http.get(f"{base_url}/api/v1/products", params=query) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"gateway answered {response.status}")

            async def rest_search() -> None:
                await rest({**search_params(), "page_size": 20})

            async def rest_category() -> None:
                await rest({"category_id": rng.choice(roots), "page_size": 20})

            cases = {
                "grpc_search": grpc_search,
                "grpc_category": grpc_category,
                "gateway_search": rest_search,
                "gateway_category": rest_category,
            }
            for name, call in cases.items():
                samples, failed = await timed(call, requests, warmup)
                results[name] = {**percentiles(samples or [0.0, 0.0]), "failed": failed}
    finally:
        await database.dispose()
    return results


# A plan line that reads every product instead of an index (SQLite's "SCAN products USING
# INDEX ..." walks an index in order and stops at the page's LIMIT).
_FULL_SCAN = {
    "sqlite": re.compile(r"^SCAN products(?!_)(?!.* USING (COVERING )?INDEX)"),
    "postgresql": re.compile(r"Seq Scan on products\b"),
}


async def query_plans(
    database: Database, catalog: Catalog, roots: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The database's plan of the search and the category listing, as the service sends them.

    The statements are captured from one real call each (so the plan is of the production SQL,
    not of a copy) and explained with the same parameters: ``EXPLAIN QUERY PLAN`` on SQLite,
    ``EXPLAIN`` on PostgreSQL. ``full_scan`` says whether a line reads the whole products table.
    """
    dialect = database.engine.dialect.name
    captured: list[tuple[str, Any]] = []

    def capture(*args: Any) -> None:
        statement, parameters = args[2], args[3]
        if "FROM products" in statement and "LIMIT" in statement:
            captured.append((statement, parameters))

    searches: dict[str, dict[str, Any]] = {
        "search": {"q": NOUNS[0], "category_id": "", "min_price": 10_000, "max_price": 25_000},
        "category": {"q": "", "category_id": roots[0], "min_price": None, "max_price": None},
    }
    plans: dict[str, dict[str, Any]] = {}
    for case, filters in searches.items():
        captured.clear()
        event.listen(database.engine.sync_engine, "before_cursor_execute", capture)
        try:
            await catalog.search(
                **filters, in_stock=None, order_by="", requested_size=20, page_token=""
            )
        finally:
            event.remove(database.engine.sync_engine, "before_cursor_execute", capture)
        statement, parameters = captured[-1]
        prefix = "EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN "
        async with database.engine.connect() as connection:
            rows = (await connection.exec_driver_sql(prefix + statement, parameters)).all()
        lines = [str(row[-1]) for row in rows]
        plans[case] = {
            "plan": lines,
            "full_scan": any(_FULL_SCAN[dialect].search(line.strip()) for line in lines),
        }
    return plans


async def run(options: argparse.Namespace) -> dict[str, Any]:
    """Every size on every backend, keyed ``backend`` for the first size, ``backend@N`` after
    it (so a one-size run keeps the report's earlier shape)."""
    report: dict[str, Any] = {}
    for index, products in enumerate(options.products):
        one = await run_size(options, products)
        for backend, results in one.items():
            report[backend if index == 0 else f"{backend}@{products}"] = results
    return report


async def run_size(options: argparse.Namespace, products: int) -> dict[str, Any]:
    report: dict[str, Any] = {}
    settings = {"products": products, "requests": options.requests, "warmup": 20}
    for backend in ("sqlite", "postgres"):
        if backend in options.backends:
            async with fresh_database(backend, options.postgres_url) as url:
                report[backend] = await measure_backend(url, **settings)
    return report


def table(report: dict[str, Any]) -> str:
    lines = [
        f"{'backend':<17} {'case':<17} {'p50 ms':>8} {'p95 ms':>8}",
    ]
    for backend, results in report.items():
        for case, figures in results.items():
            if isinstance(figures, dict) and "p50_ms" in figures:
                failed = f"  ({figures['failed']} FAILED)" if figures.get("failed") else ""
                lines.append(
                    f"{backend:<17} {case:<17} {figures['p50_ms']:>8} {figures['p95_ms']:>8}"
                    + failed
                )
        lines.append(
            f"{backend:<17} {'(load)':<17} {results['load_s']:>7}s for {results['products']}"
        )
        for case, explained in results.get("plans", {}).items():
            verdict = "FULL SCAN of products" if explained["full_scan"] else "index-backed"
            lines.append(f"{backend:<17} plan of {case}: {verdict}")
            lines.extend(f"{'':<19}{line}" for line in explained["plan"])
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.catalog_search", description=__doc__)
    parser.add_argument(
        "--products",
        default=[100_000, 1_000_000],
        type=lambda text: [int(n) for n in text.split(",") if n.strip()],
        help="comma-separated catalog sizes, one case each (100000,1000000)",
    )
    parser.add_argument("--requests", type=int, default=300, help="per case, after warm-up")
    add_backend_options(parser)
    options, _ = parser.parse_known_args(argv)
    configure_logging("bench", "WARNING")
    report = asyncio.run(run(options))
    finish(report, RESULTS_FILE, table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
