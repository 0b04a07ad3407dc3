"""A real gateway in front of a real user_svc: who may call which user route, over REST."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from common.tokens import JwksCache
from common.user_client import UserServiceClient
from gateway.app import create_app
from gateway.settings import GatewaySettings
from microcommerce.user.v1 import user_service_pb2
from tests.integration.user.conftest import UserServer
from tests.integration.user.user_helpers import PASSWORD, unique_email
from user_svc.keys import rotate

Client = TestClient[web.Request, web.Application]
USER_SERVICE = user_service_pb2.DESCRIPTOR.services_by_name["UserService"]


@dataclass
class Stack:
    server: UserServer
    gateway: Client
    users: UserServiceClient


@pytest.fixture
async def stack(sqlite_user_server: UserServer) -> AsyncIterator[Stack]:
    """The gateway verifies tokens with user_svc's JWKS, fetched over gRPC (JwksCache)."""
    users = UserServiceClient(sqlite_user_server.address)
    app = create_app(
        GatewaySettings(environment="test", user_address=sqlite_user_server.address),
        services=[USER_SERVICE],
        upstream_addresses={USER_SERVICE.full_name: sqlite_user_server.address},
        # No refetch interval: the rotation test meets a new kid right after a first fetch.
        key_source=JwksCache(users.fetch_jwks, min_refresh_interval_s=0),
    )
    client: Client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    yield Stack(sqlite_user_server, client, users)
    await client.close()
    await users.close()


@dataclass
class Caller:
    """A freshly signed-up user (customer or admin) and their first token pair."""

    user_id: str
    access_token: str
    refresh_token: str


async def new_caller(stack: Stack, *, admin: bool) -> Caller:
    email = unique_email("admin" if admin else "customer")
    if admin:
        await stack.server.accounts.bootstrap_admin(email, PASSWORD)
    else:
        created = await stack.gateway.post(
            "/api/v1/users", json={"email": email, "password": PASSWORD, "name": "Ada"}
        )
        assert created.status == 201, await created.text()
    signed_in = await stack.gateway.post(
        "/api/v1/auth/token", json={"email": email, "password": PASSWORD}
    )
    assert signed_in.status == 200, await signed_in.text()
    pair = await signed_in.json()
    me = await stack.gateway.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {pair['access_token']}"}
    )
    return Caller((await me.json())["id"], pair["access_token"], pair["refresh_token"])


def expired(stack: Stack, caller: Caller) -> str:
    issued = datetime.now(UTC) - timedelta(hours=1)
    return stack.server.ring.signer().mint(caller.user_id, ["customer"], now=issued)


