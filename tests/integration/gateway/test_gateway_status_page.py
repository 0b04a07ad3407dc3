"""``GET /status`` in process: local assets only, a strict CSP, and the summary it polls."""

from __future__ import annotations

import re

from common.settings import SERVICE_NAMES
from gateway.health import HealthRegistry
from gateway.status_page import status_routes
from tests.support.gateway_testing import Client, GatewayFactory
from tests.support.widget_service import WIDGET_SERVICE


async def status_gateway(make_gateway: GatewayFactory) -> Client:
    return await make_gateway(extra_routes=status_routes(HealthRegistry(SERVICE_NAMES)))


async def test_the_page_loads_only_its_own_files_under_a_csp_without_inline_code(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await status_gateway(make_gateway)

    response = await gateway.get("/status")

    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    assert "<script>" not in page
    assert "style=" not in page
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy
    assert "connect-src 'self';" in policy
    assert "unsafe-inline" not in policy
    assets = re.findall(r'(?:src|href)="(/status/assets/[^"]+)"', page)
    assert sorted(assets) == [
        "/status/assets/icon.svg",
        "/status/assets/status.css",
        "/status/assets/status.js",
    ]
    for asset in assets:
        served = await gateway.get(asset)
        assert served.status == 200, asset
        assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert (await gateway.get("/status/assets/status.html")).status == 404


async def test_the_summary_counts_the_last_minutes_requests_and_server_errors(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await status_gateway(make_gateway)
    first = await (await gateway.get("/status/summary")).json()

    await gateway.get("/v1/widgets/w")
    await gateway.get("/no/such/thing")
    response = await gateway.get("/status/summary")

    # "private, no-store" here: this gateway's client sends an admin's token.
    assert "no-store" in response.headers["Cache-Control"].split(", ")
    summary = await response.json()
    assert first["traffic"]["requests"] == 0
    # The page's own polls are not the shop's traffic.
    assert summary["traffic"]["requests"] == 2
    assert summary["traffic"]["errors"] == 0
    assert summary["traffic"]["window_s"] == 60
    assert summary["breakers"] == {WIDGET_SERVICE.full_name: "closed"}
    assert summary["health"]["broker"] == {"status": "DOWN"}
    assert sorted(summary["health"]["services"]) == sorted(SERVICE_NAMES)


async def test_the_summary_and_the_page_are_meta_routes_in_the_openapi_document(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await status_gateway(make_gateway)

    paths = (await (await gateway.get("/openapi.json")).json())["paths"]

    assert paths["/status/summary"]["get"]["tags"] == ["meta"]
    assert paths["/status"]["get"]["tags"] == ["meta"]
