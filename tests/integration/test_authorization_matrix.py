"""Every REST route, called as nobody, a customer, an admin, and with expired or forged tokens.

What each route admits comes from its RPC's ``access`` option; this test holds the gateway and
the services to it, route by route, through real servers.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.routes import Route, build_route_table, discover_services
from gateway.settings import GatewaySettings
from microcommerce.common.v1 import annotations_pb2 as mc
from tests.support.inprocess import in_process_services
from tests.support.tokens import KEYS, SIGNER, admin_token, bearer, customer_token

ROUTES = build_route_table(discover_services()).routes
CALLERS = ("nobody", "customer", "admin", "expired", "tampered")


def _tampered() -> str:
    header, payload, signature = customer_token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["roles"] = ["customer", "admin"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{header}.{forged}.{signature}"


def _headers(caller: str) -> dict[str, str]:
    tokens = {
        "customer": customer_token,
        "admin": admin_token,
        "expired": lambda: SIGNER.mint(
            "user-1", ["customer"], now=datetime.now(UTC) - timedelta(hours=1)
        ),
        "tampered": _tampered,
    }
    headers = {"Idempotency-Key": "matrix"}
    if caller in tokens:
        headers.update(bearer(tokens[caller]()))
    return headers


def _expected(route: Route, caller: str) -> str:
    """'refused-401', 'refused-403' or 'admitted' (any status but 401 and 403)."""
    if route.access == mc.ACCESS_PUBLIC:
        return "admitted"
    if caller in ("nobody", "expired", "tampered"):
        return "refused-401"
    if route.access == mc.ACCESS_ADMIN and caller == "customer":
        return "refused-403"
    return "admitted"


def _path(route: Route) -> str:
    return re.sub(r"\{[^}]*\}", "matrix-id", route.template.text)


# One stack for the whole matrix: the servers live on the module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    data_dir: Path = tmp_path_factory.mktemp("matrix")
    async with in_process_services(data_dir) as addresses:
        settings = GatewaySettings.model_validate(
            {
                "environment": "test",
                # 150 calls from one address: the matrix is about tokens, not rate limits.
                "rate_limit_enabled": False,
                **{f"{name}_address": a for name, a in addresses.items()},
            }
        )
        client = TestClient(TestServer(create_app(settings, key_source=KEYS), host="127.0.0.1"))
        await client.start_server()
        yield client
        await client.close()


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.http_method} {r.template.text}")
async def test_each_route_admits_exactly_the_callers_its_rpc_declares(
    gateway: TestClient,  # type: ignore[type-arg]
    route: Route,
    caller: str,
) -> None:
    response = await gateway.request(
        route.http_method,
        _path(route),
        json={} if route.body else None,
        headers=_headers(caller),
    )

    expected = _expected(route, caller)
    if expected == "admitted":
        assert response.status not in (401, 403), await response.text()
    else:
        assert response.status == int(expected.removeprefix("refused-")), await response.text()