def tampered(_stack: Stack, caller: Caller) -> str:
    header, payload, signature = caller.access_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["roles"] = ["admin", "customer"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{header}.{forged}.{signature}"


# Each route: how to call it for a caller (method, path, JSON body), and the status a
# customer and an admin get when it is theirs to call.
Request = tuple[str, str, dict[str, Any] | None]
ROUTES: dict[str, tuple[Callable[[Caller], Request], int, int]] = {
    "logout": (
        lambda c: ("POST", "/api/v1/auth/logout", {"refresh_token": c.refresh_token}),
        204,
        204,
    ),
    "get me": (lambda c: ("GET", "/api/v1/users/me", None), 200, 200),
    "update me": (lambda c: ("PATCH", "/api/v1/users/me", {"name": "New"}), 200, 200),
    "delete me": (lambda c: ("DELETE", "/api/v1/users/me", None), 204, 204),
    "list sessions": (lambda c: ("GET", "/api/v1/users/me/sessions", None), 200, 200),
    "revoke a missing session": (
        lambda c: ("DELETE", "/api/v1/users/me/sessions/nope", None),
        404,
        404,
    ),
    "get preferences": (lambda c: ("GET", "/api/v1/users/me/preferences", None), 200, 200),
    "put preferences": (
        lambda c: ("PUT", "/api/v1/users/me/preferences", {"currency": "EUR"}),
        200,
        200,
    ),
    "list users": (lambda c: ("GET", "/api/v1/users", None), 403, 200),
    "set roles": (
        lambda c: ("PUT", f"/api/v1/users/{c.user_id}/roles", {"roles": ["customer"]}),
        403,
        200,
    ),
}

TokenFor = Callable[[Stack, Caller], str | None]
CALLERS: dict[str, tuple[bool, TokenFor, Callable[[int, int], int]]] = {
    "no token": (False, lambda s, c: None, lambda customer, admin: 401),
    "customer": (False, lambda s, c: c.access_token, lambda customer, admin: customer),
    "admin": (True, lambda s, c: c.access_token, lambda customer, admin: admin),
    "expired": (False, expired, lambda customer, admin: 401),
    "tampered": (False, tampered, lambda customer, admin: 401),
}


@pytest.mark.parametrize("caller_kind", sorted(CALLERS))
@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_each_protected_user_route_answers_each_kind_of_caller(
    stack: Stack, route: str, caller_kind: str
) -> None:
    build, customer_status, admin_status = ROUTES[route]
    is_admin, token_for, expected_status = CALLERS[caller_kind]
    caller = await new_caller(stack, admin=is_admin)
    method, path, body = build(caller)
    token = token_for(stack, caller)
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    response = await stack.gateway.request(method, path, json=body, headers=headers)

    assert response.status == expected_status(customer_status, admin_status), await response.text()
    if response.status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.content_type == "application/problem+json"


async def test_public_routes_need_no_token(stack: Stack) -> None:
    email = unique_email()
    created = await stack.gateway.post(
        "/api/v1/users", json={"email": email, "password": PASSWORD, "name": "Ada"}
    )
    signed_in = await stack.gateway.post(
        "/api/v1/auth/token", json={"email": email, "password": PASSWORD}
    )
    refreshed = await stack.gateway.post(
        "/api/v1/auth/refresh", json={"refresh_token": (await signed_in.json())["refresh_token"]}
    )
    jwks = await stack.gateway.get("/.well-known/jwks.json")

    assert [created.status, signed_in.status, refreshed.status, jwks.status] == [201, 200, 200, 200]
    assert (await signed_in.json())["token_type"] == "Bearer"
    assert (await jwks.json())["keys"][0]["kty"] == "EC"


async def test_rest_errors_of_the_user_routes(stack: Stack) -> None:
    email = unique_email()
    body = {"email": email, "password": PASSWORD, "name": "Ada"}
    await stack.gateway.post("/api/v1/users", json=body)

    duplicate = await stack.gateway.post("/api/v1/users", json=body)
    short = await stack.gateway.post("/api/v1/users", json=body | {"password": "short"})
    wrong = await stack.gateway.post(
        "/api/v1/auth/token", json={"email": email, "password": "wrong password"}
    )
    unknown = await stack.gateway.post(
        "/api/v1/auth/token", json={"email": unique_email(), "password": "wrong password"}
    )

    assert (duplicate.status, short.status, wrong.status, unknown.status) == (409, 400, 401, 401)
    wrong_body, unknown_body = await wrong.json(), await unknown.json()
    for problem in (wrong_body, unknown_body):
        problem.pop("request_id", None)
        problem.pop("instance", None)
    assert wrong_body == unknown_body


async def test_repeated_failed_sign_ins_get_429_with_retry_after(stack: Stack) -> None:
    email = unique_email()
    await stack.gateway.post(
        "/api/v1/users", json={"email": email, "password": PASSWORD, "name": "Ada"}
    )
    statuses = []
    for _ in range(4):  # the test server allows 3 failures per account
        response = await stack.gateway.post(
            "/api/v1/auth/token", json={"email": email, "password": "wrong password"}
        )
        statuses.append(response.status)

    assert statuses == [401, 401, 401, 429]
    assert int(response.headers["Retry-After"]) > 0


async def test_the_gateway_accepts_a_token_of_a_key_rotated_in_after_its_first_fetch(
    stack: Stack,
) -> None:
    before = await new_caller(stack, admin=False)  # the gateway has fetched the JWKS now
    old_kid = stack.server.ring.signer().kid

    rotate(stack.server.ring.directory)
    stack.server.ring.load()
    after = await new_caller(stack, admin=False)
    old_still_valid = await stack.gateway.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {before.access_token}"}
    )

    kid = json.loads(base64.urlsafe_b64decode(after.access_token.split(".")[0] + "=="))["kid"]
    assert kid == stack.server.ring.signer().kid
    assert kid != old_kid
    assert after.user_id  # GetMe through the gateway succeeded with the new key's token
    assert old_still_valid.status == 200
