"""Fault tests with real processes: a WidgetService process killed, restarted, or slow."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from gateway.routes import discover_services
from localrun.broker import free_port, wait_for_port
from tests.support.processes import Process, start_process, wait_for
from tests.support.widget_service import WIDGET_SERVICE

if TYPE_CHECKING:
    from tests.integration.gateway.conftest import HardenedGatewayFactory
    from tests.support.gateway_testing import Client

W = WIDGET_SERVICE.full_name
PRODUCT_PACKAGE = "microcommerce.product.v1"
DEADLINE_S = 5.0


@dataclass
class WidgetProcess:
    port: int
    log_dir: Path
    latency_s: float = 0.0
    process: Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {"WIDGET_PORT": str(self.port), "WIDGET_LATENCY_S": str(self.latency_s)}
        self.process = start_process("tests.support.widget_runner", env, self.log_dir, "widgets")
        wait_for_port("127.0.0.1", self.port, timeout=30)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()


@pytest.fixture
def widget_process(tmp_path: Path) -> Iterator[Callable[[float], WidgetProcess]]:
    started: list[WidgetProcess] = []

    def start(latency_s: float = 0.0) -> WidgetProcess:
        widgets = WidgetProcess(free_port(), tmp_path, latency_s)
        widgets.start()
        started.append(widgets)
        return widgets

    yield start
    for widgets in started:
        if widgets.process is not None and widgets.process.popen.poll() is None:
            widgets.process.kill()


@asynccontextmanager
async def product_stand_in() -> AsyncIterator[str]:
    """Another upstream: a gRPC server with no services, so every product RPC is a 501."""
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


@dataclass
class Outcome:
    path: str
    status: int
    reason: str | None
    seconds: float


async def timed_get(gateway: Client, path: str) -> Outcome:
    started = time.monotonic()
    async with gateway.get(path) as response:
        body = await response.json() if response.status >= 400 else {}
        return Outcome(path, response.status, body.get("reason"), time.monotonic() - started)


async def load(gateway: Client, path: str, outcomes: list[Outcome], stop: asyncio.Event) -> None:
    while not stop.is_set():
        outcomes.append(await timed_get(gateway, path))


async def test_a_killed_service_fails_fast_leaves_others_alone_and_recovers_on_restart(
    start_gateway: HardenedGatewayFactory,
    widget_process: Callable[[float], WidgetProcess],
) -> None:
    widgets = widget_process(0.0)
    async with product_stand_in() as product:
        gateway = await start_gateway(
            {W: widgets.address, PRODUCT_PACKAGE: product},
            services=[WIDGET_SERVICE, *discover_services([PRODUCT_PACKAGE])],
            upstream_timeout_s=DEADLINE_S,
            rate_limit_enabled=False,
        )
        outcomes: list[Outcome] = []
        stop = asyncio.Event()
        workers = [
            asyncio.create_task(load(gateway, path, outcomes, stop))
            for path in ["/v1/widgets/w"] * 8 + ["/api/v1/products/p-1"] * 2
        ]
        try:
            await wait_for(lambda: _seen(outcomes, 200), within=10)

            widgets.kill()
            await wait_for(lambda: _seen(outcomes, 503, "CIRCUIT_OPEN"), within=DEADLINE_S)
            fast = [await timed_get(gateway, "/v1/widgets/w") for _ in range(20)]

            widgets.start()  # the same address, as a restarted pod or process would
            recovered = await wait_for(lambda: _recovered(gateway), within=5.0, interval=0.1)
        finally:
            stop.set()
            await asyncio.gather(*workers)

    assert recovered
    # While the breaker is open, a call to the dead service is refused without waiting: far
    # under the deadline (the load benchmark measures how far).
    assert {o.status for o in fast} == {503}
    assert max(o.seconds for o in fast) < 1.0
    # No request hung past its deadline, and the other service never noticed.
    assert max(o.seconds for o in outcomes) < DEADLINE_S + 1.0
    assert {o.status for o in outcomes if o.path.startswith("/api")} == {501}
    assert {o.status for o in outcomes if o.path.startswith("/v1")} <= {200, 503}


async def _seen(outcomes: list[Outcome], status: int, reason: str | None = None) -> bool:
    return any(o.status == status and (reason is None or o.reason == reason) for o in outcomes)


async def _recovered(gateway: Client) -> bool:
    return (await timed_get(gateway, "/v1/widgets/w")).status == 200


async def test_a_slow_service_gets_504_at_the_deadline_and_the_gateway_stays_responsive(
    start_gateway: HardenedGatewayFactory,
    widget_process: Callable[[float], WidgetProcess],
) -> None:
    widgets = widget_process(30.0)
    async with product_stand_in() as product:
        gateway = await start_gateway(
            {W: widgets.address, PRODUCT_PACKAGE: product},
            services=[WIDGET_SERVICE, *discover_services([PRODUCT_PACKAGE])],
            upstream_timeout_s=3.0,
        )
        slow = [asyncio.create_task(timed_get(gateway, "/v1/widgets/w")) for _ in range(5)]

        # Meanwhile, everything else answers at once: the slow calls hold no one up.
        other = await timed_get(gateway, "/api/v1/products/p-1")
        metrics = await gateway.get("/metrics")
        still_waiting = not any(task.done() for task in slow)
        answers = await asyncio.gather(*slow)

    assert other.status == 501
    assert metrics.status == 200
    assert still_waiting
    assert {a.status for a in answers} == {504}
    # The deadline, not the service's 30 s, decided when they ended.
    assert max(a.seconds for a in answers) < 10.0
