"""Event consumers, once for every service: decode, deduplicate, retry, dead-letter, trace.

A service declares its ``Subscription``s in its ``events.py``: a name (the inbox's consumer and
the metrics' label), a topic, the CloudEvents types it handles and a handler. The handler is a
use case that applies the event inside ``Store.handling(delivery)``, so the event id is
recorded in the inbox in the same transaction as the effect and a redelivery changes nothing
(``common.inbox``).

``install_consumers`` turns each subscription into a Faust agent in the service's shared
consumer group (``common.service_runner``). Guarantees, and how:

- **Order per aggregate**: events are keyed by aggregate id, so one aggregate's events share a
  partition, and an agent handles its records one at a time, or one batch at a time in
  arrival order.
- **Batches, for consumers that can take them**: a subscription with a ``handle_batch``
  applies the records its agent took together (``Batching``: up to ``max_records``, waiting at
  most ``within_s``) in ONE unit of work, one inbox row per event, so a burst costs one
  transaction and one commit instead of one per event. If the batch fails for any reason
  (a poison event among them, the database), it rolls back whole and its records are handled
  one by one as below: the poison event dead-letters alone and the others apply once.
- **Offsets only after the effect**: the agent reads with manual acks and acks a record only
  once its handler's or batch's transaction committed (or it was dead-lettered); Faust commits
  acked offsets only. A consumer killed in between gets the record again, and the inbox drops
  it.
- **Poison events never block a partition and never vanish**: a record that does not decode
  as a CloudEvent, or whose handler still fails after ``RetryPolicy.attempts`` tries with
  exponential back-off, is written to the dead-letter store (``common.dead_letters``) with the
  error, counted (``mc_consumer_dead_letters_total``) and logged, and the partition moves on.
  If even that write fails (the database is down), it is retried until it succeeds: nothing
  is acked that is not handled or stored.
- **Trace context**: each record is handled in a consumer span linked to the producer's span
  (the record's ``traceparent`` header, else the envelope's).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import faust
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind

from common.clock import from_micros, to_micros
from common.dead_letters import ConsumedRecord, DeadLetter, DeadLetterStatus, DeadLetterStore
from common.errors import FailedPrecondition, InvalidArgument, NotFound
from common.inbox import AlreadyHandled, Delivery
from common.logging import get_logger
from common.metrics import CONSUMER_DEAD_LETTERS, CONSUMER_EVENTS, CONSUMER_RETRIES
from common.pagination import PageTokens, fingerprint, page_size
from common.telemetry import extract_context, mark_failed, tracer
from common.topics import Topic

_log = get_logger(__name__)

MessageT = TypeVar("MessageT", bound=Message)

_REQUIRED_ATTRIBUTES = ("id", "type", "source", "specversion")


class Undecodable(ValueError):
    """A record that is not a CloudEvents 1.0 structured-mode JSON event."""


class PoisonEvent(Exception):
    """Raised by a handler for an event it can never handle (its ``data`` is not what its type
    promises): retrying cannot help, so it goes straight to the dead-letter store."""


@dataclass(frozen=True)
class IncomingEvent:
    """A decoded CloudEvent and the record it came in."""

    id: str
    type: str
    source: str
    subject: str
    time: str
    data: Mapping[str, Any]
    record: ConsumedRecord

    def delivery(self, consumer: str) -> Delivery:
        return Delivery(consumer, self.id)


def decode_event(record: ConsumedRecord) -> IncomingEvent:
    """The CloudEvent in ``record``; ``Undecodable`` with the reason when it is not one."""
    try:
        envelope = json.loads(record.value)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise Undecodable(f"not JSON: {error}") from None
    if not isinstance(envelope, dict):
        raise Undecodable("not a JSON object")
    missing = [name for name in _REQUIRED_ATTRIBUTES if not isinstance(envelope.get(name), str)]
    if missing:
        raise Undecodable(f"missing CloudEvents attributes: {', '.join(missing)}")
    if envelope["specversion"] != "1.0":
        raise Undecodable(f"unsupported specversion {envelope['specversion']!r}")
    data = envelope.get("data", {})
    if not isinstance(data, dict):
        raise Undecodable("data is not a JSON object")
    return IncomingEvent(
        id=envelope["id"],
        type=envelope["type"],
        source=envelope["source"],
        subject=str(envelope.get("subject", "")),
        time=str(envelope.get("time", "")),
        data=data,
        record=record,
    )


# A use case applying one event: it opens ``Store.handling(delivery)`` for its unit of work.
Handler = Callable[[IncomingEvent, Delivery], Awaitable[None]]

# A use case applying several events in ONE unit of work (``Store.handling_batch``), in the order
# given, each at most once; it returns, per event, whether it applied it (False: handled
# before, a redelivery). Whatever it raises must leave nothing committed: the consumer then
# handles the events one by one.
BatchHandler = Callable[[Sequence[tuple[IncomingEvent, Delivery]]], Awaitable[Sequence[bool]]]


@dataclass(frozen=True)
class Subscription:
    """What one consumer of a service handles, and how."""

    name: str  # unique per service: the inbox's consumer, the agent's and the metrics' label
    topic: Topic
    types: frozenset[str]  # the CloudEvents types handled; others are passed over
    handle: Handler
    # Applies a batch of events at once; None: every record goes through ``handle`` alone.
    handle_batch: BatchHandler | None = None


@dataclass(frozen=True)
class Batching:
    """How many records an agent takes at once for a ``handle_batch``, and how long it waits.

    The wait is latency added to a lone event at most; under load a batch fills long before.
    Faust's take wakes the agent once per wait even when nothing came: at 50 ms the idle
    payment service (two batched agents) spent about 0.5 % of a core more (``bench.idle``),
    so batched consumers are read models that can lag a quarter of a second. A service
    process takes both from its settings (``MC_CONSUMER_BATCH_MAX_RECORDS``,
    ``MC_CONSUMER_BATCH_WITHIN_S``); these are their defaults.
    """

    max_records: int = 100
    within_s: float = 0.25


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failing handler is tried, and how long to wait in between."""

    attempts: int = 5
    first_delay_s: float = 0.5
    max_delay_s: float = 10.0

    def delay(self, failed_attempts: int) -> float:
        """The back-off after the ``failed_attempts``-th failure: doubling, capped."""
        return float(min(self.max_delay_s, self.first_delay_s * 2 ** (failed_attempts - 1)))


