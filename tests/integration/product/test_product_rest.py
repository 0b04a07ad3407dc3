"""The catalog's REST routes through a real gateway in front of a real product service."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.support.gateway_testing import Client
from tests.support.tokens import admin_headers, bearer, customer_token


async def category(rest: Client) -> str:
    slug = f"rest-{uuid.uuid4().hex[:10]}"
    response = await rest.post(
        "/api/v1/categories", json={"name": "Tea", "slug": slug}, headers=admin_headers()
    )
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return str(body["id"])


def new_product(category_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "sku": f"SKU-{uuid.uuid4().hex[:10]}",
        "name": "Sencha",
        "description": "Green tea from Shizuoka.",
        "category_id": category_id,
        "price": {"amount": 1250, "currency": "EUR"},
        "stock": 12,
        **fields,
    }


async def test_an_admin_creates_a_product_and_a_shopper_finds_it(rest: Client) -> None:
    category_id = await category(rest)

    created = await rest.post(
        "/api/v1/products", json=new_product(category_id), headers=admin_headers()
    )
    body = await created.json()
    found = await rest.get(
        "/api/v1/products",
        params={"q": "shizuoka", "category_id": category_id, "max_price": "2000"},
    )
    listing = await found.json()

    assert created.status == 201
    assert body["price"] == {"amount": 1250, "currency": "EUR"}
    assert body["stock"] == {"available": 12, "reserved": 0}
    assert found.status == 200
    assert [p["id"] for p in listing["products"]] == [body["id"]]


async def test_a_duplicate_sku_is_a_conflict(rest: Client) -> None:
    product = new_product(await category(rest))
    await rest.post("/api/v1/products", json=product, headers=admin_headers())

    again = await rest.post("/api/v1/products", json=product, headers=admin_headers())

    assert again.status == 409
    assert again.content_type == "application/problem+json"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"price": {"amount": -5, "currency": "EUR"}}, "price.amount"),
        ({"price": {"amount": 1.5, "currency": "EUR"}}, "amount"),
        ({"price": {"amount": 100, "currency": "EURO"}}, "price.currency"),
        ({"category_id": "missing"}, "category_id"),
    ],
)
async def test_bad_product_input_is_a_400_naming_the_field(
    rest: Client, change: dict[str, Any], field: str
) -> None:
    body = {**new_product(await category(rest)), **change}
    response = await rest.post("/api/v1/products", json=body, headers=admin_headers())
    problem = await response.json()

    assert response.status == 400
    assert field in problem["detail"] or field in str(problem)


@pytest.mark.parametrize("params", [{"page_size": "-1"}, {"page_token": "garbage"}])
async def test_bad_paging_is_a_400(rest: Client, params: dict[str, str]) -> None:
    response = await rest.get("/api/v1/products", params=params)

    assert response.status == 400
    assert "page_" in str(await response.json())


async def test_writes_need_an_admin(rest: Client) -> None:
    anonymous = await rest.post("/api/v1/categories", json={"name": "A", "slug": "a"})
    customer = await rest.post(
        "/api/v1/categories", json={"name": "A", "slug": "a"}, headers=bearer(customer_token())
    )

    assert (anonymous.status, customer.status) == (401, 403)


async def test_an_admin_edits_prices_and_stock_and_archives(rest: Client) -> None:
    created = await (
        await rest.post(
            "/api/v1/products", json=new_product(await category(rest)), headers=admin_headers()
        )
    ).json()
    path = f"/api/v1/products/{created['id']}"

    patched = await rest.patch(path, json={"name": "Gyokuro"}, headers=admin_headers())
    priced = await rest.put(
        f"{path}/price",
        json={"price": {"amount": 1500, "currency": "EUR"}},
        headers=admin_headers(),
    )
    history = await (await rest.get(f"{path}/price-history")).json()
    adjusted = await rest.post(
        f"{path}/stock-adjustments",
        json={"delta": -2, "reason": "tasting"},
        headers=admin_headers(),
    )
    too_many = await rest.post(
        f"{path}/stock-adjustments", json={"delta": -100, "reason": "loss"}, headers=admin_headers()
    )
    archived = await rest.delete(path, headers=admin_headers())
    gone = await rest.get(path)

    assert patched.status == 200
    assert (await patched.json())["name"] == "Gyokuro"
    assert priced.status == 200
    assert [c["price"]["amount"] for c in history["price_changes"]] == [1500, 1250]
    assert adjusted.status == 200
    assert (await adjusted.json()) == {"available": 10, "reserved": 0}
    assert too_many.status == 400
    assert archived.status == 204
    assert gone.status == 404


async def created_product(rest: Client) -> dict[str, Any]:
    response = await rest.post(
        "/api/v1/products", json=new_product(await category(rest)), headers=admin_headers()
    )
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_a_product_answer_carries_its_etag_as_the_etag_header(rest: Client) -> None:
    product = await created_product(rest)

    # An admin's read, the one an If-Match follows; an anonymous read is shared and validated
    # by a hash of its body instead (tests/integration/gateway/test_gateway_http_cache.py).
    read = await rest.get(f"/api/v1/products/{product['id']}", headers=admin_headers())

    assert read.headers["ETag"] == f'"{product["etag"]}"'
    assert read.headers["ETag"] == f'"{(await read.json())["etag"]}"'


async def test_a_change_with_a_stale_if_match_is_refused_with_412_and_changes_nothing(
    rest: Client,
) -> None:
    product = await created_product(rest)
    path = f"/api/v1/products/{product['id']}"
    first = await rest.patch(
        path,
        json={"name": "Gyokuro"},
        headers={**admin_headers(), "If-Match": f'"{product["etag"]}"'},
    )

    stale = await rest.patch(
        path,
        json={"name": "Bancha"},
        headers={**admin_headers(), "If-Match": f'"{product["etag"]}"'},
    )
    stale_delete = await rest.delete(
        path, headers={**admin_headers(), "If-Match": f'"{product["etag"]}"'}
    )
    current = await rest.get(path)

    assert first.status == 200
    assert first.headers["ETag"] != f'"{product["etag"]}"'
    assert (stale.status, stale_delete.status) == (412, 412)
    assert stale.content_type == "application/problem+json"
    assert current.status == 200
    assert (await current.json())["name"] == "Gyokuro"


async def test_if_match_with_the_current_etag_lets_a_delete_through(rest: Client) -> None:
    product = await created_product(rest)
    path = f"/api/v1/products/{product['id']}"

    weak = await rest.delete(
        path, headers={**admin_headers(), "If-Match": f'W/"{product["etag"]}"'}
    )
    deleted = await rest.delete(
        path, headers={**admin_headers(), "If-Match": f'"{product["etag"]}"'}
    )

    assert weak.status == 412  # If-Match compares strongly: a weak tag never matches
    assert deleted.status == 204


async def test_an_etag_in_a_patch_body_works_without_an_update_mask(rest: Client) -> None:
    product = await created_product(rest)
    path = f"/api/v1/products/{product['id']}"

    current = await rest.patch(
        path, json={"name": "Gyokuro", "etag": product["etag"]}, headers=admin_headers()
    )
    stale = await rest.patch(
        path, json={"name": "Bancha", "etag": product["etag"]}, headers=admin_headers()
    )

    assert current.status == 200, await current.text()
    assert (await current.json())["name"] == "Gyokuro"
    assert stale.status == 409  # AIP-154: a stale etag in the body is ABORTED


async def test_if_match_on_an_operation_that_takes_no_etag_never_matches(rest: Client) -> None:
    product = await created_product(rest)

    response = await rest.put(
        f"/api/v1/products/{product['id']}/price",
        json={"price": {"amount": 1500, "currency": "EUR"}},
        headers={**admin_headers(), "If-Match": '"v1"'},
    )
    anything = await rest.put(
        f"/api/v1/products/{product['id']}/price",
        json={"price": {"amount": 1600, "currency": "EUR"}},
        headers={**admin_headers(), "If-Match": "*"},
    )

    assert response.status == 412
    assert anything.status == 200
