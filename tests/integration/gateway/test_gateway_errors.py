"""Failures as problem+json: upstream statuses, bad requests, limits, deadlines, outages."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from aiohttp import web

from gateway.problems import GRPC_TO_HTTP, INTERNAL_DETAIL
from tests.support.gateway_testing import Client, GatewayFactory, problem_of
from tests.support.widget_service import WidgetServer

PROBLEM = "application/problem+json"
ERROR_CODES = [code for code in grpc.StatusCode if code is not grpc.StatusCode.OK]


@pytest.mark.parametrize("code", ERROR_CODES, ids=lambda c: c.name)
async def test_every_grpc_status_becomes_its_http_status_with_the_upstream_detail(
    gateway: Client, code: grpc.StatusCode
) -> None:
    response = await gateway.get(f"/v1/failures/{code.name}", params={"message": "it failed"})

    problem = await problem_of(response)
    assert response.status == GRPC_TO_HTTP[code]
    assert problem["code"] == code.name
    expected = INTERNAL_DETAIL if response.status == 500 else "it failed"
    assert problem["detail"] == expected


async def test_a_500_never_shows_the_upstream_text(gateway: Client) -> None:
    secret = 'Traceback (most recent call last): File "/srv/app.py", password=hunter2'

    response = await gateway.get("/v1/failures/INTERNAL", params={"message": secret})

    assert response.status == 500
    assert "hunter2" not in await response.text()


async def test_an_unexpected_gateway_error_is_a_bare_500_with_a_request_id(
    make_gateway: GatewayFactory,
) -> None:
    async def broken(_request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    client = await make_gateway(extra_routes=[web.get("/broken", broken)])

    response = await client.get("/broken")

    problem = await problem_of(response)
    assert response.status == 500
    assert problem["code"] == "INTERNAL"
    assert "secret" not in await response.text()


async def test_malformed_json_is_a_400(gateway: Client, widget_server: WidgetServer) -> None:
    response = await gateway.post(
        "/v1/widgets", data=b'{"name": "x",', headers={"Content-Type": "application/json"}
    )

    problem = await problem_of(response)
    assert response.status == 400
    assert problem["code"] == "INVALID_ARGUMENT"
    assert "not valid JSON" in problem["detail"]
    assert widget_server.servicer.calls == []


async def test_a_wrong_json_type_is_a_400_naming_the_field(gateway: Client) -> None:
    response = await gateway.post("/v1/widgets", json={"name": "x", "price": "cheap"})

    problem = await problem_of(response)
    assert response.status == 400
    assert problem["detail"].startswith("widget.price:")


async def test_an_unknown_field_is_a_400_naming_it(gateway: Client) -> None:
    response = await gateway.post(
        "/v1/widget-orders", json={"lines": [], "coupon": "FREE"}, headers={"Idempotency-Key": "k"}
    )

    problem = await problem_of(response)
    assert response.status == 400
    assert problem["detail"] == "body: unknown field 'coupon'"


async def test_a_body_that_is_not_an_object_is_a_400(gateway: Client) -> None:
    response = await gateway.put("/v1/widgets/w-1/labels", json=["a"])

    assert response.status == 400
    assert "expected a JSON object" in (await problem_of(response))["detail"]


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("page_size=ten", "page_size"),
        ("color=COLOR_PINK", "color"),
        ("nope=1", "nope"),
        ("page_size=1&page_size=2", "one value"),
        ("in_stock=maybe", "in_stock"),
    ],
)
async def test_a_bad_query_parameter_is_a_400_naming_it(
    gateway: Client, query: str, fragment: str
) -> None:
    response = await gateway.get(f"/v1/widgets?{query}")

    assert response.status == 400
    assert fragment in (await problem_of(response))["detail"]


async def test_query_parameters_are_refused_where_the_body_holds_every_field(
    gateway: Client,
) -> None:
    response = await gateway.put("/v1/widgets/w-1/labels?tags=a", json={})

    assert response.status == 400


async def test_a_body_over_the_limit_is_a_413_before_any_upstream_call(
    make_gateway: GatewayFactory, widget_server: WidgetServer
) -> None:
    client = await make_gateway(max_body_bytes=1000)
    body = {"name": "x" * 2000}

    response = await client.post("/v1/widgets", json=body)

    problem = await problem_of(response)
    assert response.status == 413
    assert problem["code"] == "RESOURCE_EXHAUSTED"
    assert widget_server.servicer.calls == []


async def test_a_chunked_body_over_the_limit_is_a_413_too(make_gateway: GatewayFactory) -> None:
    client = await make_gateway(max_body_bytes=1000)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(20):
            yield b"x" * 100
        yield b'"}'

    response = await client.post(
        "/v1/widgets", data=chunks(), headers={"Content-Type": "application/json"}
    )

    assert response.status == 413
    await problem_of(response)


async def test_a_body_just_under_the_limit_is_accepted(make_gateway: GatewayFactory) -> None:
    client = await make_gateway(max_body_bytes=1000)

    response = await client.post("/v1/widgets", json={"name": "x" * 900})

    assert response.status == 201


async def test_an_unknown_route_is_a_404_problem(gateway: Client) -> None:
    response = await gateway.get("/v1/gadgets")

    problem = await problem_of(response)
    assert response.status == 404
    assert problem["code"] == "NOT_FOUND"


async def test_a_wrong_method_on_a_known_path_is_a_405_listing_the_allowed_ones(
    gateway: Client,
) -> None:
    response = await gateway.put("/v1/widgets/w-1")

    problem = await problem_of(response)
    assert response.status == 405
    assert response.headers["Allow"] == "DELETE,GET,PATCH"
    assert problem["code"] == "UNIMPLEMENTED"


async def test_a_missing_idempotency_key_is_a_400_before_any_upstream_call(
    gateway: Client, widget_server: WidgetServer
) -> None:
    response = await gateway.post("/v1/widget-orders", json={"lines": []})

    problem = await problem_of(response)
    assert response.status == 400
    assert "Idempotency-Key" in problem["detail"]
    assert widget_server.servicer.calls == []


async def test_an_upstream_slower_than_the_deadline_is_a_504(
    make_gateway: GatewayFactory, widget_server: WidgetServer
) -> None:
    client = await make_gateway(upstream_timeout_s=0.2)

    response = await client.get("/v1/slow-widgets/w-1")

    problem = await problem_of(response)
    assert response.status == 504
    assert problem["code"] == "DEADLINE_EXCEEDED"
    assert widget_server.servicer.last("GetSlowWidget")  # it did reach the service


async def test_an_unreachable_upstream_is_a_503_without_internal_addresses(
    make_gateway: GatewayFactory, closed_port_address: str
) -> None:
    client = await make_gateway(address=closed_port_address)

    response = await client.get("/v1/widgets/w-1")

    problem = await problem_of(response)
    assert response.status == 503
    assert problem["code"] == "UNAVAILABLE"
    assert "127.0.0.1" not in problem["detail"]
    assert "cannot be reached" in problem["detail"]


async def test_field_violations_sent_by_the_service_are_listed(gateway: Client) -> None:
    response = await gateway.get(
        "/v1/failures/INVALID_ARGUMENT", params={"message": "is not an email", "field": "email"}
    )

    problem = await problem_of(response)
    assert response.status == 400
    assert problem["field_violations"] == [{"field": "email", "description": "is not an email"}]


async def test_a_declined_payment_reason_is_a_402_naming_the_reason(gateway: Client) -> None:
    response = await gateway.get(
        "/v1/failures/FAILED_PRECONDITION",
        params={"message": "card declined", "reason": "PAYMENT_DECLINED"},
    )

    problem = await problem_of(response)
    assert response.status == 402
    assert problem["code"] == "FAILED_PRECONDITION"
    assert problem["reason"] == "PAYMENT_DECLINED"


async def test_a_reused_idempotency_key_reason_is_a_422(gateway: Client) -> None:
    response = await gateway.get(
        "/v1/failures/FAILED_PRECONDITION",
        params={"message": "different body", "reason": "IDEMPOTENCY_KEY_REUSED"},
    )

    assert response.status == 422


async def test_a_reason_without_its_own_status_keeps_the_codes_status(gateway: Client) -> None:
    response = await gateway.get(
        "/v1/failures/ALREADY_EXISTS", params={"message": "taken", "reason": "SKU_TAKEN"}
    )

    problem = await problem_of(response)
    assert response.status == 409
    assert problem["reason"] == "SKU_TAKEN"


async def test_retry_info_from_the_service_becomes_retry_after(gateway: Client) -> None:
    response = await gateway.get(
        "/v1/failures/RESOURCE_EXHAUSTED", params={"message": "slow down", "retry_after_s": "2.2"}
    )

    assert response.status == 429
    assert response.headers["Retry-After"] == "3"
