"""Events written with their change reach Kafka once committed, in order, even across outages."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import text

from common.db import Database
from common.inbox import first_delivery, inbox_table
from common.outbox import Outbox, OutboxRelay, OutgoingEvent, pending_count
from common.settings import CommonSettings
from localrun.broker import EmbeddedBroker
from tests.support.processes import wait_for


@pytest.fixture
async def outbox(database: Database) -> Outbox:
    # A fresh name per test: the PostgreSQL database is shared by the whole session.
    box = Outbox(f"t{uuid.uuid4().hex[:10]}")
    async with database.engine.begin() as connection:
        await connection.run_sync(box.table.metadata.create_all)
    return box


@pytest.fixture
def topic() -> str:
    return f"test-outbox-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def relay(
    database: Database, outbox: Outbox, broker: EmbeddedBroker
) -> AsyncIterator[OutboxRelay]:
    settings = CommonSettings(kafka_bootstrap=broker.bootstrap)
    running = OutboxRelay(database, outbox, settings, poll_interval_s=0.2)
    task = asyncio.create_task(running.run())
    yield running
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


class Received:
    """Everything a fresh consumer group reads from one topic, from the beginning."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.headers: list[dict[str, bytes]] = []

    async def at_least(self, count: int) -> list[tuple[str, dict[str, Any]]]:
        async def enough() -> bool:
            batches = await self._consumer.getmany(timeout_ms=100)
            for batch in batches.values():
                for record in batch:
                    assert record.key is not None
                    assert record.value is not None
                    self.records.append((record.key.decode(), json.loads(record.value)))
                    self.headers.append(dict(record.headers))
            return len(self.records) >= count

        await wait_for(enough, within=30)
        return self.records


@pytest.fixture
async def received(broker: EmbeddedBroker, topic: str) -> AsyncIterator[Received]:
    # The topic exists before anyone reads it, and the reader takes every partition itself,
    # without a consumer group: a group's join costs half its session timeout on the embedded
    # broker (3 s per test here), and what is tested is the relay, not group membership.
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
    )
    await consumer.start()
    yield Received(consumer)
    await consumer.stop()


def _event(topic: str, subject: str, n: int) -> OutgoingEvent:
    return OutgoingEvent(topic, "microcommerce.test.happened", subject, {"n": n})


async def test_committed_events_are_published_as_cloudevents_keyed_by_subject(
    database: Database, outbox: Outbox, relay: OutboxRelay, received: Received, topic: str
) -> None:
    async with database.session() as session:
        [event_id] = await outbox.add(session, _event(topic, "order-1", 1))

    [(key, envelope)] = await received.at_least(1)

    assert key == "order-1"
    assert envelope["specversion"] == "1.0"
    assert envelope["id"] == event_id
    assert envelope["type"] == "microcommerce.test.happened"
    assert envelope["source"] == outbox.source
    assert envelope["subject"] == "order-1"
    assert envelope["datacontenttype"] == "application/json"
    assert envelope["data"] == {"n": 1}
    assert envelope["time"].endswith("Z")
    await wait_for(lambda: _none_pending(database, outbox), within=10)


async def _none_pending(database: Database, outbox: Outbox) -> bool:
    return await pending_count(database, outbox) == 0


async def test_events_of_a_rolled_back_unit_of_work_are_never_published(
    database: Database, outbox: Outbox, relay: OutboxRelay, received: Received, topic: str
) -> None:
    async def record_then_fail() -> None:
        async with database.session() as session:
            await outbox.add(session, _event(topic, "order-1", 1))
            raise RuntimeError("the use case failed after recording its event")

    with pytest.raises(RuntimeError):
        await record_then_fail()
    async with database.session() as session:
        await outbox.add(session, _event(topic, "order-2", 2))

    records = await received.at_least(1)

    assert [key for key, _ in records] == ["order-2"]


