""" "Bought together" recommendations: quality on a planted history, and the route's latency.

Quality: tests/support/purchase_history.py plants groups of products bought together in a
history with Zipf-popular noise, feeds every order through the consumer's use case
(``Catalog.count_confirmed_order``) and scores the top 5 of each grouped product against its
planted partners: precision@5 (goal >= 0.8 at the default settings) and recall@5.

Latency: ``--products`` products (default 100,000) and a generated history of about
``--order-lines`` order lines (default 1,000,000), its counters bulk-loaded straight into the
tables (counting that many orders one by one through the consumer would take the machine for
an hour; the counters are the same), then p50/p95 of sequential
``GET /api/v1/products/{id}/recommendations?page_size=10`` through the REST gateway
(``gateway.app.create_app``) in front of the real gRPC server. Client, gateway and service share
one event loop. A case with failed requests says ERRORS in its row and the run exits 1.
Results go to ``bench/results/recommendations.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

import aiohttp
from sqlalchemy import text

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
from product_svc.domain import NewProduct, basket_pairs
from product_svc.service import Catalog
from product_svc.store import CatalogStore
from tests.support.purchase_history import HistoryShape, generate, load, measure

RESULTS_FILE = ROOT / "bench" / "results" / "recommendations.json"
# Order lines per order of the default shape, measured: sizes the history for --order-lines.
LINES_PER_ORDER = 3.3


def quality_shape(options: argparse.Namespace) -> HistoryShape:
    return HistoryShape(
        products=options.quality_products,
        groups=options.quality_products // 10,
        orders=options.quality_orders,
    )


def latency_shape(options: argparse.Namespace) -> HistoryShape:
    return HistoryShape(
        products=options.products,
        groups=options.products // 20,
        orders=int(options.order_lines / LINES_PER_ORDER),
    )


async def measure_quality(url: str, options: argparse.Namespace) -> dict[str, Any]:
    database = Database.from_url(url)
    try:
        catalog = Catalog(CatalogStore(database, Outbox("product")), PageTokens(os.urandom(32)))
        started = time.perf_counter()
        quality = await measure(catalog, quality_shape(options))
        return {
            "precision_at_5": round(quality.precision, 3),
            "recall_at_5": round(quality.recall, 3),
            "products_scored": quality.evaluated,
            "order_lines": quality.order_lines,
            "orders": options.quality_orders,
            "seconds": round(time.perf_counter() - started, 1),
        }
    finally:
        await database.dispose()


async def measure_latency(url: str, options: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    database = Database.from_url(url)
    store = CatalogStore(database, Outbox("product"))
    catalog = Catalog(store, PageTokens(os.urandom(32)))
    shape = latency_shape(options)
    history = generate(shape)
    ids = await load(catalog, shape)
    await spread_over_categories(catalog, database, ids, options.categories)
    # A department opened today: in stock, never sold, so its products' lists are all
    # fallbacks (the category's newest, then the shop's best-sellers).
    department = await catalog.create_category("New department", f"new-{uuid.uuid4().hex}", "")
    unsold = [
        p.id
        for p in await catalog.insert_products(
            [
                NewProduct(
                    sku=f"UNSOLD-{uuid.uuid4().hex[:12]}",
                    name=f"Unsold {index}",
                    description="",
                    category_id=department.id,
                    price=Money(1000, "USD"),
                    stock=10,
                    low_stock_threshold=0,
                )
                for index in range(200)
            ]
        )
    ]
    bought: Counter[str] = Counter()
    together: Counter[tuple[str, str]] = Counter()
    for order in history.orders:
        basket = tuple(sorted(ids[i] for i in order))
        bought.update(basket)
        together.update(basket_pairs(basket))
    await store.insert_co_purchase_counts(bought, together)
    async with database.engine.begin() as connection:
        await connection.execute(text("ANALYZE"))
    results: dict[str, Any] = {
        "products": shape.products,
        "order_lines": sum(len(order) for order in history.orders),
        "pairs": len(together),
        "load_s": round(time.perf_counter() - started, 1),
    }
    rng = random.Random(23)
    grouped = sorted(history.partners)

    def mixed() -> str:
        # Mostly products with a history, some from the long tail (the fallbacks).
        return ids[rng.choice(grouped) if rng.random() < 0.8 else rng.randrange(len(ids))]

    try:
        async with (
            product_server(catalog) as address,
            gateway_in_front(
                address, GatewaySettings(environment="test", rate_limit_enabled=False)
            ) as base_url,
            aiohttp.ClientSession() as http,
        ):
            for case, pick in (("gateway", mixed), ("unsold", lambda: rng.choice(unsold))):
                errors = 0
                samples: list[float] = []
                for number in range(options.warmup + options.requests):
                    url_path = f"{base_url}/api/v1/products/{pick()}/recommendations"
                    start = time.perf_counter()
                    async with http.get(url_path, params={"page_size": "10"}) as response:
                        body = await response.json()
                        failed = response.status != 200 or len(body.get("products", [])) < 10
                    elapsed = (time.perf_counter() - start) * 1000
                    if number >= options.warmup:
                        errors += failed
                        samples.append(elapsed)
                cuts = statistics.quantiles(sorted(samples), n=100, method="inclusive")
                results[case] = {
                    "p50_ms": round(cuts[49], 2),
                    "p95_ms": round(cuts[94], 2),
                    "n": len(samples),
                    "errors": errors,
                }
    finally:
        await database.dispose()
    return results


async def spread_over_categories(
    catalog: Catalog, database: Database, ids: list[str], count: int
) -> None:
    """Deal the loaded products over ``count`` categories (the history puts them in one), so
    a category's best-sellers are a part of the shop's, as in a real catalog."""
    categories = [
        (await catalog.create_category(f"Aisle {n}", f"aisle-{n}-{uuid.uuid4().hex}", "")).id
        for n in range(count)
    ]
    async with database.engine.begin() as connection:
        for start in range(0, len(ids), 5_000):
            await connection.execute(
                text("UPDATE products SET category_id = :category WHERE id = :id"),
                [
                    {"category": categories[(start + offset) % count], "id": product_id}
                    for offset, product_id in enumerate(ids[start : start + 5_000])
                ],
            )


async def run(options: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for backend in options.backends:
        async with fresh_database(backend, options.postgres_url) as url:
            report[backend] = {"quality": await measure_quality(url, options)}
        if options.requests > 0:
            async with fresh_database(backend, options.postgres_url) as url:
                report[backend]["latency"] = await measure_latency(url, options)
    return report


def table(report: dict[str, Any]) -> str:
    lines = []
    for backend, cases in report.items():
        q = cases["quality"]
        lines.append(
            f"{backend:<9} quality   precision@5 {q['precision_at_5']:.3f}  recall@5 "
            f"{q['recall_at_5']:.3f}  ({q['products_scored']} products scored, "
            f"{q['order_lines']} order lines, {q['seconds']}s)"
            + ("" if q["precision_at_5"] >= 0.8 else "  BELOW THE 0.8 GOAL")
        )
        latency = cases.get("latency")
        if latency:
            for case in ("gateway", "unsold"):
                g = latency[case]
                lines.append(
                    f"{backend:<9} {'latency' if case == 'gateway' else 'unsold':<9} "
                    f"p50 {g['p50_ms']} ms  p95 {g['p95_ms']} ms  (n={g['n']}, "
                    f"{latency['products']} products, {latency['order_lines']} order lines, "
                    f"{latency['pairs']} pairs, load {latency['load_s']}s)"
                    + (f"  ERRORS: {g['errors']} requests failed" if g["errors"] else "")
                )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recommendations", description=__doc__)
    parser.add_argument("--quality-products", type=int, default=1_000)
    parser.add_argument("--quality-orders", type=int, default=8_000)
    parser.add_argument("--products", type=int, default=100_000, help="latency case catalog")
    parser.add_argument("--order-lines", type=int, default=1_000_000, help="latency history")
    parser.add_argument("--requests", type=int, default=300, help="latency requests; 0: none")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--categories", type=int, default=20, help="the latency catalog's categories"
    )
    add_backend_options(parser)
    options, _ = parser.parse_known_args(argv)
    configure_logging("bench", "WARNING")
    report = asyncio.run(run(options))
    finish(report, RESULTS_FILE, table(report))
    failed = any(
        cases.get("latency", {}).get(case, {}).get("errors", 0)
        for cases in report.values()
        for case in ("gateway", "unsold")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
