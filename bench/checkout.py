"""Completed checkouts per second end to end through the gateway, on SQLite and PostgreSQL.

Starts the embedded broker and the whole stack (three services and the gateway as processes)
with the settings a user of ``make run`` gets (its Kafka fetch wait, the payment service's
default recovery grace and interval, the gateway's default upstream deadline), then, at each
concurrency, keeps that many buyers checking out one unit each for a fixed time. Only the
gateway's rate limits are off: they would answer 429 to one address sending this much.

Reported per backend and concurrency: completed checkouts/s, p50/p99 latency of a successful
checkout, the answers that are not a success split into *refused* (4xx: the shop said no) and
*unknown outcome* (5xx and 504: the buyer cannot tell whether the order was placed and charged)
and transport *errors*, CPU per completed checkout for every process, and the anomalies that must
stay zero: oversells, double charges (more than one capture for a payment), stuck orders (not
CONFIRMED or FAILED once the load stops) and stock drift (units gone from stock that no
confirmed order accounts for, or units still reserved). A cell with any of these, or with an
unknown outcome or an error, is printed as FAILED and the benchmark exits with status 1.

Also per cell, from every service's ``mc_kafka_consumer_lag`` scraped every 0.5 s: per consumer
group and topic the largest and the final lag (summed over partitions) and how long after the
load stopped it returned to 0 (reported, not asserted; a failed scrape fails the cell). The
gateway is not scraped: its health stream has no consumer group, so it has no lag.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from bench._consumer_lag import LagFigures, LagSampler
from gateway.settings import GatewaySettings
from localrun.broker import EmbeddedBroker, free_port
from localrun.supervisor import LOCAL_KAFKA_DEFAULTS
from payment_svc.settings import PaymentSettings
from tests.support.checkout_stack import (
    CheckoutStack,
    close_checkout_stack,
    open_checkout_stack,
)
from tests.support.processes import wait_for

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "checkout.json"
DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
FINAL_STATUSES = ("ORDER_STATUS_CONFIRMED", "ORDER_STATUS_FAILED")


def _default(settings: type[object], name: str) -> str:
    return str(settings.model_fields[name].default)  # type: ignore[attr-defined]


# What `make run` gives a user, overriding the short timings of the test stack (CHECKOUT_ENV):
# a recovery grace below the checkout's own p99 would re-drive orders that are still running.
PRODUCTION_LIKE_ENV = {
    **LOCAL_KAFKA_DEFAULTS,
    "MC_LOG_LEVEL": "WARNING",
    "MC_UPSTREAM_TIMEOUT_S": _default(GatewaySettings, "upstream_timeout_s"),
    "MC_PAYMENT_RECOVERY_GRACE_S": _default(PaymentSettings, "recovery_grace_s"),
    "MC_PAYMENT_RECOVERY_INTERVAL_S": _default(PaymentSettings, "recovery_interval_s"),
    "MC_PAYMENT_REPLAY_WAIT_S": _default(PaymentSettings, "replay_wait_s"),
}
# Long enough for the recovery loop to finish an order its request left behind.
SETTLE_WITHIN_S = 2 * float(PRODUCTION_LIKE_ENV["MC_PAYMENT_RECOVERY_GRACE_S"]) + 10
# How long the consumers get to catch up once the load stops before the lag is reported as
# not drained.
LAG_DRAIN_WITHIN_S = 30.0
SERVICES = ("payment", "product", "user")


@dataclass
class Cell:
    backend: str
    concurrency: int
    seconds: float
    completed: int
    per_second: float
    p50_ms: float
    p99_ms: float
    refused: dict[str, int]  # 4xx answers by status
    unknown_outcome: dict[str, int]  # 5xx answers by status (504: deadline passed)
    errors: int  # no HTTP answer at all
    cpu_ms_per_checkout: dict[str, float]  # by process; "bench" is the load generator
    oversells: int
    double_charges: int
    stuck_orders: int
    stock_drift: int
    consumer_lag: LagFigures = field(default_factory=LagFigures)
    problems: list[str] = field(default_factory=list)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_sample(pids: Mapping[str, int]) -> dict[str, float]:
    sample = {name: cpu_seconds(pid) for name, pid in pids.items()}
    sample["bench"] = time.process_time()
    return sample


async def _create_databases(server: str) -> dict[str, str]:
    engine = create_async_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    urls: dict[str, str] = {}
    try:
        async with engine.connect() as connection:
            for service in SERVICES:
                name = f"mc_bench_{service}_{uuid.uuid4().hex[:8]}"
                await connection.execute(text(f'CREATE DATABASE "{name}"'))
                urls[f"MC_{service.upper()}_DATABASE_URL"] = server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await engine.dispose()
    return urls


async def _all_orders(shop: CheckoutStack, tokens: Sequence[str]) -> list[dict[str, object]]:
    """Every order of these buyers; listing is retried while the gateway answers 5xx (its
    circuit breaker may still be open after the load)."""

    async def pages_of(token: str) -> tuple[list[dict[str, object]]] | None:
        orders: list[dict[str, object]] = []
        page = ""
        while True:
            answer = await shop.call(
                "GET", f"/api/v1/orders?page_size=100&page_token={page}", token=token
            )
            if answer.status >= 500:
                return None
            assert answer.status == 200, answer
            orders.extend(answer.body.get("orders", []))
            page = str(answer.body.get("next_page_token", ""))
            if not page:
                return (orders,)  # a tuple, so that no orders is an answer too

    found: list[dict[str, object]] = []
    for token in tokens:
        (orders,) = await wait_for(partial(pages_of, token), within=30, interval=1.0)
        found.extend(orders)
    return found


async def _set_up(make: Callable[[], Awaitable[str]], attempts: int = 5) -> str:
    """Set-up is not measured: a 5xx while the stack warms up (the gateway's deadline is the
    production one) is tried again."""
    for attempt in range(1, attempts + 1):
        try:
            return await make()
        except AssertionError:
            if attempt == attempts:
                raise
            await asyncio.sleep(1.0)
    raise AssertionError("unreachable")


async def _load(
    shop: CheckoutStack,
    concurrency: int,
    seconds: float,
    stock: int,
    pids: Mapping[str, int],
    metrics_urls: Mapping[str, str],
) -> Cell:
    product = await _set_up(lambda: shop.new_product(stock=stock, price=500))
    buyers = [await _set_up(shop.new_customer) for _ in range(min(concurrency, 8))]
    latencies: list[float] = []
    payments: list[str] = []
    answers: Counter[int] = Counter()
    errors = 0
    deadline = time.monotonic() + seconds

    async def buyer(index: int) -> None:
        nonlocal errors
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                answer = await shop.checkout(buyers[index % len(buyers)], [(product, 1)])
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
                continue
            answers[answer.status] += 1
            if answer.status == 201:
                latencies.append(time.perf_counter() - started)
                payments.append(answer.body["payment"]["id"])

    lag = LagSampler(shop.http, metrics_urls)
    lag.start()
    cpu_before = _cpu_sample(pids)
    began = time.monotonic()
    await asyncio.gather(*(buyer(i) for i in range(concurrency)))
    elapsed = time.monotonic() - began
    cpu_after = _cpu_sample(pids)
    lag_figures = await lag.stop_and_drain(LAG_DRAIN_WITHIN_S)
    done = max(1, len(latencies))
    cpu_ms = {
        name: round((cpu_after[name] - cpu_before[name]) * 1000 / done, 2) for name in cpu_before
    }
    cpu_ms["total_services"] = round(sum(v for k, v in cpu_ms.items() if k != "bench"), 2)

    async def all_final() -> list[dict[str, object]] | None:
        orders = await _all_orders(shop, buyers)
        return orders if all(order["status"] in FINAL_STATUSES for order in orders) else None

    try:
        orders = await wait_for(all_final, within=SETTLE_WITHIN_S, interval=1.0)
        stuck = 0
    except AssertionError:
        orders = await _all_orders(shop, buyers)
        stuck = sum(1 for order in orders if order["status"] not in FINAL_STATUSES)
    confirmed = sum(1 for order in orders if order["status"] == "ORDER_STATUS_CONFIRMED")
    available, reserved = await shop.stock(product)
    sold = stock - available - reserved
    ledger = await shop.sandbox_ledger()
    captures = Counter(key.split(":", 1)[0] for key, op, ok in ledger if op == "capture" and ok)
    ordered = sorted(latencies) or [0.0]
    cell = Cell(
        backend="",
        concurrency=concurrency,
        seconds=round(elapsed, 2),
        completed=len(latencies),
        per_second=round(len(latencies) / elapsed, 2),
        p50_ms=round(statistics.median(ordered) * 1000, 1),
        p99_ms=round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
        refused={str(s): n for s, n in sorted(answers.items()) if 400 <= s < 500},
        unknown_outcome={str(s): n for s, n in sorted(answers.items()) if s >= 500},
        errors=errors,
        cpu_ms_per_checkout=cpu_ms,
        oversells=max(0, sold - stock) + max(0, len(latencies) - stock),
        double_charges=sum(1 for p in payments if captures[p] > 1),
        stuck_orders=stuck,
        # Once every order is final nothing may stay reserved, and every unit gone from stock
        # belongs to a confirmed order (one unit each).
        stock_drift=abs(sold - confirmed) + reserved,
        consumer_lag=lag_figures,
    )
    cell.problems = _problems(cell)
    return cell


def _problems(cell: Cell) -> list[str]:
    found = [
        f"{name}={value}"
        for name, value in (
            ("oversells", cell.oversells),
            ("double_charges", cell.double_charges),
            ("stuck_orders", cell.stuck_orders),
            ("stock_drift", cell.stock_drift),
            ("unknown_outcome", sum(cell.unknown_outcome.values())),
            ("errors", cell.errors),
            # A scrape that failed leaves a hole in the lag figures.
            ("lag_scrape_errors", cell.consumer_lag.scrape_errors),
        )
        if value
    ]
    if cell.completed == 0:
        found.append("no checkout completed")
    return found


async def _run(options: argparse.Namespace) -> list[Cell]:
    broker = EmbeddedBroker.start()
    cells: list[Cell] = []
    try:
        for backend in options.backends:
            env = dict(PRODUCTION_LIKE_ENV)
            if backend == "postgres":
                env.update(await _create_databases(options.postgres))
            data_dir = Path(tempfile.mkdtemp(prefix=f"bench-checkout-{backend}-"))
            metrics_ports = {service: free_port() for service in SERVICES}
            shop = await open_checkout_stack(
                broker.bootstrap,
                data_dir,
                env,
                service_env={s: {"MC_METRICS_PORT": str(p)} for s, p in metrics_ports.items()},
            )
            metrics_urls = {s: f"http://127.0.0.1:{p}/metrics" for s, p in metrics_ports.items()}
            pids = {name: p.popen.pid for name, p in shop.stack.processes.items()}
            pids["broker"] = broker.process.pid
            try:
                await shop.ready_or_skip()
                for concurrency in options.concurrency:
                    cell = await _load(
                        shop, concurrency, options.duration, 100_000, pids, metrics_urls
                    )
                    cell.backend = backend
                    cells.append(cell)
                    print(json.dumps(asdict(cell)), flush=True)  # noqa: T201
            finally:
                await close_checkout_stack(shop)
    finally:
        broker.stop()
    return cells


def _table(cells: Sequence[Cell]) -> str:
    names = sorted({name for cell in cells for name in cell.cpu_ms_per_checkout})
    header = (
        f"{'backend':8} {'in flight':>9} {'done/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'refused':>7} {'unknown':>7} {'errors':>6}  cpu ms/checkout: "
        + " ".join(f"{name:>8}" for name in names)
    )
    lines = [header]
    for cell in cells:
        lines.append(
            f"{cell.backend:8} {cell.concurrency:>9} {cell.per_second:>7} {cell.p50_ms:>7} "
            f"{cell.p99_ms:>7} {sum(cell.refused.values()):>7} "
            f"{sum(cell.unknown_outcome.values()):>7} {cell.errors:>6}  {'':16} "
            + " ".join(f"{cell.cpu_ms_per_checkout.get(name, 0.0):>8}" for name in names)
            + ("  FAILED: " + ", ".join(cell.problems) if cell.problems else "")
        )
    return "\n".join(lines)


def _lag_table(cells: Sequence[Cell]) -> str:
    lines = [
        f"{'backend':8} {'in flight':>9}  {'consumer group/topic':60} {'max':>6} {'final':>6} "
        "drained after"
    ]
    for cell in cells:
        figures = cell.consumer_lag
        for name in figures.max:
            drained = figures.drained_after_s[name]
            if drained is not None:
                drain = f"{drained} s"
            else:
                drain = f"NOT within {figures.drain_waited_s} s"
            lines.append(
                f"{cell.backend:8} {cell.concurrency:>9}  {name:60} {figures.max[name]:>6.0f} "
                f"{figures.final[name]:>6.0f} {drain}"
            )
        if not figures.max:
            lines.append(f"{cell.backend:8} {cell.concurrency:>9}  (no lag series scraped)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.checkout", description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per cell")
    parser.add_argument(
        "--concurrency",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1, 8, 32],
        help="comma-separated buyers in flight",
    )
    parser.add_argument(
        "--backends",
        type=lambda v: v.split(","),
        default=["sqlite", "postgres"],
        help="sqlite,postgres",
    )
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="server URL (trust auth)")
    options, _unknown = parser.parse_known_args(argv)
    try:
        cells = asyncio.run(_run(options))
    except pytest.skip.Exception as skipped:
        print(f"checkout benchmark not run: {skipped.msg}")  # noqa: T201
        return 0
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps([asdict(c) for c in cells], indent=2))
    print(_table(cells))  # noqa: T201
    print("\nconsumer lag (records, summed over partitions):")  # noqa: T201
    print(_lag_table(cells))  # noqa: T201
    failed = [cell for cell in cells if cell.problems]
    if failed:
        print(  # noqa: T201
            f"\n!!! CHECKOUT BENCHMARK FAILED: {len(failed)} of {len(cells)} cells have "
            "errors, unknown outcomes or anomalies (see FAILED above); their figures do not "
            f"count. Results in {RESULTS_FILE}"
        )
        return 1
    print(f"no anomalies, no unknown outcomes, no errors; results in {RESULTS_FILE}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
