"""The routes around the API: /openapi.json, /docs, /metrics, extra routes, app state."""

from __future__ import annotations

import re
from typing import Any

import grpc
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app, route_table, upstreams
from gateway.routes import build_route_table
from gateway.settings import GatewaySettings
from tests.support.gateway_testing import Client, GatewayFactory
from tests.support.openapi_checks import problems_of
from tests.support.widget_service import WIDGET_SERVICE, WidgetServer


def app_of(client: Client) -> web.Application:
    app = client.app
    assert app is not None
    return app


async def test_openapi_json_describes_every_route(gateway: Client) -> None:
    response = await gateway.get("/openapi.json")

    assert response.status == 200
    document: dict[str, Any] = await response.json()
    assert document["openapi"] == "3.1.0"
    assert problems_of(document) == []
    operations = {
        op["operationId"]: method.upper()
        for item in document["paths"].values()
        for method, op in item.items()
    }
    for route in build_route_table([WIDGET_SERVICE]).routes:
        assert operations[route.operation_id] == route.http_method


async def test_docs_serve_swagger_ui_from_local_assets_only(gateway: Client) -> None:
    response = await gateway.get("/docs")

    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    # No CDN: the page works offline.
    assert "https://" not in page
    assert "http://" not in page
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert "/docs/assets/swagger-ui-bundle.js" in assets
    assert "/docs/assets/swagger-ui.css" in assets
    for asset in assets:
        served = await gateway.get(asset)
        assert served.status == 200, asset
        assert len(await served.read()) > 0


async def test_the_bundle_assets_have_script_and_style_media_types(gateway: Client) -> None:
    script = await gateway.get("/docs/assets/swagger-ui-bundle.js")
    style = await gateway.get("/docs/assets/swagger-ui.css")

    assert script.content_type in ("application/javascript", "text/javascript")
    assert style.content_type == "text/css"


async def test_the_docs_page_reads_the_same_document_labelled_for_swagger_ui_4(
    gateway: Client,
) -> None:
    initializer = await (await gateway.get("/docs/swagger-initializer.js")).text()
    shown = await (await gateway.get("/docs/openapi.json")).json()
    served = await (await gateway.get("/openapi.json")).json()

    assert '"/docs/openapi.json"' in initializer
    assert "validatorUrl: null" in initializer  # no call to validator.swagger.io
    assert shown["openapi"] == "3.0.3"
    assert shown["paths"] == served["paths"]


async def test_asyncapi_json_describes_the_topics_and_their_events(gateway: Client) -> None:
    response = await gateway.get("/asyncapi.json")

    assert response.status == 200
    document: dict[str, Any] = await response.json()
    assert document["asyncapi"] == "3.0.0"
    assert "microcommerce.order.placed" in document["channels"]["order-events"]["messages"]


async def test_metrics_count_requests_by_route_template_and_time_upstream_calls(
    gateway: Client,
) -> None:
    await gateway.get("/v1/widgets/w-1")
    await gateway.get("/v1/widgets/w-2")
    await gateway.get("/v1/failures/NOT_FOUND")
    await gateway.get("/no/such/route")

    response = await gateway.get("/metrics")

    assert response.status == 200
    assert response.content_type == "text/plain"
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(await response.text())
        for sample in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    ok = {"route": "/v1/widgets/{id}", "method": "GET", "status": "200"}
    assert value("gateway_http_requests_total", **ok) == 2
    assert value("gateway_http_request_duration_seconds_count", **ok) == 2
    assert value("gateway_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert not any("/v1/widgets/w-1" in str(key) for key in samples)  # no raw paths
    rpc = "/microcommerce.testing.v1.WidgetService"
    assert (
        value("gateway_upstream_rpc_duration_seconds_count", rpc=f"{rpc}/GetWidget", code="OK") == 2
    )
    assert (
        value(
            "gateway_upstream_rpc_duration_seconds_count", rpc=f"{rpc}/FailWidget", code="NOT_FOUND"
        )
        == 1
    )


async def test_metrics_offer_no_consumer_lag_the_gateway_could_never_report(
    gateway: Client,
) -> None:
    # Its health stream reads without a consumer group, so there are no offsets to lag behind:
    # an always-empty family would only suggest a lag panel has data from the gateway.
    text = await (await gateway.get("/metrics")).text()

    assert "mc_kafka_consumer_lag" not in text


async def test_each_app_has_its_own_metrics(make_gateway: GatewayFactory) -> None:
    first = await make_gateway()
    second = await make_gateway()
    await first.get("/v1/widgets/w-1")

    text = await (await second.get("/metrics")).text()

    assert 'route="/v1/widgets/{id}"' not in text


async def test_extra_routes_are_served_and_documented(make_gateway: GatewayFactory) -> None:
    async def live(_request: web.Request) -> web.Response:
        """The process is alive."""
        return web.json_response({"status": "UP"})

    client = await make_gateway(extra_routes=[web.get("/health/live", live)])

    response = await client.get("/health/live")
    document = await (await client.get("/openapi.json")).json()

    assert response.status == 200
    assert await response.json() == {"status": "UP"}
    assert document["paths"]["/health/live"]["get"]["summary"] == "The process is alive."


async def test_the_route_table_and_upstream_state_are_readable_from_the_app(
    gateway: Client, widget_server: WidgetServer
) -> None:
    app = app_of(gateway)

    await gateway.get("/v1/widgets/w-1")  # a call: the channel is connected now

    assert "GetWidget" in route_table(app).rpc_names()[WIDGET_SERVICE.full_name]
    assert upstreams(app).addresses == {WIDGET_SERVICE.full_name: widget_server.address}
    assert upstreams(app).connectivity() == {
        WIDGET_SERVICE.full_name: grpc.ChannelConnectivity.READY
    }
    assert upstreams(app).ready()


async def test_an_unreachable_upstream_is_not_ready(
    make_gateway: GatewayFactory, closed_port_address: str
) -> None:
    client = await make_gateway(address=closed_port_address)
    await client.get("/v1/widgets/w-1")  # fails fast: nothing listens

    assert not upstreams(app_of(client)).ready()


def test_by_default_the_gateway_serves_the_generated_microcommerce_services() -> None:
    app = create_app(GatewaySettings(environment="test"))

    packages = {s.file.package for s in route_table(app).services}
    assert packages <= {
        "microcommerce.payment.v1",
        "microcommerce.product.v1",
        "microcommerce.user.v1",
    }
    assert route_table(app).routes


async def test_docs_with_a_trailing_slash_redirect_to_docs(gateway: Client) -> None:
    response = await gateway.get("/docs/", allow_redirects=False)

    assert response.status == 308
    assert response.headers["Location"] == "/docs"
