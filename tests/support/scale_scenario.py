"""The scale-out scenario: shoppers on both gateways while one member of each kind is killed.

One replica of every service and one gateway are SIGKILLed at the same moment, mid-load; the
surviving gateway's ``/health`` is watched for the loss, the four are started again at their
ports (a new data dir each, as new pods), and both gateways are watched for the replacements.
The load runs on, stops, and the audit holds the system to account.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.support.processes import wait_for
from tests.support.scale_load import (
    Audit,
    Checkout,
    Sent,
    Shop,
    Shopper,
    World,
    audit,
    make_world,
)
from tests.support.scale_stack import REPLICAS, SERVICES, ScaleStack, up_instances

VICTIMS = ("payment-0", "product-0", "user-0", "gateway-0")
SURVIVOR = "gateway-1"


@dataclass
class HealthTimeline:
    """What ``/health`` showed around the kills, and when."""

    before: dict[str, list[str]] = field(default_factory=dict)  # service → UP addresses
    loss_s: dict[str, float] = field(default_factory=dict)  # kill → shown not UP
    replaced_s: dict[str, float] = field(default_factory=dict)  # restart → UP again
    after: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # gateway → ...
    new_ids: dict[str, bool] = field(default_factory=dict)  # the replacement is a new instance


async def _ready(stack: ScaleStack, name: str) -> bool:
    try:
        async with stack.http.get(
            f"{stack.members[name].url}/health/ready", timeout=aiohttp.ClientTimeout(total=2)
        ) as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def kill_and_replace(stack: ScaleStack) -> tuple[HealthTimeline, float, float]:
    """Kill the victims together, watch the loss and the replacement; (timeline, kill, whole)."""
    timeline = HealthTimeline()
    survivor = stack.members[SURVIVOR]

    async def whole() -> dict[str, Any] | None:
        # A replica under load may report itself DOWN for a moment (a slow database check):
        # kill only once the survivor sees every replica UP, so the loss it shows is the kill's.
        body = await stack.health(survivor)
        complete = body is not None and all(
            len(up_instances(body, s)) == REPLICAS for s in SERVICES
        )
        return body if complete else None

    seen = await wait_for(whole, within=30, interval=0.1)
    timeline.before = {s: sorted(up_instances(seen, s)) for s in SERVICES}
    old_ids = {s: up_instances(seen, s) for s in SERVICES}
    victims = {stack.members[name].role: stack.members[name] for name in VICTIMS}

    killed_at = time.monotonic()
    for name in VICTIMS:
        stack.kill(name)

    async def loss_shown() -> bool:
        body = await stack.health(survivor)
        if body is not None:
            for service in SERVICES:
                gone = victims[service].address not in up_instances(body, service)
                if gone and service not in timeline.loss_s:
                    timeline.loss_s[service] = round(time.monotonic() - killed_at, 2)
        return len(timeline.loss_s) == len(SERVICES)

    with contextlib.suppress(AssertionError):  # the timeline shows what was missed
        await wait_for(loss_shown, within=10, interval=0.1)

    restarted_at = time.monotonic()
    for name in VICTIMS:
        stack.start(name)

    async def replaced() -> bool:
        if "gateway" not in timeline.replaced_s and await _ready(stack, VICTIMS[-1]):
            timeline.replaced_s["gateway"] = round(time.monotonic() - restarted_at, 2)
        # The survivor first: it times each service's replacement, whatever the other does.
        for gateway in sorted(stack.gateways, key=lambda g: g.name != SURVIVOR):
            body = await stack.health(gateway)
            if body is None:
                return False
            for service in SERVICES:
                up = up_instances(body, service)
                address = victims[service].address
                if gateway.name == SURVIVOR and address in up and service not in timeline.new_ids:
                    timeline.replaced_s[service] = round(time.monotonic() - restarted_at, 2)
                    timeline.new_ids[service] = up[address] != old_ids[service].get(address)
            if any(len(up_instances(body, s)) < REPLICAS for s in SERVICES):
                return False
            timeline.after[gateway.name] = {s: sorted(up_instances(body, s)) for s in SERVICES}
        return "gateway" in timeline.replaced_s

    await wait_for(replaced, within=90, interval=0.2)
    return timeline, killed_at, time.monotonic()


@dataclass
class Scenario:
    """Everything the scale-out run saw, for the test's assertions and the bench's figures."""

    world: World
    sent: list[Sent]
    timeline: HealthTimeline
    kill_window: tuple[float, float]  # monotonic: the kill → every replacement UP
    load_s: float
    audit: Audit
    client_crashes: list[str]

    def during_kills(self, at: float) -> bool:
        # A request the breaker or a stale health view refuses just after the replacements
        # are UP is still the kills' doing.
        start, end = self.kill_window
        return start <= at <= end + 3.0

    def checkouts_across_kills(self) -> list[Checkout]:
        """Checkouts whose client was still asking while members were down."""
        start, end = self.kill_window
        return [c for c in self.world.checkouts if start - 5.0 <= c.started_at <= end]

    def errors(self, *, during_kills: bool) -> Counter[str]:
        return Counter(
            f"{s.kind} {s.label}"
            for s in self.sent
            if not s.expected and s.kind != "setup" and self.during_kills(s.at) == during_kills
        )

    def walk_errors(self) -> list[str]:
        expected = sorted(self.world.browse_ids)
        return [f"walk got {len(ids)} ids" for ids in self.world.walks if sorted(ids) != expected]

    def summary(self) -> dict[str, Any]:
        load = [s for s in self.sent if s.kind not in ("setup", "audit")]
        finals = Counter(
            c.final.label if c.final else "no final answer" for c in self.world.checkouts
        )
        return {
            "load_seconds": round(self.load_s, 1),
            "requests_sent": len(load),
            "requests_by_kind": dict(Counter(s.kind for s in load)),
            "requests_per_second": round(len(load) / self.load_s, 1) if self.load_s else 0,
            "errors_during_kills": dict(self.errors(during_kills=True)),
            "errors_outside_kills": dict(self.errors(during_kills=False)),
            "kill_window_s": round(self.kill_window[1] - self.kill_window[0], 1),
            "health_before": self.timeline.before,
            "health_loss_shown_after_s": self.timeline.loss_s,
            "replacement_up_after_s": self.timeline.replaced_s,
            "checkouts": {
                "started": len(self.world.checkouts),
                "final_answers": dict(finals),
                "retried": sum(len(c.answers) > 1 for c in self.world.checkouts),
                "across_the_kills": dict(
                    Counter(" ".join(c.answers) for c in self.checkouts_across_kills())
                ),
            },
            "catalog_walks": {
                "completed": len(self.world.walks),
                "wrong": len(self.walk_errors()),
                "broken": self.world.broken_walks,
            },
            "registrations": self.world.registrations,
            "orders": {
                "total": self.audit.orders,
                "confirmed": self.audit.confirmed,
                "failed": self.audit.failed,
                "accepted_201": self.audit.accepted,
                "settled_after_s": self.audit.settle_s,
            },
            "lost_or_wrong": self.audit.problems() + self.walk_errors() + self.client_crashes,
            "stock": self.audit.stock,
        }


async def run_scenario(
    stack: ScaleStack,
    *,
    clients: int,
    warmup_s: float,
    after_s: float,
    stocks: Sequence[int],
    settle_within: float = 60.0,
    seed: int = 11,
) -> Scenario:
    """Make the world, run the shoppers around ``kill_and_replace``, then audit."""
    shop = Shop(stack)
    world = await make_world(shop, customers=clients, browse_products=12, stocks=stocks)
    stop = asyncio.Event()
    began = time.monotonic()
    shoppers = [
        asyncio.create_task(Shopper(shop, world, i, seed + i).run(stop), name=f"shopper-{i}")
        for i in range(clients)
    ]
    try:
        await asyncio.sleep(warmup_s)
        timeline, killed_at, whole_at = await kill_and_replace(stack)
        await asyncio.sleep(after_s)
    finally:
        stop.set()
        outcomes = await asyncio.gather(*shoppers, return_exceptions=True)
    load_s = time.monotonic() - began
    crashes = [f"shopper failed: {o!r}" for o in outcomes if isinstance(o, BaseException)]
    checked = await audit(shop, world, settle_within=settle_within)
    return Scenario(world, shop.sent, timeline, (killed_at, whole_at), load_s, checked, crashes)
