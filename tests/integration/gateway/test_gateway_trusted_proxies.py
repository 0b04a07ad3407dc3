"""Trusted proxies: whose forwarding header names the client for limits, metadata and logs."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from common.logging import configure_logging, reset_logging
from tests.support.gateway_testing import Client, GatewayFactory
from tests.support.widget_service import WidgetServer

# The test client connects from 127.0.0.1: as a trusted proxy, or as an untrusted peer.
THIS_PEER = ("127.0.0.0/8",)
OTHER_PROXIES = ("10.0.0.0/8",)
ONE_A_MINUTE = {"default": {"per_minute": 1, "burst": 1}}


def forwarded_for(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def sent_client_address(gateway: Client, server: WidgetServer, **headers: str) -> str:
    response = await gateway.get("/v1/widgets/w-1", headers=headers)
    assert response.status == 200
    return server.servicer.last("GetWidget").metadata["x-client-address"]


async def test_a_trusted_proxys_forwarded_for_reaches_the_service_as_the_client_address(
    make_gateway: GatewayFactory, widget_server: WidgetServer
) -> None:
    gateway = await make_gateway(trusted_proxies=THIS_PEER)

    sent = await sent_client_address(
        gateway, widget_server, **forwarded_for("6.6.6.6, 203.0.113.9, 127.0.0.2")
    )

    assert sent == "203.0.113.9"


async def test_a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(
    make_gateway: GatewayFactory, widget_server: WidgetServer
) -> None:
    untrusted = await make_gateway(trusted_proxies=OTHER_PROXIES)
    default = await make_gateway()

    assert await sent_client_address(untrusted, widget_server, **forwarded_for("1.2.3.4")) == (
        "127.0.0.1"
    )
    assert await sent_client_address(default, widget_server, **forwarded_for("1.2.3.4")) == (
        "127.0.0.1"
    )


@pytest.mark.parametrize(
    "header", ["garbage", "1.2.3.4, not an ip", "[::1", "999.1.1.1", "1.2.3.4:x:y", ""]
)
async def test_a_malformed_forwarded_for_falls_back_to_the_peer_without_failing_the_call(
    make_gateway: GatewayFactory, widget_server: WidgetServer, header: str
) -> None:
    gateway = await make_gateway(trusted_proxies=THIS_PEER)

    assert await sent_client_address(gateway, widget_server, **forwarded_for(header)) == (
        "127.0.0.1"
    )


async def test_an_rfc7239_forwarded_header_names_an_ipv6_client(
    make_gateway: GatewayFactory, widget_server: WidgetServer
) -> None:
    gateway = await make_gateway(trusted_proxies=THIS_PEER, trusted_proxy_header="Forwarded")

    sent = await sent_client_address(
        gateway,
        widget_server,
        Forwarded='for="[2001:db8::1]:1234";proto=https, for=127.0.0.5',
        # The proxy writes Forwarded: an X-Forwarded-For it passed through is the client's.
        **forwarded_for("1.2.3.4"),
    )

    assert sent == "2001:db8::1"


async def test_behind_a_trusted_proxy_each_client_has_its_own_rate_limit(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway(
        trusted_proxies=THIS_PEER, rate_limits=ONE_A_MINUTE, anonymous=True
    )

    first = [
        (await gateway.get("/v1/widgets/w", headers=forwarded_for(client))).status
        for client in ("203.0.113.1", "203.0.113.2", "203.0.113.1")
    ]

    assert first == [200, 200, 429]


async def test_spoofed_addresses_from_an_untrusted_peer_share_the_peers_rate_limit(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway(
        trusted_proxies=OTHER_PROXIES, rate_limits=ONE_A_MINUTE, anonymous=True
    )

    statuses = [
        (await gateway.get("/v1/widgets/w", headers=forwarded_for(client))).status
        for client in ("203.0.113.1", "203.0.113.2")
    ]

    assert statuses == [200, 429]


@pytest.fixture
def json_logs() -> Iterator[None]:
    configure_logging("gateway", "INFO")
    yield
    reset_logging()


async def test_the_log_lines_of_a_request_carry_the_client_address(
    make_gateway: GatewayFactory, json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = await make_gateway(trusted_proxies=THIS_PEER)

    response = await gateway.get("/v1/failures/INTERNAL", headers=forwarded_for("203.0.113.7"))

    assert response.status == 500
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    [logged] = [line for line in lines if line.get("event") == "upstream_failed"]
    assert logged["client_address"] == "203.0.113.7"
