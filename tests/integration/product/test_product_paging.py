"""AIP-158 paging of every product list RPC: sizes coerced, tokens bound, no item seen twice."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import grpc
import pytest

from common.money import Money
from microcommerce.product.v1 import product_service_pb2 as pb
from product_svc.domain import NewProduct
from product_svc.service import Catalog
from tests.integration.product.conftest import Clients
from tests.integration.product.product_helpers import violated_field
from tests.support.gateway_testing import Client

Lister = Callable[[int, str], Awaitable[tuple[list[str], str]]]


async def many_products(catalog: Catalog, category_id: str, count: int) -> None:
    await catalog.insert_products(
        [
            NewProduct(
                f"P-{uuid.uuid4().hex[:12]}", f"Item {i}", "", category_id, Money(i, "USD"), 1, 0
            )
            for i in range(count)
        ]
    )


async def many_prices(catalog: Catalog, product_id: str, count: int) -> None:
    for amount in range(count):
        await catalog.set_price(product_id, Money(amount, "USD"), "admin-1")


def products_of(clients: Clients, category_id: str) -> Lister:
    async def list_page(size: int, token: str) -> tuple[list[str], str]:
        page = await clients.products.ListProducts(
            pb.ListProductsRequest(
                category_id=category_id, order_by="price", page_size=size, page_token=token
            )
        )
        return [p.id for p in page.products], page.next_page_token

    return list_page


def categories_of(clients: Clients) -> Lister:
    async def list_page(size: int, token: str) -> tuple[list[str], str]:
        page = await clients.products.ListCategories(
            pb.ListCategoriesRequest(page_size=size, page_token=token)
        )
        return [c.id for c in page.categories], page.next_page_token

    return list_page


def prices_of(clients: Clients, product_id: str) -> Lister:
    async def list_page(size: int, token: str) -> tuple[list[str], str]:
        page = await clients.products.ListPriceHistory(
            pb.ListPriceHistoryRequest(id=product_id, page_size=size, page_token=token),
            metadata=clients.admin,
        )
        # Entries have no id: amounts are distinct in these tests and stand for them.
        return [str(c.price.amount) for c in page.price_changes], page.next_page_token

    return list_page


async def test_a_page_size_of_1000_is_coerced_to_100_in_every_listing(
    clients: Clients, catalog: Catalog
) -> None:
    category = await clients.category()
    await many_products(catalog, category.id, 101)
    for _ in range(100):
        await clients.category()
    product = await clients.product(category.id)
    await many_prices(catalog, product.id, 101)

    for lister in (
        products_of(clients, category.id),
        categories_of(clients),
        prices_of(clients, product.id),
    ):
        items, token = await lister(1000, "")
        assert len(items) == 100
        assert token


@pytest.mark.parametrize(
    "path",
    ["/api/v1/products", "/api/v1/categories", "/api/v1/products/{id}/price-history"],
)
async def test_a_negative_page_size_is_a_400_naming_page_size(
    rest: Client, clients: Clients, path: str
) -> None:
    product = await clients.product((await clients.category()).id)

    response = await rest.get(path.format(id=product.id), params={"page_size": "-1"})
    problem = await response.json()

    assert response.status == 400
    assert "page_size" in problem["detail"]


async def test_a_product_token_replayed_with_another_filter_is_refused(
    clients: Clients, catalog: Catalog
) -> None:
    category = await clients.category()
    await many_products(catalog, category.id, 3)
    first = await clients.products.ListProducts(
        pb.ListProductsRequest(category_id=category.id, page_size=1)
    )

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await clients.products.ListProducts(
            pb.ListProductsRequest(
                category_id=category.id,
                in_stock=True,
                page_size=1,
                page_token=first.next_page_token,
            )
        )

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(refused.value) == "page_token"


# ListProducts over REST: one valid request setting every filter, and another value for each.
EVERY_FILTER = {
    "q": "item",
    "min_price": "0",
    "max_price": "100",
    "in_stock": "true",
    "order_by": "price",
}
ANOTHER_VALUE = {
    "q": "widget",
    "category_id": "",  # filled in with a second category
    "min_price": "1",
    "max_price": "99",
    "in_stock": "false",
    "order_by": "-price",
}


def test_every_list_products_filter_has_a_replay_case() -> None:
    filters = {
        field.name
        for field in pb.ListProductsRequest.DESCRIPTOR.fields
        if field.name not in ("page_size", "page_token")
    }
    assert set(ANOTHER_VALUE) == filters


@pytest.mark.parametrize("changed", sorted(ANOTHER_VALUE))
async def test_a_product_token_replayed_over_rest_with_any_other_filter_value_is_a_400(
    rest: Client, clients: Clients, catalog: Catalog, changed: str
) -> None:
    category, other = await clients.category(), await clients.category()
    await many_products(catalog, category.id, 3)
    params = {**EVERY_FILTER, "category_id": category.id, "page_size": "1"}
    first = await rest.get("/api/v1/products", params=params)
    token = (await first.json()).get("next_page_token")
    assert first.status == 200, await first.text()
    assert token
    replayed = {**params, changed: ANOTHER_VALUE[changed] or other.id, "page_token": token}

    response = await rest.get("/api/v1/products", params=replayed)
    problem = await response.json()

    assert response.status == 400, problem
    assert [v["field"] for v in problem["field_violations"]] == ["page_token"]


async def test_a_price_history_token_replayed_for_another_product_is_refused(
    clients: Clients, catalog: Catalog
) -> None:
    category = await clients.category()
    first, second = await clients.product(category.id), await clients.product(category.id)
    await many_prices(catalog, first.id, 2)
    page = await clients.products.ListPriceHistory(
        pb.ListPriceHistoryRequest(id=first.id, page_size=1)
    )

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await clients.products.ListPriceHistory(
            pb.ListPriceHistoryRequest(id=second.id, page_size=1, page_token=page.next_page_token)
        )

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(refused.value) == "page_token"


async def test_a_token_of_another_listing_is_refused_by_list_categories(
    clients: Clients, catalog: Catalog
) -> None:
    category = await clients.category()
    await many_products(catalog, category.id, 2)
    products = await clients.products.ListProducts(
        pb.ListProductsRequest(category_id=category.id, page_size=1)
    )

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await clients.products.ListCategories(
            pb.ListCategoriesRequest(page_size=1, page_token=products.next_page_token)
        )

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(refused.value) == "page_token"


async def walk(lister: Lister, between_pages: Callable[[], Awaitable[object]]) -> list[str]:
    """Every item of a listing, page by page (size 2), adding items between pages."""
    seen: list[str] = []
    token = ""
    while True:
        items, token = await lister(2, token)
        seen.extend(items)
        if not token:
            return seen
        await between_pages()


async def test_paging_products_returns_each_once_while_products_are_added(
    clients: Clients, catalog: Catalog
) -> None:
    category = await clients.category()
    await many_products(catalog, category.id, 7)
    before, _ = await products_of(clients, category.id)(100, "")

    seen = await walk(
        products_of(clients, category.id), lambda: many_products(catalog, category.id, 1)
    )

    assert len(seen) == len(set(seen))
    assert set(before) <= set(seen)


async def test_paging_categories_returns_each_once_while_categories_are_added(
    clients: Clients,
) -> None:
    for _ in range(5):
        await clients.category()
    before, _ = await categories_of(clients)(100, "")

    seen = await walk(categories_of(clients), clients.category)

    assert len(seen) == len(set(seen))
    assert set(before) <= set(seen)


async def test_paging_price_history_returns_each_once_while_prices_change(
    clients: Clients, catalog: Catalog
) -> None:
    product = await clients.product((await clients.category()).id, amount=10_000)
    await many_prices(catalog, product.id, 6)
    before, _ = await prices_of(clients, product.id)(100, "")
    amounts = iter(range(20_000, 30_000))

    seen = await walk(
        prices_of(clients, product.id),
        lambda: catalog.set_price(product.id, Money(next(amounts), "USD"), "admin-1"),
    )

    assert len(seen) == len(set(seen))
    assert set(before) <= set(seen)