@dataclass
class EventConsumer:
    """One subscription's handling of records: the part of an agent that is not Faust."""

    subscription: Subscription
    dead_letters: DeadLetterStore
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    batching: Batching = field(default_factory=Batching)

    @property
    def name(self) -> str:
        return self.subscription.name

    async def process(self, record: ConsumedRecord) -> str:
        """Handle one record to an end (handled, duplicate, skipped or dead-lettered).

        Returns that outcome. Never raises, except on cancellation: then the record is not
        acked, and the consumer that gets the partition next handles it.
        """
        with _consumer_span(self.name, record) as current:
            outcome = await self._process(record)
            current.set_attribute("microcommerce.consumer.outcome", outcome)
        CONSUMER_EVENTS.labels(self.name, outcome).inc()
        return outcome

    async def process_batch(self, records: Sequence[ConsumedRecord]) -> list[str]:
        """Handle records taken together, in their order; their outcomes, as ``process``.

        With a ``handle_batch``, the records' events are applied in one unit of work; if that
        fails, nothing of it committed and each record is handled alone by ``process``, so a
        poison event is retried and dead-lettered by itself while the others apply once.
        Never raises, except on cancellation (then no record of the batch may be acked).
        """
        handle_batch = self.subscription.handle_batch
        if handle_batch is None or not records:
            return [await self.process(record) for record in records]
        with _batch_span(self.name, records) as current:
            try:
                outcomes = await self._apply_batch(handle_batch, records)
            except Exception as error:
                mark_failed(current, error)
                failure: Exception | None = error
            else:
                failure = None
                current.set_attribute("microcommerce.consumer.handled", outcomes.count("handled"))
        if failure is not None:
            _log.warning(
                "consumer_batch_failed",
                consumer=self.name,
                records=len(records),
                error=type(failure).__name__,
                detail=str(failure),
            )
            # Each alone: its own retries, and a dead letter for the one that cannot be handled.
            return [await self.process(record) for record in records]
        for outcome in outcomes:
            CONSUMER_EVENTS.labels(self.name, outcome).inc()
        return outcomes

    async def _apply_batch(
        self, handle_batch: BatchHandler, records: Sequence[ConsumedRecord]
    ) -> list[str]:
        # An undecodable record raises here: the fallback dead-letters it alone.
        events = [decode_event(record) for record in records]
        wanted = [event for event in events if event.type in self.subscription.types]
        applied = (
            list(await handle_batch([(event, event.delivery(self.name)) for event in wanted]))
            if wanted
            else []
        )
        if len(applied) != len(wanted):
            raise RuntimeError(f"the batch handler answered for {len(applied)} of {len(wanted)}")
        answers = iter(applied)
        return [
            "skipped"
            if event.type not in self.subscription.types
            else "handled"
            if next(answers)
            else "duplicate"
            for event in events
        ]

    async def _process(self, record: ConsumedRecord) -> str:
        try:
            event = decode_event(record)
        except Undecodable as error:
            await self._dead_letter(record, None, str(error), attempts=0, cause="undecodable")
            return "dead_lettered"
        if event.type not in self.subscription.types:
            return "skipped"
        delivery = event.delivery(self.name)
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.subscription.handle(event, delivery)
            except AlreadyHandled:
                return "duplicate"
            except PoisonEvent as error:
                mark_failed(trace.get_current_span(), error)
                await self._dead_letter(
                    record, event, f"PoisonEvent: {error}", attempts=attempt, cause="bad_data"
                )
                return "dead_lettered"
            except Exception as error:
                _log.warning(
                    "consumer_handler_failed",
                    consumer=self.name,
                    event_id=event.id,
                    event_type=event.type,
                    attempt=attempt,
                    error=type(error).__name__,
                    detail=str(error),
                )
                if attempt >= self.retry.attempts:
                    mark_failed(trace.get_current_span(), error)
                    await self._dead_letter(
                        record,
                        event,
                        f"{type(error).__name__}: {error}",
                        attempts=attempt,
                        cause="handler_failed",
                    )
                    return "dead_lettered"
                CONSUMER_RETRIES.labels(self.name).inc()
                await asyncio.sleep(self.retry.delay(attempt))
            else:
                return "handled"

    async def _dead_letter(
        self,
        record: ConsumedRecord,
        event: IncomingEvent | None,
        error: str,
        *,
        attempts: int,
        cause: str,
    ) -> None:
        failures = 0
        while True:
            try:
                letter_id = await self.dead_letters.add(
                    self.name,
                    record,
                    event_id=None if event is None else event.id,
                    event_type=None if event is None else event.type,
                    error=error,
                    attempts=attempts,
                )
            except Exception as write_error:
                # The record must not be acked unstored: wait for the database to come back.
                failures += 1
                _log.error(
                    "dead_letter_write_failed",
                    consumer=self.name,
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    error=type(write_error).__name__,
                    detail=str(write_error),
                )
                await asyncio.sleep(self.retry.delay(failures))
                continue
            break
        CONSUMER_DEAD_LETTERS.labels(self.name, cause).inc()
        _log.error(
            "event_dead_lettered",
            consumer=self.name,
            dead_letter_id=letter_id,
            cause=cause,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            event_id=None if event is None else event.id,
            event_type=None if event is None else event.type,
            error=error,
        )

    async def replay(self, letter: DeadLetter) -> None:
        """Handle a dead letter's record once more; raises what the handler raises."""
        with _consumer_span(self.name, letter.record, replay=True):
            event = decode_event(letter.record)
            if event.type not in self.subscription.types:
                return
            try:
                await self.subscription.handle(event, event.delivery(self.name))
            except AlreadyHandled:
                return


