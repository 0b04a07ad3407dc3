"""Page tokens of the catalog routes replayed through a real gateway in front of product_svc.

A token is bound to its listing and every filter of the request that issued it; replayed with
another filter value, for another product or on another listing it is a 400 naming
``page_token``, never a page of some other result set.
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.support.gateway_testing import Client
from tests.support.page_token_replay import assert_refused_on_page_token, replays_page_token
from tests.support.tokens import admin_headers

PRODUCT_SERVICE = "microcommerce.product.v1.ProductService"


async def category(rest: Client) -> str:
    slug = f"page-{uuid.uuid4().hex[:10]}"
    response = await rest.post(
        "/api/v1/categories", json={"name": f"Tea {slug}", "slug": slug}, headers=admin_headers()
    )
    assert response.status == 201, await response.text()
    return str((await response.json())["id"])


async def product(rest: Client, category_id: str, name: str = "Sencha") -> str:
    body = {
        "sku": f"SKU-{uuid.uuid4().hex[:10]}",
        "name": name,
        "description": "Green tea.",
        "category_id": category_id,
        "price": {"amount": 1250, "currency": "EUR"},
        "stock": 3,
    }
    response = await rest.post("/api/v1/products", json=body, headers=admin_headers())
    assert response.status == 201, await response.text()
    return str((await response.json())["id"])


async def get(rest: Client, path: str, **params: str) -> tuple[int, Any]:
    response = await rest.get(path, params=params)
    return response.status, await response.json()


@replays_page_token(PRODUCT_SERVICE, "ListPriceHistory")
async def test_a_price_history_token_replayed_for_another_product_is_a_400_naming_page_token(
    rest: Client,
) -> None:
    category_id = await category(rest)
    repriced, other = await product(rest, category_id), await product(rest, category_id)
    for amount in (1300, 1400):
        for product_id in (repriced, other):
            response = await rest.put(
                f"/api/v1/products/{product_id}/price",
                json={"price": {"amount": amount, "currency": "EUR"}},
                headers=admin_headers(),
            )
            assert response.status == 200, await response.text()
    status, first = await get(rest, f"/api/v1/products/{repriced}/price-history", page_size="1")
    assert status == 200, first
    assert first["next_page_token"]

    status, same = await get(
        rest, f"/api/v1/products/{repriced}/price-history", page_token=first["next_page_token"]
    )
    assert status == 200, same
    status, problem = await get(
        rest, f"/api/v1/products/{other}/price-history", page_token=first["next_page_token"]
    )

    assert_refused_on_page_token(status, problem)


@replays_page_token(PRODUCT_SERVICE, "ListCategories")
async def test_a_categories_token_replayed_on_another_listing_is_a_400_naming_page_token(
    rest: Client,
) -> None:
    # ListCategories has no filter: its token is bound to the listing itself (and its order),
    # so a products token is refused there and a categories token on the products listing.
    first_category, second_category = await category(rest), await category(rest)
    for category_id in (first_category, second_category):
        await product(rest, category_id)
    status, categories = await get(rest, "/api/v1/categories", page_size="1")
    assert status == 200, categories
    assert categories["next_page_token"]
    status, products = await get(rest, "/api/v1/products", page_size="1")
    assert status == 200, products
    assert products["next_page_token"]

    status, same = await get(rest, "/api/v1/categories", page_token=categories["next_page_token"])
    assert status == 200, same
    status, foreign = await get(rest, "/api/v1/categories", page_token=products["next_page_token"])
    assert_refused_on_page_token(status, foreign)
    status, leaked = await get(rest, "/api/v1/products", page_token=categories["next_page_token"])
    assert_refused_on_page_token(status, leaked)


@replays_page_token(PRODUCT_SERVICE, "ListProducts")
async def test_a_products_token_replayed_with_another_category_is_a_400_naming_page_token(
    rest: Client,
) -> None:
    category_id, other_category = await category(rest), await category(rest)
    for _ in range(2):
        await product(rest, category_id)
    await product(rest, other_category)
    status, first = await get(rest, "/api/v1/products", page_size="1", category_id=category_id)
    assert status == 200, first
    assert first["next_page_token"]

    status, same = await get(
        rest,
        "/api/v1/products",
        page_size="1",
        category_id=category_id,
        page_token=first["next_page_token"],
    )
    assert status == 200, same
    status, problem = await get(
        rest,
        "/api/v1/products",
        page_size="1",
        category_id=other_category,
        page_token=first["next_page_token"],
    )

    assert_refused_on_page_token(status, problem)
