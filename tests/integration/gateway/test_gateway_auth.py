"""The gateway refuses missing, bad and under-privileged tokens before any upstream call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.support.gateway_testing import GatewayFactory, problem_of
from tests.support.tokens import SIGNER, customer_token
from tests.support.widget_service import WidgetServer


async def test_a_protected_route_without_a_token_is_a_401_with_a_bearer_challenge(
    make_gateway: GatewayFactory, widget_server: WidgetServer
) -> None:
    gateway = await make_gateway(anonymous=True)

    response = await gateway.post("/v1/widgets/w-1:cancel")

    problem = await problem_of(response)
    assert response.status == 401
    assert problem["code"] == "UNAUTHENTICATED"
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert widget_server.servicer.calls == []


async def test_an_expired_token_is_a_401_naming_the_problem(
    make_gateway: GatewayFactory, widget_server: WidgetServer
) -> None:
    expired = SIGNER.mint("user-1", ["customer"], now=datetime.now(UTC) - timedelta(hours=1))
    gateway = await make_gateway(token=expired)

    response = await gateway.post("/v1/widgets/w-1:cancel")

    problem = await problem_of(response)
    assert response.status == 401
    assert "expired" in problem["detail"]
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert widget_server.servicer.calls == []


async def test_a_customer_on_an_admin_route_is_a_403(
    make_gateway: GatewayFactory, widget_server: WidgetServer
) -> None:
    gateway = await make_gateway(token=customer_token())

    response = await gateway.delete("/v1/widgets/w-1")

    assert response.status == 403
    assert (await problem_of(response))["code"] == "PERMISSION_DENIED"
    assert widget_server.servicer.calls == []


async def test_a_customer_token_opens_a_user_route(
    make_gateway: GatewayFactory, widget_server: WidgetServer
) -> None:
    gateway = await make_gateway(token=customer_token())

    response = await gateway.post("/v1/widgets/w-1:cancel")

    assert response.status == 200
    assert widget_server.servicer.last("CancelWidget").method == "CancelWidget"


async def test_a_public_route_serves_a_caller_whose_token_is_bad(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway(token="not-a-jwt")

    response = await gateway.get("/v1/widgets/w-1")

    assert response.status == 200