class DeadLetterAdmin:
    """The administrator's use cases on a service's dead letters: list and replay."""

    def __init__(
        self, store: DeadLetterStore, consumers: Iterable[EventConsumer], tokens: PageTokens
    ) -> None:
        self.store = store
        self._consumers = {consumer.name: consumer for consumer in consumers}
        self._tokens = tokens

    async def list(
        self, requested_size: int | None, page_token: str, status: DeadLetterStatus | None
    ) -> tuple[list[DeadLetter], str]:
        """A page of dead letters, newest first, and the next page's token ("" on the last)."""
        limit = page_size(requested_size)
        bound_to = fingerprint(
            "ListDeadLetters", {"status": status.value if status else "", "order_by": "-create"}
        )
        after = self._tokens.read(page_token, bound_to, key_length=2)
        bound = None if after is None else (from_micros(_micros(after[0])), after[1])
        letters = await self.store.page(limit + 1, bound, status)
        page = letters[:limit]
        token = (
            self._tokens.issue(bound_to, [str(to_micros(page[-1].create_time)), page[-1].id])
            if len(letters) > limit
            else ""
        )
        return page, token

    async def replay(self, letter_id: str) -> DeadLetter:
        """Handle a dead letter's event again; REPLAYED once handled (or found handled)."""
        letter = await self.store.get(letter_id)
        if letter is None:
            raise NotFound(f"no dead letter {letter_id}", field="id")
        if letter.status is DeadLetterStatus.REPLAYED:
            return letter  # replaying twice is harmless, and the answer is the same
        consumer = self._consumers.get(letter.consumer)
        if consumer is None:
            raise FailedPrecondition(f"no consumer {letter.consumer} runs in this service")
        try:
            await consumer.replay(letter)
        except Exception as error:
            detail = f"{type(error).__name__}: {error}"
            await self.store.record_failed_replay(letter_id, detail)
            _log.warning("dead_letter_replay_failed", dead_letter_id=letter_id, error=detail)
            raise FailedPrecondition(f"the replay failed again: {detail}") from None
        await self.store.settle(letter_id)
        _log.info("dead_letter_replayed", dead_letter_id=letter_id, consumer=letter.consumer)
        replayed = await self.store.get(letter_id)
        assert replayed is not None  # dead letters are never deleted
        return replayed


