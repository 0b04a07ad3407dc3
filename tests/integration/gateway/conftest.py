"""A real WidgetService gRPC server and gateways in front of it, over real sockets."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.settings import GatewaySettings
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
