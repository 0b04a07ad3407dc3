"""Would a shared Redis cache of product reads in product_svc pay for itself? (issue 15 §3)

Loads ``--products`` generated products, then reads them with a skewed mix (Zipf, s=1.1 over
a shuffled catalog: a few products take most reads, as in a real shop) three ways, each
sequentially (p50/p95) and with ``--concurrency`` callers for ``--duration`` seconds (reads/s):

- ``db``: the use case ``GetProduct`` runs today (``Catalog.get_product``): what a miss costs;
- ``redis``: ``GET`` of the product's serialized proto from Redis and parsing it: what a hit
  costs (the cheapest a cache could be);
- ``grpc``: ``GetProduct`` end to end through the real server, as the gateway calls it.

A cache saves at most ``hit_ratio * (db - redis)`` of each ``grpc`` read; ``hit_ratio`` is
the share of reads of the mix that a TTL cache (``--ttl``) would serve, replayed at the
measured ``grpc`` rate, before any invalidation by writes or stock changes (so an upper
bound). ``behind_http_cache`` replays the same mix through one shared HTTP cache (a CDN
node keeping answers ``--http-max-age``): the share of reads that still reach product_svc,
and the TTL cache's hit ratio on those. Every cell counts its errors; a cell with errors is
flagged in the table. Results go to ``bench/results/catalog_cache.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import os
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import redis.asyncio as aioredis
from sqlalchemy import text

from bench._product_bench import (
    ROOT,
    add_backend_options,
    finish,
    fresh_database,
    product_server,
)
from bench.catalog_search import load, percentiles
from common.db import Database
from common.logging import configure_logging
from common.outbox import Outbox
from common.pagination import PageTokens
from microcommerce.product.v1 import product_service_pb2 as pb
from microcommerce.product.v1 import product_service_pb2_grpc
from product_svc.grpc_api import product_message
from product_svc.service import Catalog
from product_svc.store import CatalogStore

RESULTS_FILE = ROOT / "bench" / "results" / "catalog_cache.json"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
ZIPF_S = 1.1

Read = Callable[[str], Awaitable[None]]


class SkewedIds:
    """Product ids drawn with Zipf weights over a shuffled order (rank 1 is the hottest)."""

    def __init__(self, ids: Sequence[str], seed: int) -> None:
        self._rng = random.Random(seed)
        self._ids = list(ids)
        self._rng.shuffle(self._ids)
        weights = [1 / (rank**ZIPF_S) for rank in range(1, len(self._ids) + 1)]
        self._cumulative = list(itertools.accumulate(weights))

    def next(self) -> str:
        point = self._rng.random() * self._cumulative[-1]
        return self._ids[bisect.bisect_left(self._cumulative, point)]


def ttl_hit_ratio(ids: SkewedIds, rate_per_s: float, ttl_s: float, reads: int) -> float:
    """The share of ``reads`` a TTL cache answers when they arrive at ``rate_per_s``."""
    expires: dict[str, float] = {}
    hits = 0
    for index in range(reads):
        now = index / rate_per_s
        key = ids.next()
        if expires.get(key, -1.0) > now:
            hits += 1
        else:
            expires[key] = now + ttl_s
    return hits / reads


def behind_http_cache(
    ids: SkewedIds, rate_per_s: float, max_age_s: float, ttl_s: float, reads: int
) -> tuple[float, float]:
    """What reaches product_svc behind one shared HTTP cache keeping answers ``max_age_s``
    (the gateway's default), and the share of those a ``ttl_s`` cache would answer."""
    fresh_until: dict[str, float] = {}
    expires: dict[str, float] = {}
    passed = hits = 0
    for index in range(reads):
        now = index / rate_per_s
        key = ids.next()
        if fresh_until.get(key, -1.0) > now:
            continue
        fresh_until[key] = now + max_age_s
        passed += 1
        if expires.get(key, -1.0) > now:
            hits += 1
        else:
            expires[key] = now + ttl_s
    return passed / reads, (hits / passed if passed else 0.0)


async def sequential(read: Read, ids: SkewedIds, requests: int) -> dict[str, Any]:
    samples, errors = [], 0
    for _ in range(20):
        await read(ids.next())
    for _ in range(requests):
        start = time.perf_counter()
        try:
            await read(ids.next())
        except Exception:  # counted and reported, never hidden
            errors += 1
            continue
        samples.append((time.perf_counter() - start) * 1000)
    return {**percentiles(samples), "errors": errors}


async def throughput(
    read: Read, ids: SkewedIds, concurrency: int, duration_s: float
) -> dict[str, Any]:
    done, errors = 0, 0
    stop = time.perf_counter() + duration_s

    async def caller() -> None:
        nonlocal done, errors
        while time.perf_counter() < stop:
            try:
                await read(ids.next())
                done += 1
            except Exception:  # counted and reported, never hidden
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return {"reads_per_s": round(done / (time.perf_counter() - started)), "errors": errors}


async def measure_backend(url: str, options: argparse.Namespace) -> dict[str, Any]:
    database = Database.from_url(url)
    store = CatalogStore(database, Outbox("product"))
    catalog = Catalog(store, PageTokens(os.urandom(32)))
    await load(catalog, store, options.products)
    async with database.engine.begin() as connection:
        await connection.execute(text("ANALYZE"))
        ids = [row[0] for row in await connection.execute(text("SELECT id FROM products"))]
    cache = aioredis.Redis.from_url(options.redis_url)
    prefix = f"bench:{uuid.uuid4().hex[:8]}:product:"
    results: dict[str, Any] = {"products": options.products}
    try:
        async with cache.pipeline(transaction=False) as pipe:
            for product_id in ids:
                product = await catalog.get_product(product_id)
                pipe.set(prefix + product_id, product_message(product).SerializeToString(), ex=600)
            await pipe.execute()
        async with (
            product_server(catalog) as address,
            grpc.aio.insecure_channel(address) as channel,
        ):
            stub = product_service_pb2_grpc.ProductServiceStub(channel)

            async def db(product_id: str) -> None:
                product_message(await catalog.get_product(product_id))

            async def from_redis(product_id: str) -> None:
                raw = await cache.get(prefix + product_id)
                if not isinstance(raw, bytes):
                    raise LookupError(product_id)
                pb.Product.FromString(raw)

            async def over_grpc(product_id: str) -> None:
                await stub.GetProduct(pb.GetProductRequest(id=product_id))

            for name, read in {"db": db, "redis": from_redis, "grpc": over_grpc}.items():
                mix = SkewedIds(ids, seed=3)
                results[name] = {
                    **await sequential(read, mix, options.requests),
                    **await throughput(read, mix, options.concurrency, options.duration),
                }
        rate = max(float(results["grpc"]["reads_per_s"]), 1.0)
        hit = ttl_hit_ratio(SkewedIds(ids, seed=5), rate, options.ttl, 50_000)
        saved = hit * (results["db"]["p50_ms"] - results["redis"]["p50_ms"])
        origin_share, origin_hit = behind_http_cache(
            SkewedIds(ids, seed=5), rate, options.http_max_age, options.ttl, 50_000
        )
        results["behind_http_cache"] = {
            "origin_share": round(origin_share, 3),
            "ttl_hit_ratio": round(origin_hit, 3),
        }
        results["ttl_hit_ratio"] = round(hit, 3)
        results["max_saving_p50_ms"] = round(saved, 3)
        results["max_saving_share"] = round(saved / results["grpc"]["p50_ms"], 3)
    finally:
        keys = [key async for key in cache.scan_iter(match=prefix + "*", count=1000)]
        for start in range(0, len(keys), 1000):
            await cache.delete(*keys[start : start + 1000])
        await cache.aclose()
        await database.dispose()
    return results


async def run(options: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for backend in ("sqlite", "postgres"):
        if backend in options.backends:
            async with fresh_database(backend, options.postgres_url) as url:
                report[backend] = await measure_backend(url, options)
    return report


def table(report: dict[str, Any]) -> str:
    lines = [f"{'backend':<9} {'read':<6} {'p50 ms':>7} {'p95 ms':>7} {'reads/s':>8}  errors"]
    for backend, results in report.items():
        for case in ("db", "redis", "grpc"):
            cell = results[case]
            flag = f"  {cell['errors']} ERRORS: figures incomplete" if cell["errors"] else "  0"
            lines.append(
                f"{backend:<9} {case:<6} {cell['p50_ms']:>7} {cell['p95_ms']:>7} "
                f"{cell['reads_per_s']:>8}{flag}"
            )
        lines.append(
            f"{backend:<9} TTL hit ratio {results['ttl_hit_ratio']}, at most "
            f"{results['max_saving_p50_ms']} ms ({results['max_saving_share']:.0%}) "
            "of a gRPC read's p50 saved"
        )
        behind = results["behind_http_cache"]
        lines.append(
            f"{backend:<9} behind a max-age HTTP cache: {behind['origin_share']:.1%} of "
            f"reads reach product_svc, {behind['ttl_hit_ratio']} of those would hit"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.catalog_cache", description=__doc__)
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=1000, help="sequential, per read kind")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of concurrent reads")
    parser.add_argument("--ttl", type=float, default=30.0, help="the cache's TTL, seconds")
    parser.add_argument(
        "--http-max-age", type=float, default=10.0, help="the HTTP cache's max-age, seconds"
    )
    add_backend_options(parser)
    parser.add_argument("--redis-url", default=os.environ.get("MC_TEST_REDIS_URL", DEFAULT_REDIS))
    options, _ = parser.parse_known_args(argv)
    configure_logging("bench", "WARNING")
    report = asyncio.run(run(options))
    finish(report, RESULTS_FILE, table(report))
    errors = sum(report[b][c]["errors"] for b in report for c in ("db", "redis", "grpc"))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