@dataclass(frozen=True)
class EventConsumers:
    """A service's consumers and their dead letters, as its runner and servicer need them."""

    consumers: Sequence[EventConsumer]
    admin: DeadLetterAdmin

    @classmethod
    def build(
        cls,
        store: DeadLetterStore,
        subscriptions: Iterable[Subscription],
        retry: RetryPolicy,
        tokens: PageTokens,
        batching: Batching | None = None,
    ) -> EventConsumers:
        consumers = [
            EventConsumer(subscription, store, retry, batching or Batching())
            for subscription in subscriptions
        ]
        names = [consumer.name for consumer in consumers]
        if len(set(names)) != len(names):
            raise ValueError(f"subscription names must be unique: {names}")
        return cls(consumers, DeadLetterAdmin(store, consumers, tokens))


def _micros(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidArgument("page_token is malformed", field="page_token") from None


def consumed_record(message: Any) -> ConsumedRecord:
    """Our view of a Faust message (``faust.types.tuples.Message``)."""
    headers = message.headers or {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return ConsumedRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value if message.value is not None else b"",
        headers={
            str(name): value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            for name, value in pairs
        },
    )


def event_data(event: IncomingEvent, message: MessageT) -> MessageT:
    """``event.data`` parsed into its event message; ``PoisonEvent`` when it does not fit."""
    try:
        return json_format.ParseDict(dict(event.data), message, ignore_unknown_fields=True)
    except json_format.ParseError as error:
        raise PoisonEvent(
            f"{event.type} data does not fit {message.DESCRIPTOR.name}: {error}"
        ) from None


def install_consumers(app: faust.App, consumers: Iterable[EventConsumer]) -> None:
    """Add one agent per consumer to ``app`` (the service's shared consumer group)."""
    for consumer in consumers:
        topic = consumer.subscription.topic
        # Raw bytes: a record that is not JSON must reach us (and the dead-letter store), not
        # fail inside Faust's deserializer.
        channel = app.topic(
            topic.value,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=topic.partitions,
        )
        app.agent(channel, name=f"{app.conf.id}-{consumer.name}")(_agent_for(consumer))


def _agent_for(consumer: EventConsumer) -> Callable[[faust.StreamT[Any]], Awaitable[None]]:
    async def handle_records(stream: faust.StreamT[Any]) -> None:
        # StreamT does not declare noack(); the stream Faust hands an agent is a Stream.
        assert isinstance(stream, faust.Stream)
        manual = stream.noack()
        if consumer.subscription.handle_batch is not None:
            assert isinstance(manual, faust.Stream)  # a clone of the Stream, as above
            batching = consumer.batching
            # noack_take, not take: take acks a batch when the loop moves on, even when the
            # loop was left by an exception or a cancellation, with the batch unhandled.
            async for events in manual.noack_take(batching.max_records, batching.within_s):
                await consumer.process_batch([consumed_record(e.message) for e in events])
                # Only now may Faust commit past these records: their effects are in.
                for event in events:
                    await manual.ack(event)
            return
        async for event in manual.events():
            await consumer.process(consumed_record(event.message))
            # Only now may Faust commit past this record: its effect (or dead letter) is in.
            await manual.ack(event)

    return handle_records


def _consumer_span(name: str, record: ConsumedRecord, *, replay: bool = False) -> Any:
    producer = _producer_span(record)
    links = [Link(producer)] if producer.is_valid else []
    return tracer().start_as_current_span(
        f"{record.topic} {'replay' if replay else 'process'}",
        kind=SpanKind.CONSUMER,
        links=links,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": record.topic,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.offset": record.offset,
            "messaging.consumer.group.name": name,
        },
    )


def _batch_span(name: str, records: Sequence[ConsumedRecord]) -> Any:
    """One span for a batch, linked to every producer (OpenTelemetry's batch receiving)."""
    producers = [_producer_span(record) for record in records]
    first = records[0]
    return tracer().start_as_current_span(
        f"{first.topic} process",
        kind=SpanKind.CONSUMER,
        links=[Link(producer) for producer in producers if producer.is_valid],
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": first.topic,
            "messaging.batch.message_count": len(records),
            "messaging.consumer.group.name": name,
        },
    )


def _producer_span(record: ConsumedRecord) -> Any:
    carrier = {k: v for k, v in record.headers.items() if k in ("traceparent", "tracestate")}
    if "traceparent" not in carrier:
        carrier = _envelope_trace_context(record.value)
    return trace.get_current_span(extract_context(carrier)).get_span_context()


def _envelope_trace_context(value: bytes) -> dict[str, str]:
    try:
        envelope = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    if not isinstance(envelope, dict):
        return {}
    return {
        name: envelope[name]
        for name in ("traceparent", "tracestate")
        if isinstance(envelope.get(name), str)
    }
