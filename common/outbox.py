"""The transactional outbox: domain events stored with the change that caused them, then relayed.

A use case adds its events with ``Outbox.add(connection, ...)`` inside its unit of work, so the
state change and its events commit (or roll back) together. ``OutboxRelay`` publishes committed
rows to Kafka in commit order and marks them published; a crash or a broker outage only delays
them. Delivery is at least once: consumers drop duplicates by the CloudEvents ``id``
(``common.inbox``). Every service's schema gets the table from ``create_outbox_table`` in one of
its own migrations, and its ``trace_context`` column from ``add_trace_context_column`` in a
later one.

Each row keeps the trace context of the change that wrote it (W3C ``traceparent`` and
``tracestate``, also in the envelope as the CloudEvents distributed-tracing extension), so the
relay's publish continues that trace, and the Kafka record carries it in its headers.
"""

from __future__ import annotations

import asyncio
import json
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from google.protobuf.message import Message
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind
from sqlalchemy import (
    Column,
    Index,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from common import clock
from common.background import run_every
from common.db import SEQUENCE_NUMBER, SQLITE_BEGIN_OPTION, Database, UtcDateTime, after_commit
from common.descriptors import descriptor_of, event_spec
from common.kafka_security import kafka_security
from common.logging import get_logger
from common.metrics import OUTBOX_PUBLISH_ERRORS, OUTBOX_PUBLISHED
from common.proto_json import message_to_json
from common.settings import CommonSettings
from common.telemetry import (
    extract_context,
    inject_context,
    kafka_send_headers,
    mark_failed,
    tracer,
)

_log = get_logger(__name__)


def _outbox_columns() -> list[Column[Any]]:
    return [
        Column("seq", SEQUENCE_NUMBER, primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False, unique=True),
        Column("topic", String(128), nullable=False),
        Column("key", String(256), nullable=False),
        Column("payload", Text, nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("published_at", UtcDateTime, nullable=True),
    ]


def outbox_table_name(service: str) -> str:
    # Named per service: one PostgreSQL database may hold several services' schemas (tests,
    # small deployments), as the per-service Alembic version tables already allow.
    return f"{service}_outbox"


# Added by a later revision than the table (add_trace_context_column): W3C trace headers as
# JSON, null for rows written before it or outside any trace.
TRACE_CONTEXT_COLUMN = "trace_context"


def _trace_context_column() -> Column[Any]:
    return Column(TRACE_CONTEXT_COLUMN, Text, nullable=True)


def outbox_table(service: str) -> Table:
    """The outbox of ``service`` (``<service>_outbox``)."""
    table = Table(
        outbox_table_name(service), MetaData(), *_outbox_columns(), _trace_context_column()
    )
    Index(f"ix_{table.name}_pending", table.c.published_at, table.c.seq)
    return table


def create_outbox_table(op: Any, service: str) -> None:
    """Create the outbox in a service's migration (``op`` is ``alembic.op``)."""
    name = outbox_table_name(service)
    op.create_table(name, *_outbox_columns())
    op.create_index(f"ix_{name}_pending", name, ["published_at", "seq"])


def add_trace_context_column(op: Any, service: str) -> None:
    """Add the trace context column in a service's migration (``op`` is ``alembic.op``)."""
    op.add_column(outbox_table_name(service), _trace_context_column())


def drop_trace_context_column(op: Any, service: str) -> None:
    # batch mode: SQLite before 3.35 cannot drop a column in place.
    with op.batch_alter_table(outbox_table_name(service)) as batch:
        batch.drop_column(TRACE_CONTEXT_COLUMN)


def drop_outbox_table(op: Any, service: str) -> None:
    name = outbox_table_name(service)
    op.drop_index(f"ix_{name}_pending", table_name=name)
    op.drop_table(name)


@dataclass(frozen=True)
class OutgoingEvent:
    """One domain event: its topic, CloudEvents type, aggregate id and ``data`` message.

    ``subject`` is the aggregate id and the Kafka key, so one aggregate's events stay in order.
    """

    topic: str
    type: str  # e.g. "microcommerce.inventory.reserved"
    subject: str
    data: Message | Mapping[str, Any]

    def __post_init__(self) -> None:
        # The published contract (/asyncapi.json) is generated from the messages' event
        # option: an event that disagrees with it, or whose message declares none, would be
        # undocumented traffic, so it is refused where it is built.
        if not isinstance(self.data, Message):
            return
        descriptor = descriptor_of(self.data)
        spec = event_spec(descriptor)
        if spec is None:
            raise ValueError(
                f"{descriptor.full_name} declares no (microcommerce.common.v1.event) option:"
                " declare its CloudEvents type, topic and key in its .proto"
            )
        if (spec.type, spec.topic) != (self.type, self.topic):
            raise ValueError(
                f"{self.type} on {self.topic} disagrees with {descriptor.full_name}'s event"
                f" option ({spec.type} on {spec.topic})"
            )


# CloudEvents distributed-tracing extension attributes: the W3C headers of the same names.
TRACE_HEADERS = ("traceparent", "tracestate")


def cloud_event(
    source: str,
    outgoing: OutgoingEvent,
    *,
    event_id: str,
    time: datetime,
    trace_context: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The CloudEvents 1.0 structured-mode envelope of an event (CONTRACT.md).

    ``trace_context`` (W3C headers of the change that caused the event) becomes the
    distributed-tracing extension's ``traceparent`` / ``tracestate`` attributes.
    """
    context = trace_context or {}
    tracing = {name: context[name] for name in TRACE_HEADERS if name in context}
    return {
        **tracing,
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": outgoing.type,
        "time": clock.rfc3339(time),
        "subject": outgoing.subject,
        "datacontenttype": "application/json",
        "data": event_data(outgoing),
    }


def event_data(outgoing: OutgoingEvent) -> Any:
    """The event's ``data`` as it is published: the contract's proto3 JSON of its message."""
    data = outgoing.data
    return message_to_json(data) if isinstance(data, Message) else dict(data)


class Outbox:
    """Adds events to a unit of work and wakes the relay once that unit commits."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.source = f"/microcommerce/{service}"  # CloudEvents `source`
        self.table = outbox_table(service)
        self._insert = insert(self.table)  # built once: see _record_delivery in common.inbox
        self._committed = asyncio.Event()

    async def add(
        self, connection: AsyncConnection, *events: OutgoingEvent, now: datetime | None = None
    ) -> list[str]:
        """Store ``events`` in the unit of work's transaction; returns their event ids.

        ``now`` is their CloudEvents ``time`` (default: the clock's), for a caller that records
        the same time elsewhere in the transaction.
        """
        if not events:
            return []
        now = now or clock.now()
        trace_context = inject_context()  # empty outside a (sampled or not) span
        stored_context = json.dumps(trace_context) if trace_context else None
        rows: list[dict[str, Any]] = []
        for outgoing in events:
            event_id = str(uuid.uuid4())
            envelope = cloud_event(
                self.source, outgoing, event_id=event_id, time=now, trace_context=trace_context
            )
            rows.append(
                {
                    "event_id": event_id,
                    "topic": outgoing.topic,
                    "key": outgoing.subject,
                    "payload": json.dumps(envelope, separators=(",", ":")),
                    "created_at": now,
                    TRACE_CONTEXT_COLUMN: stored_context,
                }
            )
        await connection.execute(self._insert, rows)
        # The relay wakes once this unit of work commits, not at the next poll: published
        # events are what the saga's other half waits for. A savepoint released here is no
        # commit: only the unit of work's own COMMIT runs the callback (Database.session).
        after_commit(connection, self._on_commit)
        return [str(row["event_id"]) for row in rows]

    def _on_commit(self) -> None:
        self._committed.set()

    async def wait_for_commit(self, within: float, *, linger_s: float = 0.005) -> None:
        """Return when a unit of work with events has committed, or after ``within`` seconds.

        After a commit it lingers ``linger_s`` more, so that the commits of concurrent use
        cases land in one wake-up and one batch instead of one relay round each.
        """
        try:
            async with asyncio.timeout(within):
                await self._committed.wait()
            await asyncio.sleep(linger_s)
        except TimeoutError:
            pass
        self._committed.clear()


@dataclass(frozen=True)
class _Pending:
    seq: int
    topic: str
    key: str
    payload: str
    trace_context: str | None

    def headers(self) -> dict[str, str]:
        """The W3C trace headers stored with the row (none when it was written untraced)."""
        if not self.trace_context:
            return {}
        try:
            stored = json.loads(self.trace_context)
        except ValueError:
            return {}  # a damaged context must not stop the event from being published
        if not isinstance(stored, dict):
            return {}
        return {str(name): str(value) for name, value in stored.items()}


class OutboxRelay:
    """Publishes committed outbox rows to Kafka, oldest first, and marks them published.

    Rows are sent in ``seq`` order and a batch is marked only once Kafka acknowledged all of
    it (``acks=all``); a failure leaves the batch pending, to be sent again after a back-off.
    On PostgreSQL an advisory lock lets one relay per database publish at a time, so several
    replicas of a service neither duplicate nor reorder each other's work.
    """

    def __init__(
        self,
        database: Database,
        outbox: Outbox,
        settings: CommonSettings,
        *,
        batch_size: int = 200,
        poll_interval_s: float = 1.0,
        retention: timedelta = timedelta(days=7),
    ) -> None:
        self._database = database
        self._outbox = outbox
        self._settings = settings
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._retention = retention
        self._producer: AIOKafkaProducer | None = None
        self._table = outbox.table
        self._lock_key = zlib.crc32(f"mc-outbox:{outbox.service}".encode())
        self._last_prune = datetime.min.replace(tzinfo=UTC)

    async def run(self) -> None:
        """Relay until cancelled; broker and database errors are retried with back-off."""
        try:
            await run_every(
                self._poll_interval_s,
                self._relay_pending,
                name="outbox-relay",
                wait=self._outbox.wait_for_commit,  # a commit with events wakes it early
            )
        finally:
            await self._reset_producer()

    async def _relay_pending(self) -> None:
        try:
            # A batch shorter than the limit emptied the outbox: no second query to learn that.
            while published := await self.publish_pending():
                OUTBOX_PUBLISHED.labels(self._outbox.service).inc(published)
                if published < self._batch_size:
                    break
            await self._prune()
        except Exception:
            OUTBOX_PUBLISH_ERRORS.labels(self._outbox.service).inc()
            await self._reset_producer()  # a broken connection is not reused for the retry
            raise

    async def publish_pending(self) -> int:
        """Publish one batch; the number of rows published (0 when nothing was pending)."""
        if self._database.engine.dialect.name == "postgresql":
            return await self._publish_pending_postgresql()
        pending = await self._read_pending(None)
        if not pending:
            return 0
        await self._send(pending)
        async with self._database.session() as connection:
            await self._mark_published(connection, pending)
        return len(pending)

    async def _publish_pending_postgresql(self) -> int:
        async with self._database.session() as connection:
            # The advisory lock is taken by the read itself (one round trip): while another
            # replica holds it, the filter is false for every row and nothing is read.
            pending = await self._read_pending(
                connection, func.pg_try_advisory_xact_lock(self._lock_key)
            )
            if not pending:
                return 0  # nothing pending, or another replica is publishing
            await self._send(pending)
            await self._mark_published(connection, pending)
            return len(pending)

    async def _read_pending(
        self, connection: AsyncConnection | None, *also: ColumnElement[bool]
    ) -> list[_Pending]:
        query = (
            select(
                self._table.c.seq,
                self._table.c.topic,
                self._table.c.key,
                self._table.c.payload,
                self._table.c.trace_context,
            )
            .where(self._table.c.published_at.is_(None), *also)
            .order_by(self._table.c.seq)
            .limit(self._batch_size)
        )
        if connection is not None:
            rows = (await connection.execute(query)).all()
        else:
            async with self._database.engine.connect() as reader:
                reader = await reader.execution_options(**{SQLITE_BEGIN_OPTION: "DEFERRED"})
                rows = (await reader.execute(query)).all()
        return [
            _Pending(row.seq, row.topic, row.key, row.payload, row.trace_context) for row in rows
        ]

    async def _send(self, pending: Sequence[_Pending]) -> None:
        producer = await self._producer_started()
        spans: list[Span] = []
        try:
            deliveries = []
            for row in pending:
                publish = self._publish_span(row)
                spans.append(publish)
                with trace.use_span(publish, end_on_exit=False):
                    deliveries.append(
                        await producer.send(
                            row.topic,
                            value=row.payload.encode(),
                            key=row.key.encode(),
                            headers=kafka_send_headers(),
                        )
                    )
            results = await asyncio.gather(*deliveries, return_exceptions=True)
        except BaseException as error:
            for publish in spans:
                mark_failed(publish, error)
                publish.end()
            raise
        failures = [result for result in results if isinstance(result, BaseException)]
        for publish, result in zip(spans, results, strict=True):
            if isinstance(result, BaseException):
                mark_failed(publish, result)
            publish.end()
        if failures:
            raise failures[0]

    def _publish_span(self, row: _Pending) -> Span:
        # A child of the change that wrote the row, however long ago that was: the publish
        # belongs to that trace, not to the relay's polling loop.
        return tracer().start_span(
            f"outbox publish {row.topic}",
            context=extract_context(row.headers()),
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "publish",
                "messaging.destination.name": row.topic,
                "messaging.kafka.message.key": row.key,
                "microcommerce.outbox.service": self._outbox.service,
                "microcommerce.outbox.seq": row.seq,
            },
        )

    async def _mark_published(
        self, connection: AsyncConnection, pending: Sequence[_Pending]
    ) -> None:
        await connection.execute(
            update(self._table)
            .where(self._table.c.seq.in_([row.seq for row in pending]))
            .values(published_at=clock.now())
        )
        _log.debug("outbox_published", count=len(pending), last_seq=pending[-1].seq)

    async def _prune(self) -> None:
        now = clock.now()
        if now - self._last_prune < timedelta(minutes=10):
            return
        self._last_prune = now
        async with self._database.session() as connection:
            await connection.execute(
                delete(self._table).where(self._table.c.published_at < now - self._retention)
            )

    async def _producer_started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._settings.kafka_bootstrap,
                acks="all",
                # Tansu cannot do idempotent producers (KAFKA.md); ordering per key holds
                # because a batch is only marked after every record of it was acknowledged.
                enable_idempotence=False,
                request_timeout_ms=10_000,
                **kafka_security(self._settings).aiokafka_options(),
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _reset_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                async with asyncio.timeout(5):
                    await producer.stop()
            except Exception as error:  # a wedged connection must not stop the relay
                _log.warning("outbox_producer_stop_failed", error=type(error).__name__)


async def pending_count(database: Database, outbox: Outbox) -> int:
    """How many events wait to be published (for tests and health)."""
    table = outbox.table
    async with database.engine.connect() as connection:
        connection = await connection.execution_options(**{SQLITE_BEGIN_OPTION: "DEFERRED"})
        count = await connection.scalar(
            select(func.count()).select_from(table).where(table.c.published_at.is_(None))
        )
    return int(count or 0)
