"""Prometheus metrics of a service process: RPCs, units of work, checkout, saga, outbox, Kafka
consumer lag, process.

One registry per process (``REGISTRY``): a service process serves one service, and tests that
run several in one process only see their counts add up. The names of gRPC series follow the
go-grpc-prometheus convention, so stock dashboards and alerts read them unchanged.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from common.consumer_lag import ConsumerLag

# From a sub-millisecond cached read to a checkout waiting on the card provider's retries.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

GRPC_STARTED = Counter(
    "grpc_server_started",
    "RPCs started on the server, by service, method and type.",
    ("grpc_type", "grpc_service", "grpc_method"),
    registry=REGISTRY,
)
GRPC_HANDLED = Counter(
    "grpc_server_handled",
    "RPCs completed on the server, by service, method, type and status code.",
    ("grpc_type", "grpc_service", "grpc_method", "grpc_code"),
    registry=REGISTRY,
)
GRPC_HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from an RPC's start to its status, by service, method and type.",
    ("grpc_type", "grpc_service", "grpc_method"),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
UNIT_OF_WORK_SECONDS = Histogram(
    "mc_db_unit_of_work_seconds",
    "Time of one database unit of work (a transaction), by database and outcome.",
    ("database", "outcome"),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
UNIT_OF_WORK_FAILURES = Counter(
    "mc_db_unit_of_work_failures",
    "Units of work rolled back by an error, by database and error type.",
    ("database", "error"),
    registry=REGISTRY,
)
CHECKOUT_PLACED = Counter(
    "mc_checkout_placed",
    "Checkouts accepted: an order stored with its idempotency key (the funnel's entry; each "
    "ends once in mc_checkout_outcomes_total).",
    registry=REGISTRY,
)
CHECKOUT_OUTCOMES = Counter(
    "mc_checkout_outcomes",
    "Checkouts that ended, by outcome (confirmed or failed) and failure reason.",
    ("outcome", "reason"),
    registry=REGISTRY,
)
SAGA_STEP_SECONDS = Histogram(
    "mc_saga_step_seconds",
    "Time of one checkout saga step, by step and outcome.",
    ("step", "outcome"),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
OUTBOX_BACKLOG = Gauge(
    "mc_outbox_backlog",
    "Outbox events committed but not yet published, by service.",
    ("service",),
    registry=REGISTRY,
)
OUTBOX_OLDEST_AGE = Gauge(
    "mc_outbox_oldest_unpublished_age_seconds",
    "Age of the oldest unpublished outbox event (0 when none), by service.",
    ("service",),
    registry=REGISTRY,
)
OUTBOX_PUBLISHED = Counter(
    "mc_outbox_published_events",
    "Outbox events the relay published to Kafka, by service.",
    ("service",),
    registry=REGISTRY,
)
OUTBOX_PUBLISH_ERRORS = Counter(
    "mc_outbox_publish_errors",
    "Relay rounds that failed to publish (broker or database error), by service.",
    ("service",),
    registry=REGISTRY,
)

# Every consumer group of the process (health stream, event consumers) registers here.
CONSUMER_LAG = ConsumerLag(registry=REGISTRY)


@asynccontextmanager
async def timed_unit_of_work(database: str) -> AsyncIterator[None]:
    """Time the enclosed transaction; count it as failed if it raises."""
    start = time.perf_counter()
    try:
        yield
    except BaseException as error:
        UNIT_OF_WORK_SECONDS.labels(database, "error").observe(time.perf_counter() - start)
        UNIT_OF_WORK_FAILURES.labels(database, type(error).__name__).inc()
        raise
    UNIT_OF_WORK_SECONDS.labels(database, "ok").observe(time.perf_counter() - start)


@asynccontextmanager
async def timed_saga_step(step: str) -> AsyncIterator[None]:
    """Time one saga step; ``error`` when it raised (the recovery loop retries it)."""
    start = time.perf_counter()
    try:
        yield
    except BaseException:
        SAGA_STEP_SECONDS.labels(step, "error").observe(time.perf_counter() - start)
        raise
    SAGA_STEP_SECONDS.labels(step, "ok").observe(time.perf_counter() - start)


def exposition() -> bytes:
    """The registry in the Prometheus text format."""
    return generate_latest(REGISTRY)


async def start_metrics_server(
    host: str, port: int, *, before_scrape: Callable[[], Awaitable[None]] | None = None
) -> tuple[web.AppRunner, int]:
    """Serve ``GET /metrics`` on ``host:port`` (0 picks a free port); the runner and the port.

    ``before_scrape`` refreshes gauges read from live state (the outbox backlog) on each scrape,
    so they are never staler than the scrape itself.
    """

    async def handle(_request: web.Request) -> web.Response:
        if before_scrape is not None:
            await before_scrape()
        return web.Response(body=exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handle, allow_head=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # aiohttp exposes the bound sockets only here
    sockets = getattr(server, "sockets", None) or ()
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)


CONSUMER_EVENTS = Counter(
    "mc_consumer_events",
    "Events a consumer finished with, by outcome: handled, duplicate (already in the inbox), "
    "skipped (a type it does not handle) or dead_lettered.",
    ["consumer", "outcome"],
    registry=REGISTRY,
)
CONSUMER_RETRIES = Counter(
    "mc_consumer_handler_retries",
    "Handler attempts that failed and were retried after a back-off.",
    ["consumer"],
    registry=REGISTRY,
)
CONSUMER_DEAD_LETTERS = Counter(
    "mc_consumer_dead_letters",
    "Events written to the dead-letter store, by cause: undecodable, bad_data or handler_failed.",
    ["consumer", "cause"],
    registry=REGISTRY,
)
