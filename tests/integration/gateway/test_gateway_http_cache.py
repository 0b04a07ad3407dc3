"""HTTP caching through a real gateway in front of the three real services.

Public catalog reads asked anonymously are shared (``public``, ``max-age``,
``stale-while-revalidate``, a strong ``ETag``, 304 on ``If-None-Match``); a customer's
profile and orders, and every answer to a token bearer, are ``private, no-store``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.routes import build_route_table, discover_services
from gateway.settings import GatewaySettings
from microcommerce.common.v1 import annotations_pb2 as mc
from microcommerce.product.v1 import inventory_service_pb2 as inventory_pb2
from microcommerce.product.v1.inventory_service_pb2_grpc import InventoryServiceStub
from tests.support.checkout_stack import checkout_body
from tests.support.gateway_testing import Client as Gateway
from tests.support.inprocess import in_process_services
from tests.support.tokens import (
    KEYS,
    admin_headers,
    bearer,
    customer_token,
    service_token,
)

SHARED = "public, max-age=60, stale-while-revalidate=120"

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def services(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, str]]:
    data_dir: Path = tmp_path_factory.mktemp("http-cache")
    async with in_process_services(data_dir) as addresses:
        yield addresses


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(services: dict[str, str]) -> AsyncIterator[Gateway]:
    settings = GatewaySettings.model_validate(
        {
            "environment": "test",
            "rate_limit_enabled": False,
            "http_cache_max_age_s": 60,
            "http_cache_swr_s": 120,
            **{f"{name}_address": a for name, a in services.items()},
        }
    )
    client = TestClient(TestServer(create_app(settings, key_source=KEYS), host="127.0.0.1"))
    await client.start_server()
    yield client
    await client.close()


async def _created(gateway: Gateway, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await gateway.post(path, json=body, headers=admin_headers())
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def _product(gateway: Gateway, stock: int = 12) -> dict[str, Any]:
    slug = f"cache-{uuid.uuid4().hex[:10]}"
    category = await _created(gateway, "/api/v1/categories", {"name": "Tea", "slug": slug})
    return await _created(
        gateway,
        "/api/v1/products",
        {
            "sku": f"SKU-{uuid.uuid4().hex[:10]}",
            "name": "Sencha",
            "description": "Green tea from Shizuoka.",
            "category_id": category["id"],
            "price": {"amount": 1250, "currency": "EUR"},
            "stock": stock,
        },
    )


def _vary(response: ClientResponse) -> set[str]:
    return {
        name.strip().lower()
        for value in response.headers.getall("Vary", [])
        for name in value.split(",")
    }


async def test_an_anonymous_product_read_is_shared_with_a_strong_etag(gateway: Gateway) -> None:
    product = await _product(gateway)

    read = await gateway.get(f"/api/v1/products/{product['id']}")

    assert read.status == 200
    assert read.headers["Cache-Control"] == SHARED
    assert "authorization" in _vary(read)
    etag = read.headers["ETag"]
    assert etag.startswith('"')  # strong: no W/
    assert etag.endswith('"')
    assert len(etag) > 2
    assert (await read.json())["id"] == product["id"]


async def test_a_matching_if_none_match_is_answered_304_with_the_caching_headers(
    gateway: Gateway,
) -> None:
    path = f"/api/v1/products/{(await _product(gateway))['id']}"
    etag = (await gateway.get(path)).headers["ETag"]

    same = await gateway.get(path, headers={"If-None-Match": etag})
    weak = await gateway.get(path, headers={"If-None-Match": f'"other", W/{etag}'})
    anything = await gateway.get(path, headers={"If-None-Match": "*"})
    other = await gateway.get(path, headers={"If-None-Match": '"other"'})
    malformed = await gateway.get(path, headers={"If-None-Match": etag.strip('"')})

    for answer in (same, weak, anything):
        assert answer.status == 304
        assert await answer.read() == b""
        assert answer.headers["ETag"] == etag
        assert answer.headers["Cache-Control"] == SHARED
        assert "authorization" in _vary(answer)
    assert (other.status, malformed.status) == (200, 200)  # unquoted: not a tag at all
    assert other.headers["ETag"] == etag


async def test_a_stock_change_that_keeps_the_products_version_still_changes_the_etag(
    gateway: Gateway, services: dict[str, str]
) -> None:
    # A checkout reserves stock without a new product version (etag); the shared validator
    # must change all the same, or a 304 would keep showing the old stock.
    product = await _product(gateway, stock=5)
    path = f"/api/v1/products/{product['id']}"
    before = await gateway.get(path)
    async with grpc.aio.insecure_channel(services["product"]) as channel:
        # What payment_svc's checkout calls, with a service token.
        await InventoryServiceStub(channel).ReserveStock(
            inventory_pb2.ReserveStockRequest(
                order_id=f"order-{uuid.uuid4().hex[:8]}",
                items=[
                    inventory_pb2.ReserveStockRequest.Item(product_id=product["id"], quantity=2)
                ],
            ),
            metadata=(("authorization", f"Bearer {service_token()}"),),
        )

    after = await gateway.get(path, headers={"If-None-Match": before.headers["ETag"]})

    assert after.status == 200
    body = await after.json()
    assert body["stock"] == {"available": 3, "reserved": 2}
    assert body["etag"] == product["etag"]  # the version did not move...
    assert after.headers["ETag"] != before.headers["ETag"]  # ...the representation did


async def test_a_list_without_a_resource_etag_is_validated_by_a_hash_of_its_body(
    gateway: Gateway,
) -> None:
    product = await _product(gateway)
    path = f"/api/v1/products?category_id={product['category_id']}"
    first = await gateway.get(path)
    unchanged = await gateway.get(path, headers={"If-None-Match": first.headers["ETag"]})
    renamed = await gateway.patch(
        f"/api/v1/products/{product['id']}", json={"name": "Gyokuro"}, headers=admin_headers()
    )
    assert renamed.status == 200

    changed = await gateway.get(path, headers={"If-None-Match": first.headers["ETag"]})

    assert first.headers["Cache-Control"] == SHARED
    assert unchanged.status == 304
    assert changed.status == 200
    assert changed.headers["ETag"] != first.headers["ETag"]
    assert (await changed.json())["products"][0]["name"] == "Gyokuro"


async def test_a_token_bearers_read_of_a_public_route_is_private_and_keeps_the_resource_etag(
    gateway: Gateway,
) -> None:
    product = await _product(gateway)
    path = f"/api/v1/products/{product['id']}"

    read = await gateway.get(path, headers=admin_headers())
    again = await gateway.get(
        path, headers={**admin_headers(), "If-None-Match": read.headers["ETag"]}
    )
    history = await gateway.get(f"{path}/price-history", headers=admin_headers())

    assert read.headers["Cache-Control"] == "private, no-store"
    assert read.headers["ETag"] == f'"{product["etag"]}"'  # for If-Match on a later change
    assert again.status == 200  # never stored, so never revalidated
    assert history.headers["Cache-Control"] == "private, no-store"


async def test_a_customers_profile_and_orders_are_private_and_never_stored(
    gateway: Gateway,
) -> None:
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    signed_up = await gateway.post(
        "/api/v1/users", json={"email": email, "password": "correct horse", "name": "Ada"}
    )
    token = await gateway.post(
        "/api/v1/auth/token", json={"email": email, "password": "correct horse"}
    )
    # The stack trusts the test key: a token for the new account, as user_svc would sign it.
    customer = bearer(customer_token((await signed_up.json())["id"]))
    ordered = await gateway.post(
        "/api/v1/orders",
        json=checkout_body([(uuid.uuid4().hex, 1)]),
        headers={**customer, "Idempotency-Key": uuid.uuid4().hex},
    )

    profile = await gateway.get("/api/v1/users/me", headers=customer)
    orders = await gateway.get("/api/v1/orders", headers=customer)
    order = await gateway.get(f"/api/v1/orders/{uuid.uuid4().hex}", headers=customer)
    anonymous = await gateway.get("/api/v1/users/me")

    for answer in (signed_up, token, ordered, profile, orders, order, anonymous):
        assert answer.headers["Cache-Control"] == "private, no-store", answer.url
    assert email in await profile.text(), await profile.text()
    assert (profile.status, orders.status, order.status, anonymous.status) == (200, 200, 404, 401)


async def test_a_failed_public_read_is_not_stored(gateway: Gateway) -> None:
    missing = await gateway.get(f"/api/v1/products/{uuid.uuid4()}")

    assert missing.status == 404
    assert missing.headers["Cache-Control"] == "no-store"
    assert "ETag" not in missing.headers


@pytest.mark.parametrize(
    "route",
    [r for r in build_route_table(discover_services()).routes if r.http_method == "GET"],
    ids=lambda r: r.template.text,
)
async def test_every_get_is_shared_exactly_when_its_rpc_is_public(
    gateway: Gateway, route: Any
) -> None:
    # No hand list: the proto's access option decides, route by route.
    path = route.template.text.replace("{id}", "no-such-id")
    for name in ("{", "}"):
        assert name not in path, f"add a path value for {route.template.text}"

    answer = await gateway.get(path)

    if route.revalidate_every_use and answer.status == 200:
        assert answer.headers["Cache-Control"] == "public, no-cache"
    elif route.access == mc.ACCESS_PUBLIC and answer.status == 200:
        assert answer.headers["Cache-Control"] == SHARED
    elif route.access == mc.ACCESS_PUBLIC:
        assert answer.headers["Cache-Control"] == "no-store"
    else:
        assert answer.headers["Cache-Control"] == "private, no-store"


async def test_a_refusal_before_any_call_is_not_stored_either(gateway: Gateway) -> None:
    refused = await gateway.get("/api/v1/products", headers={"Request-Timeout": "soon"})
    unauthenticated = await gateway.get("/api/v1/orders")

    assert refused.status == 400
    assert refused.headers["Cache-Control"] == "no-store"
    assert unauthenticated.status == 401
    assert unauthenticated.headers["Cache-Control"] == "private, no-store"


async def test_the_key_set_is_kept_only_if_revalidated_so_a_new_key_is_seen_before_it_signs(
    gateway: Gateway,
) -> None:
    # A copy served for max-age + stale-while-revalidate (here 180 s) would outlive the 10 s a
    # new signing key is published before it signs: verifiers behind a cache must ask again.
    keys = await gateway.get("/.well-known/jwks.json")
    assert keys.status == 200
    assert keys.headers["Cache-Control"] == "public, no-cache"

    again = await gateway.get(
        "/.well-known/jwks.json", headers={"If-None-Match": keys.headers["ETag"]}
    )
    assert again.status == 304
    assert again.headers["Cache-Control"] == "public, no-cache"
