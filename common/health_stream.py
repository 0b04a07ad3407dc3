"""The Kafka health stream: ping and pong records, and the responder every service instance runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import faust
import structlog

from common.clock import now, parse_rfc3339, rfc3339
from common.instance import new_instance_id
from common.telemetry import consumer_span
from common.topics import Topic

PING_TOPIC = Topic.SERVICE_PING
PONG_TOPIC = Topic.SERVICE_PONG

# A ping older than this is history, not a question: a new consumer may be handed a few old
# records (KAFKA.md: end offsets are reported early on Tansu) and must not answer them.
STALE_PING_AFTER = timedelta(seconds=5)
CHECK_TIMEOUT_S = 0.5

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


def install_pong_responder(
    app: faust.App, identity: InstanceIdentity, checks: Mapping[str, HealthCheck]
) -> None:
    """Add the agent that answers each fresh ping on ``service-pong`` with this instance's state.

    ``app`` must be this instance's own consumer group: every instance has to see every ping.
    """
    pings = app.topic(PING_TOPIC, value_type=Ping, partitions=PING_TOPIC.partitions)
    pongs = app.topic(PONG_TOPIC, value_type=Pong, partitions=PONG_TOPIC.partitions)

    @app.agent(pings, name=f"{identity.service}-pong-responder")
    async def answer_pings(stream: faust.StreamT[Ping]) -> None:
        async for event in stream.events():
            ping = event.value
            # The pong is sent inside the span, so it carries the ping's trace back.
            with consumer_span(PING_TOPIC, event.headers):
                if is_fresh(ping.sent_at):
                    await _answer(ping)

    async def _answer(ping: Ping) -> None:
        results = await run_checks(checks)
        await pongs.send(
            key=identity.instance_id,
            value=Pong(
                ping_id=ping.ping_id,
                service=identity.service,
                instance_id=identity.instance_id,
                address=identity.address,
                version=identity.version,
                status="UP" if all(r == "UP" for r in results.values()) else "DOWN",
                checks=results,
                sent_at=now_rfc3339(),
            ),
        )
