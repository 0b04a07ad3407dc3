"""A consumer under test: the real ``common.consumer`` machinery with a handler that records.

Its "effect" is a row per handled event in a SQLite table, written through ``Store.handling``
like a service's use case, so a test can count exactly how often each event took effect, and
which replica applied it. It runs in the test's event loop (``ProbeConsumer``) or as its own
process (``python -m tests.support.consumer_probe``), which a test can SIGKILL.

Event types: ``test.probe`` is handled; ``data.fail`` makes its handler raise every time (a
poison event), and an event id listed in ``ProbeConsumer.broken`` fails until removed (a bug
fixed later, then replayed). ``MC_PROBE_HANG_AFTER_EFFECT=1`` makes the handler hang once its
effect committed, so the offset is never committed: a kill then lands between the two.
``batched`` (``MC_PROBE_BATCHED=1``) gives the subscription a batch handler too, so records
taken together apply in one unit of work (``Store.handling_batch``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from opentelemetry import trace
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from common.consumer import (
    EventConsumers,
    IncomingEvent,
    RetryPolicy,
    Subscription,
    install_consumers,
)
from common.db import Database, create_engine
from common.dead_letters import DeadLetterStore, dead_letter_table
from common.inbox import Delivery, inbox_table
from common.kafka import BackgroundStream, create_faust_app
from common.outbox import Outbox, OutgoingEvent, cloud_event, outbox_table
from common.pagination import PageTokens
from common.settings import CommonSettings
from common.topics import Topic
from common.unit_of_work import Store, UnitOfWork

SERVICE = "probe"
EVENT_TYPE = "test.probe"
TOPIC = Topic.ORDER_EVENTS  # on the test's own broker

effects = Table(
    "probe_effects",
    MetaData(),
    Column("n", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
    Column("key", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("instance", String(64), nullable=False),
)

# Every time the handler was called, committed apart from the effect: evidence of redelivery.
seen = Table(
    "probe_seen",
    MetaData(),
    Column("n", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
    Column("instance", String(64), nullable=False),
)


class ProbeUnit(UnitOfWork):
    async def record_effect(self, event: IncomingEvent, instance: str) -> None:
        await self._connection.execute(
            insert(effects).values(
                event_id=event.id,
                key=event.subject,
                seq=int(event.data.get("seq", 0)),
                instance=instance,
            )
        )


def _probe_unit(connection: AsyncConnection, outbox: Outbox) -> ProbeUnit:
    return ProbeUnit(connection, outbox)


async def create_schema(database: Database) -> None:
    async with database.engine.begin() as connection:
        for table in (
            effects,
            seen,
            outbox_table(SERVICE),
            inbox_table(SERVICE),
            dead_letter_table(SERVICE),
        ):
            await connection.run_sync(table.create, checkfirst=True)


def kafka_settings(bootstrap: str) -> CommonSettings:
    """Short group timings and fetch wait, as the tests and `make run` use (KAFKA.md)."""
    return CommonSettings(
        kafka_bootstrap=bootstrap,
        kafka_fetch_max_wait_ms=10,
        kafka_session_timeout_s=2,
        kafka_heartbeat_interval_s=0.5,
    )


@dataclass
class ProbeConsumer:
    """One replica of the probe consumer, in this event loop."""

    database: Database
    bootstrap: str
    group: str
    instance: str = "a"
    hang_after_effect: bool = False
    retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(attempts=3, first_delay_s=0.05, max_delay_s=0.2)
    )
    broken: set[str] = field(default_factory=set)
    handled_in: list[int] = field(default_factory=list)  # the span ids the handler ran in
    batched: bool = False
    batch_sizes: list[int] = field(default_factory=list)  # what the batch handler was handed

    def __post_init__(self) -> None:
        self.store = Store(self.database, Outbox(SERVICE), _probe_unit)
        self.dead_letters = DeadLetterStore(self.database, SERVICE)
        batch = self._handle_batch if self.batched else None
        self.consumers = EventConsumers.build(
            self.dead_letters,
            [Subscription("probe", TOPIC, frozenset({EVENT_TYPE}), self._handle, batch)],
            self.retry,
            PageTokens(b"probe-page-token-key-0123456789"),
        )
        self.stream: BackgroundStream | None = None

    async def _handle(self, event: IncomingEvent, delivery: Delivery) -> None:
        self.handled_in.append(trace.get_current_span().get_span_context().span_id)
        async with self.database.session() as session:
            await session.execute(insert(seen).values(event_id=event.id, instance=self.instance))
        if event.data.get("fail") or event.id in self.broken:
            raise RuntimeError(f"told to fail on {event.id}")
        async with self.store.handling(delivery) as unit:
            await unit.record_effect(event, self.instance)
        if self.hang_after_effect:
            await asyncio.Event().wait()

    async def _handle_batch(self, events: Sequence[tuple[IncomingEvent, Delivery]]) -> list[bool]:
        self.batch_sizes.append(len(events))
        self.handled_in.append(trace.get_current_span().get_span_context().span_id)
        async with self.database.session() as session:
            await session.execute(
                insert(seen), [{"event_id": e.id, "instance": self.instance} for e, _ in events]
            )
        for event, _ in events:
            if event.data.get("fail") or event.id in self.broken:
                raise RuntimeError(f"told to fail on {event.id}")
        async with self.store.handling_batch([delivery for _, delivery in events]) as (unit, new):
            for (event, _), first in zip(events, new, strict=True):
                if first:
                    await unit.record_effect(event, self.instance)
        if self.hang_after_effect:
            await asyncio.Event().wait()
        return new

    def start(self) -> None:
        settings = kafka_settings(self.bootstrap)
        app = create_faust_app(self.group, settings, offset_reset="earliest")
        install_consumers(app, self.consumers.consumers)
        self.stream = BackgroundStream(app, settings)
        self.stream.start()

    async def stop(self) -> None:
        if self.stream is not None:
            await self.stream.stop()


def probe_event(
    key: str, seq: int, *, fail: bool = False, event_type: str = EVENT_TYPE
) -> tuple[str, bytes]:
    """(event id, CloudEvents JSON) of one probe event for aggregate ``key``."""
    event_id = str(uuid.uuid4())
    envelope = {
        "specversion": "1.0",
        "id": event_id,
        "source": "/tests/probe",
        "type": event_type,
        "time": "2026-12-02T00:00:00Z",
        "subject": key,
        "datacontenttype": "application/json",
        "data": {"seq": seq, "fail": fail},
    }
    return event_id, json.dumps(envelope).encode()


def start_consumers(consumers: EventConsumers, bootstrap: str, group: str) -> BackgroundStream:
    """A service's consumers (its events.py) running in this event loop, as the runner runs them."""
    settings = kafka_settings(bootstrap)
    app = create_faust_app(group, settings, offset_reset="earliest")
    install_consumers(app, consumers.consumers)
    stream = BackgroundStream(app, settings)
    stream.start()
    return stream


