"""Deadlines, retries, bulkheads, breakers and balancing against real gRPC servers."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from common.errors import Unavailable
from common.settings import SERVICE_NAMES
from gateway.health import HealthRegistry
from gateway.health_routes import health_routes
from gateway.routes import discover_services
from microcommerce.testing.v1 import widgets_pb2
from tests.support.processes import wait_for
from tests.support.tokens import admin_token, bearer
from tests.support.widget_service import (
    WIDGET_SERVICE,
    WidgetServer,
    WidgetServicer,
    running_widget_server,
)

if TYPE_CHECKING:
    from tests.integration.gateway.conftest import HardenedGatewayFactory
    from tests.support.widget_service import Context

W = WIDGET_SERVICE.full_name


@dataclass
class FlakyServicer(WidgetServicer):
    """Answers UNAVAILABLE to the first ``failures`` calls of GetWidget and of CreateWidget."""

    failures: int = 0
    failed: dict[str, int] = field(default_factory=dict)

    def _flake(self, method: str) -> None:
        if self.failed.get(method, 0) < self.failures:
            self.failed[method] = self.failed.get(method, 0) + 1
            raise Unavailable("warming up")

    async def GetWidget(
        self, request: widgets_pb2.GetWidgetRequest, context: Context
    ) -> widgets_pb2.Widget:
        reply = await super().GetWidget(request, context)
        self._flake("GetWidget")
        return reply

    async def CreateWidget(
        self, request: widgets_pb2.CreateWidgetRequest, context: Context
    ) -> widgets_pb2.Widget:
        reply = await super().CreateWidget(request, context)
        self._flake("CreateWidget")
        return reply


@dataclass
class DeadlineRecorder(WidgetServicer):
    """Records how long GetWidget was given, as the service sees its deadline."""

    remaining_s: list[float] = field(default_factory=list)

    async def GetWidget(
        self, request: widgets_pb2.GetWidgetRequest, context: Context
    ) -> widgets_pb2.Widget:
        remaining = context.time_remaining()
        assert remaining is not None
        self.remaining_s.append(remaining)
        return await super().GetWidget(request, context)


def calls_of(server: WidgetServer, method: str) -> int:
    return sum(1 for c in server.servicer.calls if c.method == method)


async def test_an_idempotent_read_is_retried_past_a_passing_unavailable(
    start_gateway: HardenedGatewayFactory,
) -> None:
    async with running_widget_server(FlakyServicer(failures=2)) as server:
        gateway = await start_gateway({W: server.address})

        response = await gateway.get("/v1/widgets/w-1")

        assert response.status == 200
        assert calls_of(server, "GetWidget") == 3


async def test_a_non_idempotent_call_is_never_retried(
    start_gateway: HardenedGatewayFactory,
) -> None:
    async with running_widget_server(FlakyServicer(failures=2)) as server:
        gateway = await start_gateway({W: server.address})

        response = await gateway.post(
            "/v1/widgets", json={"name": "x"}, headers=bearer(admin_token())
        )

        assert response.status == 503
        assert calls_of(server, "CreateWidget") == 1


async def test_a_client_deadline_header_shortens_the_wait_for_a_slow_service(
    start_gateway: HardenedGatewayFactory, widget_server: WidgetServer
) -> None:
    gateway = await start_gateway({W: widget_server.address}, upstream_timeout_s=5.0)

    started = time.monotonic()
    response = await gateway.get("/v1/slow-widgets/w-1", headers={"Request-Timeout": "200ms"})

    assert response.status == 504
    assert (await response.json())["code"] == "DEADLINE_EXCEEDED"
    assert time.monotonic() - started < 4.0  # well before the 5 s deadline: it did not wait it out


async def test_the_deadline_travels_to_the_service_shortened_by_the_client(
    start_gateway: HardenedGatewayFactory,
) -> None:
    servicer = DeadlineRecorder()
    async with running_widget_server(servicer) as server:
        gateway = await start_gateway({W: server.address}, upstream_timeout_s=5.0)

        await gateway.get("/v1/widgets/w")
        await gateway.get("/v1/widgets/w", headers={"Request-Timeout": "1500ms"})

    default, shortened = servicer.remaining_s
    # gRPC sends the deadline in whole units rounded up: a few milliseconds of slack.
    assert 1.6 < default <= 5.1
    assert 0 < shortened <= 1.6


async def test_a_route_deadline_from_the_settings_applies_to_that_route_only(
    start_gateway: HardenedGatewayFactory, widget_server: WidgetServer
) -> None:
    gateway = await start_gateway(
        {W: widget_server.address},
        upstream_timeout_s=30.0,
        route_timeouts_s={"GET /v1/slow-widgets/{id}": 0.2},
    )

    response = await gateway.get("/v1/slow-widgets/w-1")

    assert response.status == 504


async def test_a_full_bulkhead_refuses_at_once_while_calls_are_in_flight(
    start_gateway: HardenedGatewayFactory, widget_server: WidgetServer
) -> None:
    gateway = await start_gateway({W: widget_server.address}, max_concurrent_calls=1)
    slow = asyncio.create_task(gateway.get("/v1/slow-widgets/w-1"))
    await wait_for(lambda: _async(calls_of(widget_server, "GetSlowWidget")), within=5)

    refused = await gateway.get("/v1/widgets/w-2")

    assert refused.status == 503
    body = await refused.json()
    assert body["reason"] == "BULKHEAD_FULL"
    assert refused.headers["Retry-After"] == "1"
    assert not slow.done()
    widget_server.servicer.release.set()
    assert (await slow).status == 200
    assert (await gateway.get("/v1/widgets/w-2")).status == 200


async def _async(value: int) -> int:
    return value


async def test_an_unreachable_service_opens_its_breaker_and_then_fails_fast(
    start_gateway: HardenedGatewayFactory, closed_port_address: str
) -> None:
    gateway = await start_gateway(
        {W: closed_port_address}, breaker_failure_threshold=2, breaker_cooldown_s=30
    )
    for _ in range(2):
        assert (await gateway.get("/v1/widgets/w-1")).status == 503

    response = await gateway.get("/v1/widgets/w-1")

    assert response.status == 503
    body = await response.json()
    assert body["code"] == "UNAVAILABLE"
    assert body["reason"] == "CIRCUIT_OPEN"
    assert int(response.headers["Retry-After"]) >= 1
    metrics = await (await gateway.get("/metrics")).text()
    assert f'gateway_circuit_breaker_state{{state="open",upstream="{W}"}} 1.0' in metrics
    assert f'gateway_upstream_rejections_total{{cause="breaker_open",upstream="{W}"}}' in metrics


async def test_business_errors_leave_the_breaker_closed(
    start_gateway: HardenedGatewayFactory, widget_server: WidgetServer
) -> None:
    gateway = await start_gateway({W: widget_server.address}, breaker_failure_threshold=2)

    statuses = [
        (await gateway.get("/v1/failures/NOT_FOUND", params={"message": "no"})).status
        for _ in range(5)
    ]

    assert statuses == [404] * 5
    assert (await gateway.get("/v1/widgets/w-1")).status == 200


async def test_the_registry_shows_each_services_breaker(
    start_gateway: HardenedGatewayFactory, closed_port_address: str
) -> None:
    services = discover_services()
    gateway = await start_gateway(
        {f"microcommerce.{name}.v1": closed_port_address for name in SERVICE_NAMES},
        services=services,
        extra_routes=health_routes(HealthRegistry(SERVICE_NAMES), lambda: True),
        breaker_failure_threshold=2,
        breaker_cooldown_s=30,
    )
    for _ in range(2):
        await gateway.get("/api/v1/products")

    registry = await (await gateway.get("/api/v1/services")).json()

    breakers = {s["name"]: s["circuit_breaker"] for s in registry["services"]}
    assert breakers == {"payment": "closed", "product": "open", "user": "closed"}


@dataclass
class FakeHealth:
    """A health view where some instances are DOWN, with the broker up."""

    down: frozenset[str] = frozenset()

    def broker_up(self) -> bool:
        return True

    def service_status(self, service: str) -> str:
        return "UP"

    def down_instances(self, service: str) -> frozenset[str]:
        return self.down


async def test_calls_are_balanced_over_every_instance_and_skip_those_reported_down(
    start_gateway: HardenedGatewayFactory,
) -> None:
    health = FakeHealth()
    async with running_widget_server() as first, running_widget_server() as second:
        gateway = await start_gateway({W: f"{first.address},{second.address}"}, health=health)

        async def both_served() -> bool:
            assert (await gateway.get("/v1/widgets/w")).status == 200
            return calls_of(first, "GetWidget") > 0 and calls_of(second, "GetWidget") > 0

        await wait_for(both_served, within=5, interval=0)
        health.down = frozenset({second.address})
        before = calls_of(second, "GetWidget")
        for _ in range(10):
            assert (await gateway.get("/v1/widgets/w")).status == 200

        assert calls_of(second, "GetWidget") == before
