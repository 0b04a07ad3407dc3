"""The demo catalog goes in through the public REST API, and a second run adds nothing."""

from __future__ import annotations

from localrun.seed import CATEGORIES, demo_products, seed
from tests.support.gateway_testing import Client
from tests.support.tokens import admin_token


async def test_seeding_twice_loads_the_demo_catalog_once(rest: Client) -> None:
    base_url = str(rest.make_url("")).rstrip("/")
    expected = len(list(demo_products()))

    first = await seed(base_url, admin_token())
    second = await seed(base_url, admin_token())
    coffee = await (
        await rest.get("/api/v1/products", params={"q": "grinder", "page_size": "100"})
    ).json()

    assert 190 <= expected <= 220
    assert (first.categories_created, first.products_created) == (len(CATEGORIES), expected)
    assert (second.categories_created, second.products_created) == (0, 0)
    assert second.products_skipped == expected
    assert len(coffee["products"]) >= 4