async def test_a_commit_wakes_the_relay_without_waiting_for_its_poll(
    database: Database, outbox: Outbox, received: Received, topic: str, broker: EmbeddedBroker
) -> None:
    # The relay polls once an hour here: only the commit's wake-up can publish in time.
    settings = CommonSettings(kafka_bootstrap=broker.bootstrap)
    task = asyncio.create_task(OutboxRelay(database, outbox, settings, poll_interval_s=3600).run())
    try:
        async with database.session() as session:
            await outbox.add(session, _event(topic, "order-1", 1))
        await received.at_least(1)  # the relay's first round is over: it waits for a commit
        async with database.session() as session:
            await outbox.add(session, _event(topic, "order-1", 2))
        records = await received.at_least(2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    assert [envelope["data"]["n"] for _, envelope in records] == [1, 2]


async def test_one_aggregates_events_arrive_in_the_order_they_were_committed(
    database: Database, outbox: Outbox, relay: OutboxRelay, received: Received, topic: str
) -> None:
    for n in range(30):
        async with database.session() as session:
            await outbox.add(session, _event(topic, f"order-{n % 3}", n))

    records = await received.at_least(30)

    for subject in ("order-0", "order-1", "order-2"):
        numbers = [envelope["data"]["n"] for key, envelope in records if key == subject]
        assert numbers == sorted(numbers)
        assert len(set(numbers)) == 10


async def test_events_committed_while_the_broker_is_unreachable_arrive_after_it_returns(
    database: Database,
    outbox: Outbox,
    relay: OutboxRelay,
    received: Received,
    topic: str,
    broker: EmbeddedBroker,
) -> None:
    async with database.session() as session:
        await outbox.add(session, _event(topic, "order-1", 0))
    await received.at_least(1)  # connected and flowing

    broker.freeze()
    try:
        for n in range(1, 11):
            async with database.session() as session:  # commits never wait for Kafka
                await outbox.add(session, _event(topic, "order-1", n))
        assert await pending_count(database, outbox) > 0
    finally:
        broker.thaw()

    records = await received.at_least(11)

    numbers = [envelope["data"]["n"] for _, envelope in records]
    assert set(numbers) == set(range(11))  # none lost; duplicates are allowed (at least once)
    first_seen = list(dict.fromkeys(numbers))
    assert first_seen == sorted(first_seen)
    await wait_for(lambda: _none_pending(database, outbox), within=30)


async def test_an_event_id_is_handled_once_per_consumer(database: Database) -> None:
    table = inbox_table(f"t{uuid.uuid4().hex[:10]}")
    async with database.engine.begin() as connection:
        await connection.run_sync(table.metadata.create_all)

    async with database.session() as session:
        first = await first_delivery(session, table, "restock", "event-1")
        again = await first_delivery(session, table, "restock", "event-1")
        other_consumer = await first_delivery(session, table, "audit", "event-1")

    assert (first, again, other_consumer) == (True, False, True)


async def test_a_rolled_back_delivery_can_be_handled_again(database: Database) -> None:
    table = inbox_table(f"t{uuid.uuid4().hex[:10]}")
    async with database.engine.begin() as connection:
        await connection.run_sync(table.metadata.create_all)

    async def deliver_then_fail() -> None:
        async with database.session() as session:
            await first_delivery(session, table, "restock", "event-1")
            raise RuntimeError("applying the event failed")

    with pytest.raises(RuntimeError):
        await deliver_then_fail()
    async with database.session() as session:
        assert await first_delivery(session, table, "restock", "event-1")
        count = await session.scalar(text(f"SELECT count(*) FROM {table.name}"))
    assert count == 1


async def test_the_publish_continues_the_trace_of_the_change_that_wrote_the_event(
    database: Database,
    outbox: Outbox,
    relay: OutboxRelay,
    received: Received,
    topic: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)  # else the SDK makes no-op spans
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = provider.get_tracer("test")
    monkeypatch.setattr("common.outbox.tracer", lambda: tracer)

    with tracer.start_as_current_span("place order") as change:
        async with database.session() as session:
            await outbox.add(session, _event(topic, "order-1", 1))
    [(_key, envelope)] = await received.at_least(1)

    written = change.get_span_context()
    trace_id = format(written.trace_id, "032x")
    # The CloudEvents distributed-tracing extension names the change that wrote the event.
    # (The flags byte is the SDK's to choose: sampled, and possibly "random trace id".)
    assert envelope["traceparent"].startswith(f"00-{trace_id}-{format(written.span_id, '016x')}-")

    async def published() -> bool:
        return any(span.kind is SpanKind.PRODUCER for span in spans.get_finished_spans())

    await wait_for(published, within=10)
    [publish] = [span for span in spans.get_finished_spans() if span.kind is SpanKind.PRODUCER]
    assert publish.parent is not None
    assert publish.parent.span_id == written.span_id
    assert publish.context.trace_id == written.trace_id
    assert publish.attributes is not None
    assert publish.attributes["messaging.destination.name"] == topic
    # The record's header continues the publish span, for the consumer to pick up.
    [headers] = received.headers
    publish_id = format(publish.context.span_id, "016x")
    assert headers["traceparent"].decode().startswith(f"00-{trace_id}-{publish_id}-")