def encoded(outgoing: OutgoingEvent) -> tuple[str, bytes]:
    """(key, value) of an event as the outbox relay publishes it."""
    envelope = cloud_event("/tests", outgoing, event_id=str(uuid.uuid4()), time=datetime.now(UTC))
    return outgoing.subject, json.dumps(envelope).encode()


async def produce(
    bootstrap: str,
    records: Iterable[tuple[str, bytes]],
    headers: Mapping[str, str] | None = None,
    topic: Topic = TOPIC,
) -> None:
    """Send (key, value) records to ``topic`` and wait for every acknowledgement."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = [
            await producer.send(
                topic.value,
                key=key.encode(),
                value=value,
                headers=[(k, v.encode()) for k, v in (headers or {}).items()],
            )
            for key, value in records
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def effect_rows(database: Database) -> list[Mapping[str, Any]]:
    return await _rows(database, effects)


async def seen_rows(database: Database) -> list[Mapping[str, Any]]:
    return await _rows(database, seen)


async def _rows(database: Database, table: Table) -> list[Mapping[str, Any]]:
    async with database.session() as session:
        rows = await session.execute(select(table).order_by(table.c.n))
        return [dict(row) for row in rows.mappings()]


async def _main(db_url: str, bootstrap: str, group: str, instance: str) -> None:
    database = Database(create_engine(db_url))
    await create_schema(database)
    probe = ProbeConsumer(
        database,
        bootstrap,
        group,
        instance,
        hang_after_effect=os.environ.get("MC_PROBE_HANG_AFTER_EFFECT") == "1",
        batched=os.environ.get("MC_PROBE_BATCHED") == "1",
    )
    probe.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await probe.stop()
    await database.dispose()


if __name__ == "__main__":
    asyncio.run(_main(*sys.argv[1:5]))
