"""Full-text search, filters, orders and page tokens: the same answers on SQLite and PostgreSQL."""

from __future__ import annotations

import base64

import grpc
import pytest

from microcommerce.product.v1 import product_service_pb2 as pb
from tests.integration.product.conftest import Clients
from tests.integration.product.product_helpers import violated_field

# (key, name, description, price, stock), created in this order (so newest last).
CATALOG = [
    ("kettle", "Steel kettle", "Boils water fast. Brushed steel.", 3500, 4),
    ("teapot", "Glass teapot", "Brews loose tea; the glass shows the colour.", 2500, 0),
    ("mug", "Stoneware mug", "Holds tea or coffee. Dishwasher safe.", 900, 30),
    ("grinder", "Coffee grinder", "Burr grinder for espresso and filter coffee.", 7900, 2),
    ("press", "French press", "Makes coffee for four; steel frame.", 2900, 11),
    ("scale", "Kitchen scale", "Weighs coffee beans and flour to 0.1 g.", 1900, 5),
]


@pytest.fixture
async def shop(clients: Clients) -> tuple[str, dict[str, str]]:
    """A category holding CATALOG; returns its id and product ids by key."""
    category = await clients.category()
    ids = {}
    for key, name, description, amount, stock in CATALOG:
        product = await clients.product(
            category.id, name=name, description=description, amount=amount, stock=stock
        )
        ids[key] = product.id
    return category.id, ids


async def search(clients: Clients, category_id: str, **filters: object) -> list[str]:
    request = pb.ListProductsRequest(category_id=category_id, **filters)  # type: ignore[arg-type]
    response = await clients.products.ListProducts(request)
    return [p.id for p in response.products]


def keys(ids: dict[str, str], found: list[str]) -> list[str]:
    by_id = {value: key for key, value in ids.items()}
    return [by_id[i] for i in found]


async def test_full_text_search_matches_every_word_in_name_or_description(
    clients: Clients, shop: tuple[str, dict[str, str]]
) -> None:
    category_id, ids = shop

    coffee = await search(clients, category_id, q="coffee", order_by="price")
    steel_coffee = await search(clients, category_id, q="Steel COFFEE")
    nothing = await search(clients, category_id, q="porcelain")

    assert keys(ids, coffee) == ["mug", "scale", "press", "grinder"]
    assert keys(ids, steel_coffee) == ["press"]
    assert nothing == []


async def test_relevance_puts_name_matches_first(
    clients: Clients, shop: tuple[str, dict[str, str]]
) -> None:
    category_id, ids = shop

    found = await search(clients, category_id, q="coffee")

    # Name matches first, then description matches; newest first within each.
    assert keys(ids, found) == ["grinder", "scale", "press", "mug"]


async def test_price_and_stock_filters_combine_with_the_search(
    clients: Clients, shop: tuple[str, dict[str, str]]
) -> None:
    category_id, ids = shop

    cheap_coffee = await search(clients, category_id, q="coffee", max_price=2900, in_stock=True)
    sold_out = await search(clients, category_id, in_stock=False)
    mid = await search(clients, category_id, min_price=1900, max_price=3500, order_by="-price")

    assert sorted(keys(ids, cheap_coffee)) == ["mug", "press", "scale"]
    assert keys(ids, sold_out) == ["teapot"]
    assert keys(ids, mid) == ["kettle", "press", "teapot", "scale"]


async def test_newest_first_is_the_default_order_without_a_query(
    clients: Clients, shop: tuple[str, dict[str, str]]
) -> None:
    category_id, ids = shop

    found = await search(clients, category_id)

    assert keys(ids, found) == [key for key, *_ in reversed(CATALOG)]


@pytest.mark.parametrize("order_by", ["price", "-price", "-create_time", "relevance"])
async def test_walking_the_pages_returns_every_match_once_in_order(
    clients: Clients, shop: tuple[str, dict[str, str]], order_by: str
) -> None:
    category_id, _ = shop
    everything = await search(clients, category_id, q="coffee", order_by=order_by)
    walked: list[str] = []
    token = ""
    while True:
        page = await clients.products.ListProducts(
            pb.ListProductsRequest(
                category_id=category_id,
                q="coffee",
                order_by=order_by,
                page_size=1,
                page_token=token,
            )
        )
        walked.extend(p.id for p in page.products)
        token = page.next_page_token
        if not token:
            break

    assert walked == everything
    assert len(walked) == 4


async def test_a_page_token_used_with_other_filters_is_refused(
    clients: Clients, shop: tuple[str, dict[str, str]]
) -> None:
    category_id, _ = shop
    first = await clients.products.ListProducts(
        pb.ListProductsRequest(category_id=category_id, page_size=2, order_by="price")
    )

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await clients.products.ListProducts(
            pb.ListProductsRequest(
                category_id=category_id,
                page_size=2,
                order_by="price",
                max_price=5000,
                page_token=first.next_page_token,
            )
        )

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(refused.value) == "page_token"


def tampered(token: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[3] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


@pytest.mark.parametrize("bad_token", ["%%%", "AAAA", "tampered"])
async def test_a_malformed_or_tampered_page_token_is_refused(
    clients: Clients, shop: tuple[str, dict[str, str]], bad_token: str
) -> None:
    category_id, _ = shop
    first = await clients.products.ListProducts(
        pb.ListProductsRequest(category_id=category_id, page_size=2)
    )
    token = tampered(first.next_page_token) if bad_token == "tampered" else bad_token

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await clients.products.ListProducts(
            pb.ListProductsRequest(category_id=category_id, page_size=2, page_token=token)
        )

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(refused.value) == "page_token"


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"page_size": -1}, "page_size"),
        ({"order_by": "name"}, "order_by"),
        ({"min_price": -1}, "min_price"),
        ({"min_price": 10, "max_price": 5}, "min_price"),
        ({"category_id": "unknown"}, "category_id"),
        ({"q": "x" * 201}, "q"),
    ],
)
async def test_bad_search_input_is_refused_naming_the_field(
    clients: Clients, request_fields: dict[str, object], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await clients.products.ListProducts(pb.ListProductsRequest(**request_fields))  # type: ignore[arg-type]

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(refused.value) == field


async def test_an_absent_page_size_means_twenty(clients: Clients) -> None:
    category = await clients.category()
    for _ in range(21):
        await clients.product(category.id)

    page = await clients.products.ListProducts(pb.ListProductsRequest(category_id=category.id))

    assert len(page.products) == 20
    assert page.next_page_token


async def test_search_text_with_operators_is_taken_literally(
    clients: Clients, shop: tuple[str, dict[str, str]]
) -> None:
    category_id, _ = shop

    found = await search(clients, category_id, q='"kettle" OR NOT* (steel')

    assert found == []  # every word must match, and no product has "or" and "not"


async def test_a_renamed_product_is_found_by_its_new_name_only(
    clients: Clients, shop: tuple[str, dict[str, str]]
) -> None:
    category_id, ids = shop
    await clients.products.UpdateProduct(
        pb.UpdateProductRequest(id=ids["kettle"], product=pb.Product(name="Copper samovar")),
        metadata=clients.admin,
    )

    assert keys(ids, await search(clients, category_id, q="samovar")) == ["kettle"]
    assert await search(clients, category_id, q="kettle") == []
