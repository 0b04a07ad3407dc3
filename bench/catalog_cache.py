"""Does the shared Redis cache of catalog reads in product_svc pay for itself? (issue 15 §3)

Loads ``--products`` generated products (SQLite file and/or a fresh PostgreSQL database), then
reads ``GetProduct`` with a skewed mix (Zipf, s=1.1 over a shuffled catalog: a few products take
most reads, as in a real shop), in three cases, measured back to back:

- ``off``: a product_svc process without the cache (``MC_PRODUCT_CACHE_REDIS_URL`` empty);
- ``on``: a product_svc process with the cache (``RedisCatalogCache``) on a Redis of the
  bench's own (``redis-server`` on a free port, so the shared one is never stopped);
- ``stopped``: the same process after that Redis has been stopped: reads must still be served.

Each case: the product process and the real gateway in processes of their own; sequential reads
(p50/p95, ``--requests``) and ``--concurrency`` closed-loop callers for ``--duration`` seconds
(reads/s), first straight at product_svc over gRPC, then through the gateway
(``GET /api/v1/products/{id}``). While it runs, ``--writes-per-s`` reservations (reserve, then
release) of products drawn from the same mix go through another ``Catalog`` on the same
database and cache, as another replica's checkouts would: each forgets its product's entry.
The hit ratio comes from the process's own ``mc_product_cache_reads_total`` (its /metrics),
counted over the measured reads only. Every cell counts its errors; a cell with errors is
flagged. ``behind_http_cache`` replays the mix through one shared HTTP cache keeping answers
``--http-max-age`` (the gateway's ``max-age``, as a CDN would): the share of reads that still
reach product_svc. Results: ``bench/results/catalog_cache.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import functools
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from sqlalchemy import make_url, text

from bench._children import logged_child
from bench._product_bench import SERVICE, add_backend_options
from bench.catalog_search import load, percentiles
from bench.gateway_load import LOOPBACK
from bench.gateway_load import child as gateway_child
from common.access import AccessInterceptor
from common.db import Database
from common.grpc_server import Service, create_server, stop_gracefully
from common.logging import configure_logging
from common.metrics import start_metrics_server
from common.migrations import script_location_of, upgrade_to_head
from common.outbox import Outbox
from common.pagination import PageTokens
from common.service_runner import wait_for_stop_signal
from common.tokens import StaticKeys, TokenVerifier
from localrun.broker import free_port
from localrun.postgres import database_of_its_own
from microcommerce.product.v1 import product_service_pb2 as pb
from microcommerce.product.v1 import product_service_pb2_grpc
from product_svc.catalog_cache import CatalogCache, NoCache, RedisCatalogCache
from product_svc.grpc_api import ProductApi
from product_svc.service import Catalog
from product_svc.store import CatalogStore

ROOT = Path(__file__).resolve().parents[1]
RESULTS_FILE = ROOT / "bench" / "results" / "catalog_cache.json"
ZIPF_S = 1.1
TTL_S = 30.0
PREFIX = "bench:catalog_cache:"

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


def behind_http_cache(ids: SkewedIds, rate_per_s: float, max_age_s: float, reads: int) -> float:
    """The share of reads that reach product_svc behind one shared HTTP cache keeping answers
    ``max_age_s`` (the gateway's default ``max-age``)."""
    fresh_until: dict[str, float] = {}
    passed = 0
    for index in range(reads):
        now = index / rate_per_s
        key = ids.next()
        if fresh_until.get(key, -1.0) > now:
            continue
        fresh_until[key] = now + max_age_s
        passed += 1
    return passed / reads


# --- The product process --------------------------------------------------------------------


async def serve_product(port: int, metrics_port: int, db_url: str, cache_url: str) -> None:
    configure_logging("bench-product", "WARNING")
    database = Database.from_url(db_url)
    cache: CatalogCache = (
        RedisCatalogCache(cache_url, ttl_s=TTL_S, prefix=PREFIX) if cache_url else NoCache()
    )
    catalog = Catalog(CatalogStore(database, Outbox("product")), PageTokens(b"b" * 32), cache=cache)
    server = await create_server(
        services=[
            Service(
                SERVICE.full_name,
                ProductApi(catalog),
                product_service_pb2_grpc.add_ProductServiceServicer_to_server,
            )
        ],
        address=f"{LOOPBACK}:{port}",
        interceptors=[AccessInterceptor(TokenVerifier(StaticKeys({})))],
    )
    metrics, _ = await start_metrics_server(LOOPBACK, metrics_port)
    await server.server.start()
    try:
        await wait_for_stop_signal()
    finally:
        await stop_gracefully(server.server, server.health, 1.0)
        await metrics.cleanup()
        await catalog.close()
        await database.dispose()


@contextlib.contextmanager
def product_child(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    with logged_child(
        "bench.catalog_cache",
        ["child", *args],
        RESULTS_FILE.parent / "catalog_cache.product.log",
        stop_timeout_s=10,
    ) as popen:
        yield popen


@contextlib.contextmanager
def own_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is needed (the bench stops a Redis of its own)")
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        popen = subprocess.Popen(
            [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", folder],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield f"redis://{LOOPBACK}:{port}/0", popen
        finally:
            if popen.poll() is None:
                popen.terminate()
                popen.wait(10)


async def until(probe: Callable[[], Awaitable[bool]], within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if await probe():
                return
        await asyncio.sleep(0.1)
    raise SystemExit("a bench process did not come up; see bench/results/catalog_cache.*.log")


async def cache_reads(http: aiohttp.ClientSession, metrics_port: int) -> dict[str, float]:
    """The process's ``mc_product_cache_reads_total{read="product"}`` by outcome."""
    async with http.get(f"http://{LOOPBACK}:{metrics_port}/metrics") as response:
        body = await response.text()
    counts: dict[str, float] = {}
    for match in re.finditer(r"^mc_product_cache_reads_total\{(.*)\} (\S+)$", body, re.MULTILINE):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if labels.get("read") == "product":
            counts[labels["outcome"]] = float(match.group(2))
    return counts


# --- The load -------------------------------------------------------------------------------


async def sequential(reads: dict[str, Read], ids: SkewedIds, requests: int) -> dict[str, Any]:
    """``requests`` reads of each case, interleaved (the same product in each case, the cases'
    order alternating), so a load spike on the shared machine hits every case alike."""
    samples: dict[str, list[float]] = {case: [] for case in reads}
    errors = dict.fromkeys(reads, 0)
    cases = list(reads)
    for index in range(requests):
        product_id = ids.next()
        for case in cases if index % 2 == 0 else cases[::-1]:
            start = time.perf_counter()
            try:
                await reads[case](product_id)
            except Exception:  # counted and reported, never hidden
                errors[case] += 1
                continue
            samples[case].append((time.perf_counter() - start) * 1000)
    return {case: {**percentiles(samples[case]), "errors": errors[case]} for case in reads}


async def throughput(
    reads: dict[str, Read], ids: list[str], concurrency: int, duration_s: float, slices: int
) -> dict[str, Any]:
    """``concurrency`` closed-loop callers for ``duration_s`` per case, in ``slices`` turns
    taken by the cases alternately (again: a spike hits every case alike)."""
    done = dict.fromkeys(reads, 0)
    errors = dict.fromkeys(reads, 0)
    spent = dict.fromkeys(reads, 0.0)
    cases = list(reads)
    for turn in range(slices):
        for case in cases if turn % 2 == 0 else cases[::-1]:
            mix = SkewedIds(ids, seed=100 + turn)
            stop = time.perf_counter() + duration_s / slices

            async def caller(
                read: Read = reads[case],
                case: str = case,
                mix: SkewedIds = mix,
                stop: float = stop,
            ) -> None:
                while time.perf_counter() < stop:
                    try:
                        await read(mix.next())
                        done[case] += 1
                    except Exception:  # counted and reported, never hidden
                        errors[case] += 1

            started = time.perf_counter()
            await asyncio.gather(*(caller() for _ in range(concurrency)))
            spent[case] += time.perf_counter() - started
    return {
        case: {"reads_per_s": round(done[case] / spent[case]), "errors": errors[case]}
        for case in reads
    }


async def writer(catalog: Catalog, ids: SkewedIds, per_s: float, stop: asyncio.Event) -> int:
    """Reservations (reserve, then release) of products from the mix: each forgets its entry."""
    done = 0
    while per_s > 0 and not stop.is_set():
        order_id = f"bench-{uuid.uuid4().hex}"
        with contextlib.suppress(Exception):  # out of stock: nothing reserved, nothing to do
            await catalog.reserve(order_id, [(ids.next(), 1)])
            await catalog.release(order_id)
            done += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1 / per_s)
    return done


class Stack:
    """One product_svc process (cache on or off) and a gateway in front of it."""

    def __init__(self, db_url: str, cache_url: str) -> None:
        self.port, self.metrics_port, self.gateway_port = free_port(), free_port(), free_port()
        self._args = ("product", str(self.port), str(self.metrics_port), db_url, cache_url)
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Stack:
        self._stack.enter_context(product_child(*self._args))
        upstream = f"{LOOPBACK}:{self.port}"
        self._stack.enter_context(gateway_child("gateway", str(self.gateway_port), upstream))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


async def measure_phase(
    stacks: dict[str, Stack], ids: list[str], options: argparse.Namespace
) -> dict[str, Any]:
    """Each stack read over gRPC, then through its gateway, interleaved; hit ratios from each
    process's own counters over this phase."""
    connector = aiohttp.TCPConnector(limit=options.concurrency * len(stacks))
    async with contextlib.AsyncExitStack() as exits:
        http = await exits.enter_async_context(aiohttp.ClientSession(connector=connector))
        grpc_reads: dict[str, Read] = {}
        http_reads: dict[str, Read] = {}
        for case, stack in stacks.items():
            channel = await exits.enter_async_context(
                grpc.aio.insecure_channel(f"{LOOPBACK}:{stack.port}")
            )
            stub = product_service_pb2_grpc.ProductServiceStub(channel)
            base = f"http://{LOOPBACK}:{stack.gateway_port}/api/v1/products/"

            async def over_grpc(product_id: str, stub: Any = stub) -> None:
                await stub.GetProduct(pb.GetProductRequest(id=product_id))

            async def over_http(product_id: str, base: str = base) -> None:
                async with http.get(base + product_id) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"status {response.status}")

            grpc_reads[case], http_reads[case] = over_grpc, over_http
            for read in (over_grpc, over_http):
                await until(functools.partial(_served, read, ids[0]))
        before = {c: await cache_reads(http, s.metrics_port) for c, s in stacks.items()}
        result: dict[str, Any] = {case: {} for case in stacks}
        for via, reads in (("grpc", grpc_reads), ("gateway", http_reads)):
            latency = await sequential(reads, SkewedIds(ids, seed=3), options.requests)
            rates = await throughput(
                reads, ids, options.concurrency, options.duration, options.slices
            )
            for case in stacks:
                result[case][via] = {**latency[case], **rates[case]}
        for case, stack in stacks.items():
            after = await cache_reads(http, stack.metrics_port)
            outcomes = {
                k: after.get(k, 0.0) - before[case].get(k, 0.0)
                for k in ("hit", "miss", "unavailable")
            }
            total = sum(outcomes.values())
            result[case]["hit_ratio"] = round(outcomes["hit"] / total, 3) if total else None
            result[case]["cache_reads"] = {k: int(v) for k, v in outcomes.items()}
    return result


async def _served(read: Read, product_id: str) -> bool:
    await read(product_id)
    return True


async def measure_backend(url: str, options: argparse.Namespace) -> dict[str, Any]:
    await upgrade_to_head(url, script_location_of("product"))
    database = Database.from_url(url)
    store = CatalogStore(database, Outbox("product"))
    await load(Catalog(store, PageTokens(os.urandom(32))), store, options.products)
    async with database.engine.begin() as connection:
        await connection.execute(text("ANALYZE"))
        ids = [row[0] for row in await connection.execute(text("SELECT id FROM products"))]
    results: dict[str, Any] = {"products": options.products}
    try:
        with (
            own_redis() as (redis_url, redis_process),
            Stack(url, "") as off,
            Stack(url, redis_url) as on,
        ):
            # Another replica's checkouts: they forget entries in the same cache.
            replica = Catalog(
                store,
                PageTokens(os.urandom(32)),
                cache=RedisCatalogCache(redis_url, ttl_s=TTL_S, prefix=PREFIX),
            )
            stop = asyncio.Event()
            writes = asyncio.create_task(
                writer(replica, SkewedIds(ids, seed=9), options.writes_per_s, stop)
            )
            started = time.monotonic()
            results["cache_running"] = await measure_phase({"off": off, "on": on}, ids, options)
            redis_process.terminate()
            redis_process.wait(10)
            results["cache_stopped"] = await measure_phase(
                {"off": off, "stopped": on}, ids, options
            )
            stop.set()
            results["writes"] = await writes
            results["seconds"] = round(time.monotonic() - started, 1)
            await replica.close()
    finally:
        await database.dispose()
    rate = max(float(results["cache_running"]["on"]["gateway"]["reads_per_s"]), 1.0)
    results["behind_http_cache_origin_share"] = round(
        behind_http_cache(SkewedIds(ids, seed=5), rate, options.http_max_age, 50_000), 3
    )
    return results


async def run(options: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {}
    if "sqlite" in options.backends:
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite+aiosqlite:///{Path(folder) / 'catalog.db'}"
            report["sqlite"] = await measure_backend(url, options)
    if "postgres" in options.backends:
        server = make_url(options.postgres_url).set(drivername="postgresql+asyncpg")
        async with database_of_its_own(
            server.render_as_string(hide_password=False), "mc_bench"
        ) as url:
            report["postgres"] = await measure_backend(url, options)
    return report


PHASES = {"cache_running": ("off", "on"), "cache_stopped": ("off", "stopped")}


def table(report: dict[str, Any]) -> str:
    lines = [
        f"{'backend':<9} {'phase':<14} {'cache':<8} {'via':<8} {'p50 ms':>7} {'p95 ms':>7}"
        f" {'reads/s':>8}  {'hit ratio':>9}  errors"
    ]
    for backend, results in report.items():
        for phase, cases in PHASES.items():
            for via in ("grpc", "gateway"):
                for case in cases:
                    cell = results[phase][case][via]
                    flag = f"  {cell['errors']} ERRORS" if cell["errors"] else "  0"
                    ratio = results[phase][case]["hit_ratio"]
                    lines.append(
                        f"{backend:<9} {phase:<14} {case:<8} {via:<8} {cell['p50_ms']:>7} "
                        f"{cell['p95_ms']:>7} {cell['reads_per_s']:>8}  "
                        f"{'-' if ratio is None else ratio:>9}{flag}"
                    )
        lines.append(
            f"{backend:<9} {results['writes']} reservations in {results['seconds']} s; behind a "
            f"max-age HTTP cache {results['behind_http_cache_origin_share']:.1%} of reads "
            "reach product_svc"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["child", "product"]:
        port, metrics_port, db_url, cache_url = argv[2:6]
        asyncio.run(serve_product(int(port), int(metrics_port), db_url, cache_url))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.catalog_cache", description=__doc__)
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=1000, help="sequential, per read kind")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--duration", type=float, default=6.0, help="seconds of concurrent reads per case"
    )
    parser.add_argument("--slices", type=int, default=6, help="turns the duration is cut in")
    parser.add_argument("--writes-per-s", type=float, default=10.0, help="reservations per second")
    parser.add_argument(
        "--http-max-age", type=float, default=10.0, help="the HTTP cache's max-age, seconds"
    )
    add_backend_options(parser)
    options, _ = parser.parse_known_args(argv)
    configure_logging("bench", "WARNING")
    report = asyncio.run(run(options))
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(report, indent=2))
    sys.stdout.write(table(report) + f"\n(results in {RESULTS_FILE.relative_to(ROOT)})\n")
    errors = sum(
        report[b][phase][case][via]["errors"]
        for b in report
        for phase, cases in PHASES.items()
        for case in cases
        for via in ("grpc", "gateway")
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
