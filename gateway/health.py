"""Health aggregation: the gateway pings every instance over Kafka and serves what it heard.

Requests never wait for Kafka: a task publishes a ping every interval, another records each
pong in the ``HealthRegistry`` (``HealthStream``), and the HTTP handlers read the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from common import clock
from common.clock import rfc3339
from common.health_stream import (
    PING_TOPIC,
    PONG_TOPIC,
    GrouplessStream,
    Ping,
    Pong,
    is_fresh,
    now_rfc3339,
    send_queued,
)
from common.settings import CommonSettings
from common.telemetry import consumer_span

log = structlog.get_logger(__name__)

Status = Literal["UP", "DOWN", "UNKNOWN"]
Overall = Literal["UP", "DEGRADED", "DOWN"]

# Pings we still expect answers to, for round-trip times; older ones just count as liveness.
MAX_PENDING_PINGS = 64


@dataclass
class Instance:
    """The last word heard from one service instance."""

    id: str
    address: str
    version: str
    reported_status: str
    checks: dict[str, str]
    last_seen_monotonic: float
    last_seen: datetime
    rtt_ms: float | None


class HealthRegistry:
    """What the health stream has told this gateway, judged against a clock.

    A service is DOWN once none of its instances has answered within ``down_after_s``; while
    the broker itself is unreachable that silence says nothing, so services are UNKNOWN. The
    broker must therefore be judged first: its threshold is the shorter one, so a frozen broker
    never shows as a moment of every service DOWN.
    """

    def __init__(
        self,
        services: Sequence[str],
        *,
        down_after_s: float = 2.5,
        broker_down_after_s: float = 2.0,
        forget_after_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if broker_down_after_s >= down_after_s:
            raise ValueError("the broker must be judged unreachable before any service is DOWN")
        self.services = tuple(services)
        self.down_after_s = down_after_s
        self.broker_down_after_s = broker_down_after_s
        self.forget_after_s = forget_after_s
        self._clock = clock
        self._instances: dict[str, dict[str, Instance]] = {s: {} for s in self.services}
        self._pending_pings: OrderedDict[str, float] = OrderedDict()
        self._broker_last_ack: float | None = None

    def ping_sent(self, ping_id: str) -> None:
        self._pending_pings[ping_id] = self._clock()
        while len(self._pending_pings) > MAX_PENDING_PINGS:
            self._pending_pings.popitem(last=False)

    def ping_delivered(self) -> None:
        """The broker acknowledged a ping: it is reachable."""
        self._broker_last_ack = self._clock()

    def pong_received(self, pong: Pong) -> None:
        if pong.service not in self._instances:
            log.warning("pong from an unknown service", pong_service=pong.service)
            return
        now = self._clock()
        sent = self._pending_pings.get(pong.ping_id)
        instances = self._instances[pong.service]
        # A restarted instance comes back under a new id at the same address: it replaces
        # its predecessor instead of leaving a ghost DOWN beside it.
        for other_id, other in list(instances.items()):
            if other.address == pong.address and other_id != pong.instance_id:
                del instances[other_id]
        instances[pong.instance_id] = Instance(
            id=pong.instance_id,
            address=pong.address,
            version=pong.version,
            reported_status=pong.status,
            checks=dict(pong.checks),
            last_seen_monotonic=now,
            last_seen=clock.now(),
            rtt_ms=round((now - sent) * 1000, 2) if sent is not None else None,
        )
        self._broker_last_ack = now  # a pong came through the broker, so it is reachable

    def broker_up(self) -> bool:
        last = self._broker_last_ack
        return last is not None and self._clock() - last <= self.broker_down_after_s

    def _instance_status(self, instance: Instance) -> Status:
        if not self.broker_up():
            return "UNKNOWN"
        fresh = self._clock() - instance.last_seen_monotonic <= self.down_after_s
        return "UP" if fresh and instance.reported_status == "UP" else "DOWN"

    def _forget_departed(self) -> None:
        now = self._clock()
        for instances in self._instances.values():
            for instance_id, instance in list(instances.items()):
                if now - instance.last_seen_monotonic > self.forget_after_s:
                    del instances[instance_id]

    def service_status(self, service: str) -> Status:
        if not self.broker_up():
            return "UNKNOWN"
        instances = self._instances[service].values()
        return "UP" if any(self._instance_status(i) == "UP" for i in instances) else "DOWN"

    def overall(self) -> Overall:
        statuses = [self.service_status(s) for s in self.services]
        if not self.broker_up():
            return "DEGRADED"  # REST traffic still flows; the services may well be fine
        if all(s == "UP" for s in statuses):
            return "UP"
        return "DOWN" if not any(s == "UP" for s in statuses) else "DEGRADED"

    def snapshot(self) -> dict[str, Any]:
        """The ``GET /health`` body (CONTRACT.md)."""
        self._forget_departed()
        services: dict[str, Any] = {}
        for service in self.services:
            instances = sorted(self._instances[service].values(), key=lambda i: i.address)
            latest = max(instances, key=lambda i: i.last_seen_monotonic, default=None)
            services[service] = {
                "status": self.service_status(service),
                "last_seen": rfc3339(latest.last_seen) if latest else None,
                "rtt_ms": latest.rtt_ms if latest else None,
                "instances": [
                    {
                        "id": i.id,
                        "address": i.address,
                        "version": i.version,
                        "status": self._instance_status(i),
                        "last_seen": rfc3339(i.last_seen),
                        "rtt_ms": i.rtt_ms,
                        "checks": i.checks,
                    }
                    for i in instances
                ],
            }
        return {
            "status": self.overall(),
            "broker": {"status": "UP" if self.broker_up() else "DOWN"},
            "services": services,
        }

    def down_instances(self, service: str) -> frozenset[str]:
        """Addresses of the service's instances judged DOWN (none while the broker is down)."""
        return frozenset(
            i.address
            for i in self._instances.get(service, {}).values()
            if self._instance_status(i) == "DOWN"
        )

    def instance_addresses(self, service: str) -> list[str]:
        return sorted({i.address for i in self._instances[service].values()})


class HealthStream(GrouplessStream):
    """The gateway's side: a ping every interval, and every fresh pong into the registry."""

    def __init__(
        self, registry: HealthRegistry, settings: CommonSettings, interval_s: float
    ) -> None:
        super().__init__(settings, "gateway-health", PONG_TOPIC)
        self._registry = registry
        self._interval_s = interval_s

    async def _use(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        pinging = asyncio.create_task(self._ping(producer), name="gateway-ping")
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    for record in records:
                        self._collect(record)
        finally:
            pinging.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinging

    async def _ping(self, producer: AIOKafkaProducer) -> None:
        registry = self._registry
        while True:
            ping_id = uuid.uuid4().hex
            registry.ping_sent(ping_id)
            ping = Ping(ping_id=ping_id, sent_at=now_rfc3339())
            await send_queued(producer, PING_TOPIC, ping_id, ping.dumps(), registry.ping_delivered)
            await asyncio.sleep(self._interval_s)

    def _collect(self, record: ConsumerRecord[Any, Any]) -> None:
        try:
            pong = Pong.loads(record.value)
        except Exception:  # a record that is not a pong is skipped, never a dead collector
            log.warning("ignoring a malformed pong", offset=record.offset)
            return
        service = {"microcommerce.service": pong.service}
        with consumer_span(PONG_TOPIC, record.headers, attributes=service):
            if is_fresh(pong.sent_at):
                self._registry.pong_received(pong)
