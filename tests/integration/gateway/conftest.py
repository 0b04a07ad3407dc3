"""A real WidgetService gRPC server and gateways in front of it, over real sockets."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, Protocol

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf.descriptor import ServiceDescriptor

from gateway.app import create_app, runner_options
from gateway.ratelimit import Buckets
from gateway.settings import GatewaySettings
from gateway.upstreams import HealthView
from tests.support.gateway_testing import Client, GatewayFactory
from tests.support.tokens import KEYS, admin_token, bearer
from tests.support.widget_service import WIDGET_SERVICE, WidgetServer, running_widget_server


@pytest.fixture
async def widget_server() -> AsyncIterator[WidgetServer]:
    async with running_widget_server() as server:
        yield server


@pytest.fixture
async def make_gateway(widget_server: WidgetServer) -> AsyncIterator[GatewayFactory]:
    clients: list[Client] = []

    async def make(
        *,
        address: str | None = None,
        extra_routes: Iterable[web.RouteDef] = (),
        token: str | None = None,
        anonymous: bool = False,
        **settings: Any,
    ) -> Client:
        """A gateway trusting the test key; calls carry ``token`` (default: an admin's) unless
        ``anonymous``."""
        app = create_app(
            GatewaySettings(environment="test", **settings),
            services=[WIDGET_SERVICE],
            upstream_addresses={WIDGET_SERVICE.full_name: address or widget_server.address},
            extra_routes=extra_routes,
            key_source=KEYS,
        )
        headers = {} if anonymous else bearer(token or admin_token())
        client = TestClient(TestServer(app, host="127.0.0.1"), headers=headers)
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> Client:
    """A gateway with the default settings (5 s deadline, 1 MiB bodies)."""
    return await make_gateway(upstream_timeout_s=5.0, max_body_bytes=1024 * 1024)


@pytest.fixture
def closed_port_address() -> str:
    """An address nothing listens on: a port the OS handed out and took back."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"


class HardenedGatewayFactory(Protocol):
    async def __call__(
        self,
        addresses: Mapping[str, str],
        *,
        services: Sequence[ServiceDescriptor] = ...,
        health: HealthView | None = None,
        buckets: Buckets | None = None,
        extra_routes: Iterable[web.RouteDef] = (),
        **settings: Any,
    ) -> Client: ...


@pytest.fixture
async def start_gateway() -> AsyncIterator[HardenedGatewayFactory]:
    """Gateways with any services, addresses, health view and rate-limit buckets, served with
    the production runner options (header limits, keep-alive); anonymous clients."""
    clients: list[Client] = []

    async def start(
        addresses: Mapping[str, str],
        *,
        services: Sequence[ServiceDescriptor] = (WIDGET_SERVICE,),
        health: HealthView | None = None,
        buckets: Buckets | None = None,
        extra_routes: Iterable[web.RouteDef] = (),
        **settings: Any,
    ) -> Client:
        gateway_settings = GatewaySettings(environment="test", **settings)
        app = create_app(
            gateway_settings,
            services=services,
            upstream_addresses=addresses,
            key_source=KEYS,
            health=health,
            buckets=buckets,
            extra_routes=extra_routes,
        )
        server = TestServer(app, host="127.0.0.1")
        # TestServer passes runner options only through start_server.
        await server.start_server(**runner_options(gateway_settings))
        client = TestClient(server)
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()
