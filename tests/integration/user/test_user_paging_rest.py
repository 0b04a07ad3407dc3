"""Page tokens of the user routes replayed through a real gateway in front of a real user_svc.

A token is bound to the filters of the request that issued it; the gRPC tests prove the
service refuses a replay, these prove a REST caller gets a 400 naming ``page_token`` for it
(not a 500, not another user's or another filter's page).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
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
from tests.support.page_token_replay import assert_refused_on_page_token, replays_page_token

Client = TestClient[web.Request, web.Application]
USER_SERVICE = user_service_pb2.DESCRIPTOR.services_by_name["UserService"]


@pytest.fixture
async def gateway(sqlite_user_server: UserServer) -> AsyncIterator[tuple[Client, UserServer]]:
    users = UserServiceClient(sqlite_user_server.address)
    app = create_app(
        GatewaySettings(
            environment="test",
            user_address=sqlite_user_server.address,
            rate_limit_enabled=False,
        ),
        services=[USER_SERVICE],
        upstream_addresses={USER_SERVICE.full_name: sqlite_user_server.address},
        key_source=JwksCache(users.fetch_jwks, min_refresh_interval_s=0),
    )
    client: Client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    yield client, sqlite_user_server
    await client.close()
    await users.close()


async def signed_up(client: Client) -> str:
    email = unique_email()
    created = await client.post(
        "/api/v1/users", json={"email": email, "password": PASSWORD, "name": "Ada"}
    )
    assert created.status == 201, await created.text()
    return email


async def signed_in(client: Client, email: str) -> dict[str, str]:
    response = await client.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD})
    assert response.status == 200, await response.text()
    pair = await response.json()
    return {"Authorization": f"Bearer {pair['access_token']}"}


async def get(client: Client, path: str, headers: dict[str, str], **params: str) -> Any:
    response = await client.get(path, params=params, headers=headers)
    return response.status, await response.json()


@replays_page_token("microcommerce.user.v1.UserService", "ListUsers")
async def test_a_users_page_token_replayed_with_another_email_is_a_400_naming_page_token(
    gateway: tuple[Client, UserServer],
) -> None:
    client, server = gateway
    admin_email = unique_email("admin")
    await server.accounts.bootstrap_admin(admin_email, PASSWORD)
    customer = await signed_up(client)
    await signed_up(client)
    admin = await signed_in(client, admin_email)
    status, first = await get(client, "/api/v1/users", admin, page_size="1")
    assert status == 200, first
    assert first["next_page_token"]

    status, same = await get(
        client, "/api/v1/users", admin, page_size="1", page_token=first["next_page_token"]
    )
    assert status == 200, same
    status, problem = await get(
        client,
        "/api/v1/users",
        admin,
        page_size="1",
        email=customer,
        page_token=first["next_page_token"],
    )

    assert_refused_on_page_token(status, problem)


@replays_page_token("microcommerce.user.v1.UserService", "ListSessions")
async def test_a_sessions_page_token_replayed_by_another_user_is_a_400_naming_page_token(
    gateway: tuple[Client, UserServer],
) -> None:
    client, _ = gateway
    owner_email, other_email = await signed_up(client), await signed_up(client)
    owner = await signed_in(client, owner_email)
    await signed_in(client, owner_email)  # a second session, so there is a next page
    other = await signed_in(client, other_email)
    await signed_in(client, other_email)
    status, first = await get(client, "/api/v1/users/me/sessions", owner, page_size="1")
    assert status == 200, first
    assert first["next_page_token"]

    status, same = await get(
        client, "/api/v1/users/me/sessions", owner, page_token=first["next_page_token"]
    )
    assert status == 200, same
    # Both requests say "my sessions": the token is bound to whose sessions they are.
    status, problem = await get(
        client, "/api/v1/users/me/sessions", other, page_token=first["next_page_token"]
    )

    assert_refused_on_page_token(status, problem)
