"""What travels with a call: request id both ways, credentials, idempotency key, trace context."""

from __future__ import annotations

import re

import pytest
from aiohttp import web

from tests.support.gateway_testing import Client, GatewayFactory
from tests.support.tokens import admin_token
from tests.support.widget_service import WidgetServer

GENERATED_ID = re.compile(r"[0-9a-f]{32}")  # uuid4, hex


async def test_a_sane_request_id_is_echoed_and_reaches_the_service(
    gateway: Client, widget_server: WidgetServer
) -> None:
    response = await gateway.get("/v1/widgets/w-1", headers={"X-Request-Id": "client-id-1.2:3"})

    assert response.headers["X-Request-Id"] == "client-id-1.2:3"
    assert widget_server.servicer.last("GetWidget").metadata["x-request-id"] == "client-id-1.2:3"


async def test_without_a_request_id_one_is_generated_and_sent_upstream(
    gateway: Client, widget_server: WidgetServer
) -> None:
    response = await gateway.get("/v1/widgets/w-1")

    generated = response.headers["X-Request-Id"]
    assert GENERATED_ID.fullmatch(generated)
    assert widget_server.servicer.last("GetWidget").metadata["x-request-id"] == generated


@pytest.mark.parametrize("bad_id", ["x" * 129, "has space", "semi;colon", 'quote"', "tab\tinside"])
async def test_an_unsafe_request_id_is_replaced_by_a_generated_one(
    gateway: Client, widget_server: WidgetServer, bad_id: str
) -> None:
    response = await gateway.get("/v1/widgets/w-1", headers={"X-Request-Id": bad_id})

    assert GENERATED_ID.fullmatch(response.headers["X-Request-Id"])
    assert widget_server.servicer.last("GetWidget").metadata["x-request-id"] != bad_id


async def test_each_request_gets_its_own_id(gateway: Client) -> None:
    first = await gateway.get("/v1/widgets/w-1")
    second = await gateway.get("/v1/widgets/w-1")

    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nowhere"),  # 404
        ("PUT", "/v1/widgets/w-1"),  # 405
        ("GET", "/v1/failures/INTERNAL"),  # 500
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/docs/assets/swagger-ui.css"),
        ("GET", "/extra"),
    ],
)
async def test_every_response_carries_the_request_id(
    make_gateway: GatewayFactory, method: str, path: str
) -> None:
    async def extra(_request: web.Request) -> web.Response:
        return web.json_response({"status": "UP"})

    client = await make_gateway(extra_routes=[web.get("/extra", extra)])

    response = await client.request(method, path, headers={"X-Request-Id": "trace-me"})

    assert response.headers["X-Request-Id"] == "trace-me"


async def test_the_authorization_header_is_forwarded_as_metadata(
    make_gateway: GatewayFactory, widget_server: WidgetServer
) -> None:
    token = admin_token()
    gateway = await make_gateway(token=token)

    await gateway.post("/v1/widgets/w-1:cancel")

    metadata = widget_server.servicer.last("CancelWidget").metadata
    assert metadata["authorization"] == f"Bearer {token}"


async def test_no_authorization_metadata_is_invented(
    make_gateway: GatewayFactory, widget_server: WidgetServer
) -> None:
    gateway = await make_gateway(anonymous=True)

    await gateway.get("/v1/widgets/w-1")

    assert "authorization" not in widget_server.servicer.last("GetWidget").metadata


async def test_the_idempotency_key_is_forwarded_as_metadata(
    gateway: Client, widget_server: WidgetServer
) -> None:
    await gateway.post(
        "/v1/widget-orders", json={"lines": []}, headers={"Idempotency-Key": '"order-77"'}
    )

    # The structured-field form ("...") and the bare token name the same key.
    assert widget_server.servicer.last("OrderWidgets").metadata["idempotency-key"] == "order-77"


async def test_an_overlong_idempotency_key_is_a_400(
    gateway: Client, widget_server: WidgetServer
) -> None:
    response = await gateway.post(
        "/v1/widget-orders", json={"lines": []}, headers={"Idempotency-Key": "k" * 256}
    )

    assert response.status == 400
    assert widget_server.servicer.calls == []


async def test_w3c_trace_context_is_forwarded_when_well_formed(
    gateway: Client, widget_server: WidgetServer
) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    await gateway.get("/v1/widgets/w-1", headers={"traceparent": traceparent, "tracestate": "mc=1"})

    metadata = widget_server.servicer.last("GetWidget").metadata
    assert metadata["traceparent"] == traceparent
    assert metadata["tracestate"] == "mc=1"


async def test_a_malformed_traceparent_is_dropped_not_refused(
    gateway: Client, widget_server: WidgetServer
) -> None:
    response = await gateway.get("/v1/widgets/w-1", headers={"traceparent": "garbage"})

    assert response.status == 200
    assert "traceparent" not in widget_server.servicer.last("GetWidget").metadata


async def test_the_client_address_and_user_agent_travel_as_metadata(
    gateway: Client, widget_server: WidgetServer
) -> None:
    await gateway.get("/v1/widgets/w-1", headers={"User-Agent": "shop-app/1.2"})

    metadata = widget_server.servicer.last("GetWidget").metadata
    assert metadata["x-client-address"] == "127.0.0.1"
    assert metadata["x-client-user-agent"] == "shop-app/1.2"
