"""The Kafka health stream: ping and pong records, and the responder every service instance runs."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import faust
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from common.clock import now, parse_rfc3339, rfc3339
from common.instance import new_instance_id
from common.kafka import FETCHER_IDLE_WAKEUP_MS, declare_topics_patiently
from common.kafka_security import kafka_security
from common.settings import CommonSettings
from common.telemetry import consumer_span, kafka_send_headers
from common.topics import Topic

PING_TOPIC = Topic.SERVICE_PING
PONG_TOPIC = Topic.SERVICE_PONG

# A ping older than this is history, not a question: a new consumer may be handed a few old
# records (KAFKA.md: end offsets are reported early on Tansu) and must not answer them.
STALE_PING_AFTER = timedelta(seconds=5)
CHECK_TIMEOUT_S = 0.5
RESTART_DELAY_S = 1.0

log = structlog.get_logger(__name__)

HealthCheck = Callable[[], Awaitable[bool]]


class Ping(faust.Record, serializer="json", include_metadata=False):
    """The gateway's question to every instance; names are the wire format (CONTRACT.md)."""

    ping_id: str
    sent_at: str


class Pong(faust.Record, serializer="json", include_metadata=False):
    """One instance's answer: who it is, where it listens, and how its own checks went."""

    ping_id: str
    service: str
    instance_id: str
    address: str
    version: str
    status: str
    checks: dict[str, str]
    sent_at: str


def now_rfc3339() -> str:
    return rfc3339(now())


def is_fresh(sent_at: str) -> bool:
    """Whether a ping or pong is recent enough to act on; a malformed time is not."""
    try:
        sent = parse_rfc3339(sent_at)
    except ValueError:
        log.warning("ignoring a health message with a malformed sent_at", sent_at=sent_at)
        return False
    return now() - sent <= STALE_PING_AFTER


@dataclass(frozen=True)
class InstanceIdentity:
    """Who answers: the id is new at every start so a restarted instance is a new member."""

    service: str
    address: str
    version: str
    instance_id: str = field(default_factory=new_instance_id)


async def run_checks(checks: Mapping[str, HealthCheck]) -> dict[str, str]:
    """Run every check concurrently, each bounded, so one stuck dependency cannot stall a pong."""

    async def one(check: HealthCheck) -> str:
        try:
            return "UP" if await asyncio.wait_for(check(), CHECK_TIMEOUT_S) else "DOWN"
        except Exception:  # a failing check is a DOWN answer, never a dead responder
            log.warning("health check failed", exc_info=True)
            return "DOWN"

    results = await asyncio.gather(*(one(check) for check in checks.values()))
    return dict(zip(checks, results, strict=True))


class GrouplessStream(ABC):
    """One side of the health stream: reads one topic from its end and sends on the other.

    Every gateway has to hear every pong and every instance every ping, so neither needs a
    consumer group: it reads the topic's partitions itself, with a plain consumer on the
    process's own event loop. As Faust apps (a consumer group per process) they cost each
    process a consumer thread, a join at every start and a heartbeat a second on top of their
    fetches (README, Kafka).
    """

    STOP_TIMEOUT_S = 3.0

    def __init__(
        self,
        settings: CommonSettings,
        name: str,
        reads: Topic,
        fetch_max_wait_ms: int | None = None,
    ) -> None:
        self._settings = settings
        self._fetch_max_wait_ms = fetch_max_wait_ms or settings.kafka_fetch_max_wait_ms
        self._name = name
        self._reads = reads
        self._task: asyncio.Task[None] | None = None
        self._reached = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    def running(self) -> bool:
        """Whether it has reached the broker (once)."""
        return self._reached

    async def stop(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            # The task stops its own clients; a wedged broker must not hold the process.
            await asyncio.wait({task}, timeout=self.STOP_TIMEOUT_S)
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: a failure was logged where it happened

    async def _run(self) -> None:
        while True:
            await declare_topics_patiently(self._settings, self._name)
            try:
                await self._serve()
            except (KafkaError, OSError) as error:
                # Whatever broke its clients, giving up would leave the health stream silent
                # for good: start over with new ones.
                log.warning(
                    "health_stream_restarting",
                    client=self._name,
                    error=str(error) or type(error).__name__,
                )
            except Exception:  # a bug here must not silence this process's health for good
                log.exception("health_stream_restarting", client=self._name)
            await asyncio.sleep(RESTART_DELAY_S)

    async def _serve(self) -> None:
        settings = self._settings
        security = kafka_security(settings).aiokafka_options()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",  # old pings and pongs are noise
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            consumer_timeout_ms=FETCHER_IDLE_WAKEUP_MS,
            **security,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            acks="all",
            enable_idempotence=False,  # Tansu rejects it (KAFKA.md)
            request_timeout_ms=10_000,
            **security,
        )
        try:
            await consumer.start()
            await producer.start()
            topic = self._reads
            consumer.assign([TopicPartition(topic, p) for p in range(topic.partitions)])
            self._reached = True
            await self._use(consumer, producer)
        finally:
            for stop in (consumer.stop, producer.stop):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(stop(), self.STOP_TIMEOUT_S)

    @abstractmethod
    async def _use(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        """Read and send until cancelled."""


async def send_queued(
    producer: AIOKafkaProducer,
    topic: Topic,
    key: str,
    value: bytes,
    delivered: Callable[[], None] | None = None,
) -> None:
    """Queue a record, not waiting for its delivery: a stalled broker must not stall the next
    pings or pongs (stale by then anyway). ``delivered`` is called once the broker has it."""
    try:
        delivery = await producer.send(
            topic, value=value, key=key.encode(), headers=kafka_send_headers()
        )
    except Exception:
        log.warning("health message not sent", topic=str(topic), exc_info=True)
        return

    def done(future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        if future.exception() is not None:
            log.warning("health message not delivered", error=type(future.exception()).__name__)
        elif delivered is not None:
            delivered()

    delivery.add_done_callback(done)


class PongResponder(GrouplessStream):
    """This instance's side: answers each fresh ping on ``service-pong`` with its state."""

    def __init__(
        self,
        identity: InstanceIdentity,
        checks: Mapping[str, HealthCheck],
        settings: CommonSettings,
    ) -> None:
        super().__init__(
            settings,
            f"{identity.service}-pong-responder",
            PING_TOPIC,
            fetch_max_wait_ms=settings.kafka_ping_fetch_max_wait_ms,
        )
        self._identity = identity
        self._checks = checks

    async def _use(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    await self._answer(producer, record)

    async def _answer(self, producer: AIOKafkaProducer, record: ConsumerRecord[Any, Any]) -> None:
        try:
            ping = Ping.loads(record.value)
        except Exception:  # a record that is not a ping is skipped, never a dead responder
            log.warning("ignoring a malformed ping", offset=record.offset)
            return
        # The pong is sent inside the span, so it carries the ping's trace back.
        with consumer_span(PING_TOPIC, record.headers):
            if not is_fresh(ping.sent_at):
                return
            results = await run_checks(self._checks)
            identity = self._identity
            pong = Pong(
                ping_id=ping.ping_id,
                service=identity.service,
                instance_id=identity.instance_id,
                address=identity.address,
                version=identity.version,
                status="UP" if all(r == "UP" for r in results.values()) else "DOWN",
                checks=results,
                sent_at=now_rfc3339(),
            )
            await send_queued(producer, PONG_TOPIC, identity.instance_id, pong.dumps())
