"""The consumer pattern (common.consumer) against a real broker and a real database.

Each event takes effect once however often Kafka delivers it; a poison event is dead-lettered
without holding up its partition, and can be replayed; a frozen broker and a killed consumer
lose nothing; two replicas share the partitions.

Each test runs its own broker (Tansu starts in well under a second): one is frozen, and each
test's consumer group reads its topic from the start, which must hold only that test's events.
Nor may the session's broker carry test events on a contract topic that other tests'
services consume.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from common.db import Database, create_engine
from common.dead_letters import DeadLetterStatus
from common.errors import FailedPrecondition
from common.metrics import REGISTRY
from localrun.broker import EmbeddedBroker
from tests.support.consumer_probe import (
    ProbeConsumer,
    create_schema,
    effect_rows,
    probe_event,
    produce,
    seen_rows,
)
from tests.support.processes import ROOT, Process, wait_for

# Joining a group takes about a second with the short timings; a broker that was frozen
# makes its members rejoin.
WITHIN_S = 30.0


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker.start()
    yield broker
    broker.thaw()  # in case a test failed while it was frozen
    broker.stop()


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(create_engine(f"sqlite+aiosqlite:///{tmp_path / 'probe.db'}"))
    await create_schema(db)
    yield db
    await db.dispose()


@pytest.fixture
def group() -> str:
    return f"probe-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=[False, True], ids=["one-by-one", "batched"])
def batched(request: pytest.FixtureRequest) -> bool:
    """Every guarantee holds for a consumer that applies records one by one and in batches."""
    return bool(request.param)


@pytest.fixture
async def probe(
    database: Database, own_broker: EmbeddedBroker, group: str, batched: bool
) -> AsyncIterator[ProbeConsumer]:
    consumer = ProbeConsumer(database, own_broker.bootstrap, group, batched=batched)
    consumer.start()
    yield consumer
    await consumer.stop()


def counted(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "mc_consumer_events_total", {"consumer": "probe", "outcome": outcome}
    )
    return value or 0.0


def dead_lettered(cause: str) -> float:
    value = REGISTRY.get_sample_value(
        "mc_consumer_dead_letters_total", {"consumer": "probe", "cause": cause}
    )
    return value or 0.0


def effects_of(rows: list[Mapping[str, Any]], event_id: str) -> int:
    return sum(1 for row in rows if row["event_id"] == event_id)


async def test_an_event_delivered_twice_takes_effect_once(
    probe: ProbeConsumer, own_broker: EmbeddedBroker, database: Database
) -> None:
    key = f"order-{uuid.uuid4().hex}"
    event_id, value = probe_event(key, 1)
    duplicates_before = counted("duplicate")

    # The relay publishes at least once: the same event may come twice, at any distance.
    await produce(own_broker.bootstrap, [(key, value), (key, value)])

    async def both_seen() -> bool:
        return len([r for r in await seen_rows(database) if r["event_id"] == event_id]) == 2

    await wait_for(both_seen, within=WITHIN_S)
    assert effects_of(await effect_rows(database), event_id) == 1
    assert counted("duplicate") == duplicates_before + 1


async def test_a_poison_event_is_dead_lettered_and_the_events_behind_it_still_flow(
    probe: ProbeConsumer, own_broker: EmbeddedBroker, database: Database
) -> None:
    key = f"order-{uuid.uuid4().hex}"  # one key: one partition, one queue
    first_id, first = probe_event(key, 1)
    failing_id, failing = probe_event(key, 2, fail=True)
    after_ids, after = zip(*(probe_event(key, seq) for seq in (3, 4)), strict=True)
    undecodable_before = dead_lettered("undecodable")
    failed_before = dead_lettered("handler_failed")

    await produce(
        own_broker.bootstrap,
        [(key, first), (key, b"\xff not json"), (key, failing), *((key, v) for v in after)],
    )

    async def handled_in_order() -> list[int] | None:
        seqs = [row["seq"] for row in await effect_rows(database) if row["key"] == key]
        return seqs if len(seqs) == 3 else None

    assert await wait_for(handled_in_order, within=WITHIN_S) == [1, 3, 4]
    letters, _ = await probe.consumers.admin.list(None, "", None)
    ours = {letter.event_id: letter for letter in letters if letter.record.key == key.encode()}
    assert set(ours) == {None, failing_id}
    undecodable = ours[None]
    assert undecodable.error.startswith("not JSON")
    assert undecodable.attempts == 0
    assert undecodable.record.value == b"\xff not json"
    failed = ours[failing_id]
    assert failed.attempts == probe.retry.attempts
    assert "RuntimeError: told to fail" in failed.error
    assert failed.status is DeadLetterStatus.PENDING
    assert dead_lettered("undecodable") == undecodable_before + 1
    assert dead_lettered("handler_failed") == failed_before + 1
    assert {first_id, *after_ids} <= {row["event_id"] for row in await effect_rows(database)}

    # Still broken: the replay fails, says why, and leaves the letter pending.
    with pytest.raises(FailedPrecondition, match="told to fail"):
        await probe.consumers.admin.replay(failed.id)
    again = await probe.dead_letters.get(failed.id)
    assert again is not None
    assert again.status is DeadLetterStatus.PENDING
    assert again.attempts == probe.retry.attempts + 1


async def test_a_dead_letter_replayed_after_the_fix_takes_effect_once(
    probe: ProbeConsumer, own_broker: EmbeddedBroker, database: Database
) -> None:
    key = f"order-{uuid.uuid4().hex}"
    event_id, value = probe_event(key, 1)
    probe.broken.add(event_id)  # a bug in the handler for this event, fixed below

    await produce(own_broker.bootstrap, [(key, value)])

    async def letter_id() -> str | None:
        letters, _ = await probe.consumers.admin.list(None, "", DeadLetterStatus.PENDING)
        return next((letter.id for letter in letters if letter.event_id == event_id), None)

    found = await wait_for(letter_id, within=WITHIN_S)
    assert effects_of(await effect_rows(database), event_id) == 0

    probe.broken.discard(event_id)
    replayed = await probe.consumers.admin.replay(found)
    assert replayed.status is DeadLetterStatus.REPLAYED
    assert effects_of(await effect_rows(database), event_id) == 1

    # A second replay (a double click, a retried request) applies nothing more.
    assert (await probe.consumers.admin.replay(found)).status is DeadLetterStatus.REPLAYED
    assert effects_of(await effect_rows(database), event_id) == 1
    pending, _ = await probe.consumers.admin.list(None, "", DeadLetterStatus.PENDING)
    assert found not in {letter.id for letter in pending}


async def test_dead_letters_are_listed_newest_first_a_page_at_a_time(
    probe: ProbeConsumer, own_broker: EmbeddedBroker
) -> None:
    key = f"order-{uuid.uuid4().hex}"
    failing = [probe_event(key, seq, fail=True) for seq in range(3)]
    await produce(own_broker.bootstrap, [(key, value) for _, value in failing])

    async def all_three() -> bool:
        letters, _ = await probe.consumers.admin.list(100, "", None)
        return {event_id for event_id, _ in failing} <= {letter.event_id for letter in letters}

    await wait_for(all_three, within=WITHIN_S)
    first, token = await probe.consumers.admin.list(2, "", None)
    second, last = await probe.consumers.admin.list(2, token, None)
    assert [letter.event_id for letter in [*first, *second]] == [
        event_id for event_id, _ in reversed(failing)
    ]
    assert last == ""


async def test_a_broker_frozen_and_thawed_loses_and_repeats_nothing(
    probe: ProbeConsumer, own_broker: EmbeddedBroker, database: Database
) -> None:
    key = f"order-{uuid.uuid4().hex}"
    before = [probe_event(key, seq) for seq in range(5)]
    await produce(own_broker.bootstrap, [(key, value) for _, value in before])
    own_broker.freeze()
    try:
        # Longer than the session timeout (2 s): the group loses its member meanwhile.
        await asyncio.sleep(6)
    finally:
        own_broker.thaw()
    later = [probe_event(key, seq) for seq in range(5, 10)]
    await produce(own_broker.bootstrap, [(key, value) for _, value in later])

    async def all_ten() -> list[int] | None:
        seqs = [row["seq"] for row in await effect_rows(database) if row["key"] == key]
        return seqs if len(seqs) >= 10 else None

    await wait_for(all_ten, within=WITHIN_S * 2)
    await asyncio.sleep(1)  # room for a stray redelivery to show up before we count
    rows = await effect_rows(database)
    assert sorted(row["seq"] for row in rows if row["key"] == key) == list(range(10))


async def test_two_replicas_share_the_partitions_and_apply_each_event_once(
    database: Database, own_broker: EmbeddedBroker, group: str
) -> None:
    replicas = [ProbeConsumer(database, own_broker.bootstrap, group, name) for name in "ab"]
    for replica in replicas:
        replica.start()
    try:

        async def both_assigned() -> bool:
            return all(
                replica.stream is not None
                and replica.stream.running()
                and len(replica.stream.app.consumer.assignment()) > 0
                for replica in replicas
            )

        await wait_for(both_assigned, within=WITHIN_S)
        keys = [f"order-{uuid.uuid4().hex}" for _ in range(40)]
        events = [probe_event(key, seq) for seq, key in enumerate(keys)]
        await produce(
            own_broker.bootstrap,
            [(key, value) for key, (_, value) in zip(keys, events, strict=True)],
        )

        async def all_applied() -> list[Mapping[str, Any]] | None:
            rows = await effect_rows(database)
            return rows if len(rows) >= 40 else None

        rows = await wait_for(all_applied, within=WITHIN_S)
        assert sorted(row["event_id"] for row in rows) == sorted(e for e, _ in events)
        assert {row["instance"] for row in rows} == {"a", "b"}
    finally:
        await asyncio.gather(*(replica.stop() for replica in replicas))


async def test_a_consumer_killed_between_its_effect_and_its_offset_commit_applies_it_once(
    tmp_path: Path, database: Database, own_broker: EmbeddedBroker, group: str, batched: bool
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'probe.db'}"
    key = f"order-{uuid.uuid4().hex}"
    event_id, value = probe_event(key, 1)
    hanging = _probe_process(
        tmp_path, url, own_broker.bootstrap, group, "a", hang=True, batched=batched
    )
    try:
        await produce(own_broker.bootstrap, [(key, value)])

        async def applied() -> bool:
            return effects_of(await effect_rows(database), event_id) == 1

        await wait_for(applied, within=WITHIN_S)
    finally:
        hanging.kill()  # effect committed, offset not: the handler never returned

    successor = _probe_process(
        tmp_path, url, own_broker.bootstrap, group, "b", hang=False, batched=batched
    )
    try:
        marker_id, marker = probe_event(key, 2)
        await produce(own_broker.bootstrap, [(key, marker)])

        async def marker_applied() -> bool:
            return effects_of(await effect_rows(database), marker_id) == 1

        await wait_for(marker_applied, within=WITHIN_S)
    finally:
        successor.terminate()

    # The successor got the event again (same partition, before the marker) and the inbox
    # turned it away.
    deliveries = [
        row["instance"] for row in await seen_rows(database) if row["event_id"] == event_id
    ]
    assert deliveries == ["a", "b"]
    assert effects_of(await effect_rows(database), event_id) == 1


async def test_a_burst_applies_in_batches_each_event_once_and_a_poison_event_alone(
    database: Database, own_broker: EmbeddedBroker, group: str
) -> None:
    keys = [f"order-{uuid.uuid4().hex}" for _ in range(3)]
    events = [(key, probe_event(key, seq)) for seq in range(30) for key in keys]
    poison_id, poison = probe_event(keys[1], 99, fail=True)
    burst = [(key, value) for key, (_, value) in events]
    burst.insert(len(burst) // 2, (keys[1], poison))
    # Before the consumer starts: its first fetches find the whole burst waiting.
    await produce(own_broker.bootstrap, burst + burst[:20])  # the first 20 delivered twice
    probe = ProbeConsumer(database, own_broker.bootstrap, group, batched=True)
    probe.start()
    try:

        async def poison_lettered() -> bool:
            letters, _ = await probe.consumers.admin.list(None, "", None)
            return poison_id in {letter.event_id for letter in letters}

        async def all_applied() -> list[Mapping[str, Any]] | None:
            rows = await effect_rows(database)
            return rows if len(rows) >= len(events) else None

        rows = await wait_for(all_applied, within=WITHIN_S)
        await wait_for(poison_lettered, within=WITHIN_S)
    finally:
        await probe.stop()

    assert sorted(row["event_id"] for row in rows) == sorted(e for _, (e, _) in events)
    assert max(probe.batch_sizes) > 1
    for key in keys:  # each aggregate's events in the order they were published
        seqs = [row["seq"] for row in rows if row["key"] == key]
        assert seqs == sorted(seqs)
    letters, _ = await probe.consumers.admin.list(None, "", None)
    assert [letter.event_id for letter in letters] == [poison_id]


def _probe_process(
    tmp_path: Path,
    url: str,
    bootstrap: str,
    group: str,
    instance: str,
    *,
    hang: bool,
    batched: bool = False,
) -> Process:
    log_path = tmp_path / f"probe-{instance}.log"
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "tests.support.consumer_probe", url, bootstrap, group, instance],
            env={
                **os.environ,
                "MC_PROBE_HANG_AFTER_EFFECT": "1" if hang else "0",
                "MC_PROBE_BATCHED": "1" if batched else "0",
            },
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Process(f"probe-{instance}", popen, log_path)


async def test_an_event_is_handled_in_a_span_linked_to_the_one_that_published_it(
    monkeypatch: pytest.MonkeyPatch,
    database: Database,
    own_broker: EmbeddedBroker,
    group: str,
) -> None:
    spans = _recorded_consumer_spans(monkeypatch)
    probe = ProbeConsumer(database, own_broker.bootstrap, group)
    probe.start()
    try:
        trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        key = f"order-{uuid.uuid4().hex}"
        event_id, value = probe_event(key, 1)
        await produce(
            own_broker.bootstrap,
            [(key, value)],
            headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
        )

        async def applied() -> bool:
            return effects_of(await effect_rows(database), event_id) == 1

        await wait_for(applied, within=WITHIN_S)
    finally:
        await probe.stop()

    [handled] = [s for s in spans.get_finished_spans() if s.name == "order-events process"]
    assert handled.kind is SpanKind.CONSUMER
    assert [(link.context.trace_id, link.context.span_id) for link in handled.links] == [
        (int(trace_id, 16), int(parent_id, 16))
    ]
    assert handled.attributes is not None
    assert handled.attributes["microcommerce.consumer.outcome"] == "handled"
    assert handled.context is not None
    assert probe.handled_in == [handled.context.span_id]


async def test_a_batch_is_handled_in_a_span_linked_to_every_span_that_published_it(
    monkeypatch: pytest.MonkeyPatch,
    database: Database,
    own_broker: EmbeddedBroker,
    group: str,
) -> None:
    spans = _recorded_consumer_spans(monkeypatch)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parents = ["00f067aa0ba902b7", "00f067aa0ba902b8"]
    key = f"order-{uuid.uuid4().hex}"
    events = [probe_event(key, seq) for seq in range(2)]
    for parent, (_, value) in zip(parents, events, strict=True):
        headers = {"traceparent": f"00-{trace_id}-{parent}-01"}
        await produce(own_broker.bootstrap, [(key, value)], headers=headers)
    probe = ProbeConsumer(database, own_broker.bootstrap, group, batched=True)
    probe.start()
    try:

        async def applied() -> bool:
            return len(await effect_rows(database)) == 2

        await wait_for(applied, within=WITHIN_S)
    finally:
        await probe.stop()

    # However the broker split them into batches: each record linked once, from a batch span.
    handled = [s for s in spans.get_finished_spans() if s.name == "order-events process"]
    assert {s.kind for s in handled} == {SpanKind.CONSUMER}
    links = sorted((ln.context.trace_id, ln.context.span_id) for s in handled for ln in s.links)
    assert links == [(int(trace_id, 16), int(parent, 16)) for parent in parents]
    counts = [s.attributes["messaging.batch.message_count"] for s in handled if s.attributes]
    assert sum(int(str(count)) for count in counts) == 2
    assert probe.handled_in == [s.context.span_id for s in handled if s.context]


def _recorded_consumer_spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """The spans the consumers make from now on, kept in memory for the test to read."""
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)  # else the SDK makes no-op spans
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    monkeypatch.setattr("common.consumer.tracer", lambda: provider.get_tracer("test"))
    return spans
