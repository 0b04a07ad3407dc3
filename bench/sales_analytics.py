"""Events per second the sales read model keeps up with, on SQLite and PostgreSQL.

What is timed is the consumers' own work, not Kafka: the records go through
``EventConsumer.process_batch`` exactly as the Faust agent hands them over, ``--batch`` at a
time (CloudEvent decoding, the inbox inserts, the fold's upserts and ``as_of``, one
transaction per batch; ``--batch 1`` is one transaction per event), with the two
subscriptions of ``payment_svc.events`` running at once (``order-events`` and
``payment-events``, one partition each), as one payment replica runs them. The broker is left
out on purpose: KAFKA.md measured it far above these rates, so it is not the bound.

The events are a synthetic shop: two-line orders placed, 85 % confirmed and 15 % failed
(three reasons), one confirmed order in ten cancelled and one in ten partly refunded, over
48 hours. Reported per backend: events applied, events/s, this process's CPU ms per event,
transactions per event, and errors (any outcome but
"handled", which would mean the figures are wrong): a cell with errors is marked ``!``
and the run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from google.protobuf.message import Message
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from common.consumer import Batching, EventConsumer, EventConsumers, RetryPolicy
from common.db import Database
from common.dead_letters import ConsumedRecord, DeadLetterStore
from common.metrics import REGISTRY
from common.migrations import script_location_of, upgrade_to_head
from common.outbox import Outbox, OutgoingEvent, cloud_event
from common.pagination import PageTokens
from common.topics import Topic
from microcommerce.common.v1 import money_pb2
from microcommerce.payment.v1 import events_pb2, order_service_pb2
from payment_svc.analytics.facts import PAYMENT_TYPES
from payment_svc.analytics.service import ORDERS_CONSUMER, PAYMENTS_CONSUMER, SalesAnalytics
from payment_svc.analytics.store import AnalyticsStore
from payment_svc.events import sales_subscriptions

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "sales_analytics.json"
DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
START = datetime(2026, 11, 30, tzinfo=UTC)
REASONS = ("CARD_DECLINED", "INSUFFICIENT_FUNDS", "INSUFFICIENT_STOCK")


@dataclass
class Cell:
    backend: str
    events: int
    seconds: float
    events_per_second: float
    # This process's CPU per event (all its threads; PostgreSQL's own work is not in it): on a
    # shared machine events/s falls with the load, this much less.
    cpu_ms_per_event: float
    transactions_per_event: float
    errors: int
    batch: int


def _usd(amount: int) -> money_pb2.Money:
    return money_pb2.Money(amount=amount, currency="USD")


def _record(topic: Topic, kind: str, order_id: str, data: Message, at: datetime) -> ConsumedRecord:
    outgoing = OutgoingEvent(topic, kind, order_id, data)
    envelope = cloud_event("/bench", outgoing, event_id=str(uuid.uuid4()), time=at)
    return ConsumedRecord(topic.value, 0, 0, order_id.encode(), json.dumps(envelope).encode(), {})


def synthetic_events(orders: int, seed: int = 14) -> list[ConsumedRecord]:
    """The events of ``orders`` orders, in the order a shop would publish them."""
    rng = random.Random(seed)
    records: list[ConsumedRecord] = []
    for n in range(orders):
        order_id = f"o-{n:08d}"
        at = START + timedelta(seconds=rng.uniform(0, 48 * 3600))
        items = [
            order_service_pb2.OrderItem(
                product_id=f"p-{rng.randrange(500):04d}",
                quantity=rng.randint(1, 3),
                unit_price=_usd(rng.randrange(100, 5000)),
            )
            for _ in range(2)
        ]
        total = _usd(sum(i.quantity * i.unit_price.amount for i in items))
        placed = events_pb2.OrderPlaced(order_id=order_id, user_id="u", items=items, total=total)
        records.append(
            _record(Topic.ORDER_EVENTS, "microcommerce.order.placed", order_id, placed, at)
        )
        at += timedelta(seconds=2)
        if rng.random() < 0.15:
            failed = events_pb2.OrderFailed(
                order_id=order_id, user_id="u", reason=rng.choice(REASONS)
            )
            records.append(
                _record(Topic.ORDER_EVENTS, "microcommerce.order.failed", order_id, failed, at)
            )
            continue
        confirmed = events_pb2.OrderConfirmed(order_id=order_id, user_id="u", total=total)
        records.append(
            _record(Topic.ORDER_EVENTS, "microcommerce.order.confirmed", order_id, confirmed, at)
        )
        fate = rng.random()
        if fate < 0.2:
            at += timedelta(hours=1)
            amount = total if fate < 0.1 else _usd(total.amount // 2)
            refunded = events_pb2.PaymentRefunded(
                order_id=order_id, refund_id=f"r-{n}", amount=amount, requested_by="admin"
            )
            records.append(
                _record(
                    Topic.PAYMENT_EVENTS, "microcommerce.payment.refunded", order_id, refunded, at
                )
            )
            if fate < 0.1:
                cancelled = events_pb2.OrderCancelled(
                    order_id=order_id, user_id="u", cancelled_by="u", refunded_amount=amount
                )
                records.append(
                    _record(
                        Topic.ORDER_EVENTS, "microcommerce.order.cancelled", order_id, cancelled, at
                    )
                )
    return records


async def _postgres_url(server: str) -> str:
    engine = create_async_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    name = f"mc_bench_analytics_{uuid.uuid4().hex[:8]}"
    try:
        async with engine.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()
    return server.rsplit("/", 1)[0] + f"/{name}"


async def _cell(
    backend: str, url: str, records: list[ConsumedRecord], seconds: float, batch: int
) -> Cell:
    database = Database.from_url(url, application_name=f"bench-analytics-{backend}")
    try:
        await upgrade_to_head(database.engine, script_location_of("payment"))
        analytics = SalesAnalytics(AnalyticsStore(database, Outbox("payment")))
        consumers = EventConsumers.build(
            DeadLetterStore(database, "payment"),
            sales_subscriptions(analytics),
            RetryPolicy(attempts=1),
            PageTokens(b"bench-sales-analytics-key-012345"),
        )
        by_name = {consumer.name: consumer for consumer in consumers.consumers}
        streams = {
            ORDERS_CONSUMER: [r for r in records if _type(r) not in PAYMENT_TYPES],
            PAYMENTS_CONSUMER: [r for r in records if _type(r) in PAYMENT_TYPES],
        }
        deadline = time.monotonic() + seconds
        applied = errors = 0

        async def consume(consumer: EventConsumer, stream: list[ConsumedRecord]) -> None:
            nonlocal applied, errors
            for start in range(0, len(stream), batch):
                if time.monotonic() >= deadline:
                    return
                outcomes = await consumer.process_batch(stream[start : start + batch])
                applied += len(outcomes)
                errors += sum(outcome != "handled" for outcome in outcomes)

        committed = _transactions(database)
        began, cpu_began = time.monotonic(), time.process_time()
        await asyncio.gather(*(consume(by_name[name], stream) for name, stream in streams.items()))
        elapsed = time.monotonic() - began
        cpu = time.process_time() - cpu_began
        committed = _transactions(database) - committed
    finally:
        await database.dispose()
    return Cell(
        backend,
        applied,
        round(elapsed, 2),
        round(applied / elapsed, 1),
        round(cpu * 1000 / max(applied, 1), 2),
        round(committed / max(applied, 1), 3),
        errors,
        batch,
    )


def _transactions(database: Database) -> float:
    labels = {"database": database.name, "outcome": "ok"}
    return REGISTRY.get_sample_value("mc_db_unit_of_work_seconds_count", labels) or 0.0


def _type(record: ConsumedRecord) -> str:
    return str(json.loads(record.value)["type"])


async def _run(options: argparse.Namespace) -> list[Cell]:
    records = synthetic_events(options.orders)
    cells = []
    for backend in options.backends:
        if backend == "postgres":
            url = await _postgres_url(options.postgres)
        else:
            folder = Path(tempfile.mkdtemp(prefix="bench-analytics-"))
            url = f"sqlite+aiosqlite:///{folder / 'payment.db'}"
        cell = await _cell(backend, url, records, options.duration, options.batch)
        cells.append(cell)
        mark = " !" if cell.errors else ""
        print(json.dumps(asdict(cell)) + mark, flush=True)  # noqa: T201
    return cells


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sales_analytics", description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per backend at most")
    parser.add_argument(
        "--orders", type=int, default=20_000, help="synthetic orders (~2.3 events each)"
    )
    parser.add_argument(
        "--backends",
        type=lambda v: v.split(","),
        default=["sqlite", "postgres"],
        help="sqlite,postgres",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=Batching().max_records,
        help="records handed to a consumer at once (the agents' default; 1: one by one)",
    )
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="server URL (trust auth)")
    options, _unknown = parser.parse_known_args(argv)
    cells = asyncio.run(_run(options))
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps([asdict(c) for c in cells], indent=2))
    errors = sum(c.errors for c in cells)
    if errors:
        print(f"!!! {errors} EVENTS NOT HANDLED: these figures are not valid !!!")  # noqa: T201
        return 1
    print(f"no errors; results in {RESULTS_FILE}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
