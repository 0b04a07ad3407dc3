"""Products and categories through the real gRPC servicer, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from microcommerce.product.v1 import product_service_pb2 as pb
from tests.integration.product.conftest import Clients
from tests.integration.product.product_helpers import violated_field
from tests.support.tokens import customer_token


async def test_an_admin_creates_a_product_that_anyone_can_read(clients: Clients) -> None:
    category = await clients.category()
    created = await clients.product(category.id, stock=7, amount=1999, name="Blue kettle")

    read = await clients.products.GetProduct(pb.GetProductRequest(id=created.id))

    assert read.name == "Blue kettle"
    assert (read.price.amount, read.price.currency) == (1999, "USD")
    assert (read.stock.available, read.stock.reserved) == (7, 0)
    assert read.category_id == category.id
    assert read.create_time.seconds > 0
    assert read.update_time == read.create_time
    assert read.etag


async def test_a_second_product_with_the_same_sku_is_refused(clients: Clients) -> None:
    category = await clients.category()
    first = await clients.product(category.id)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await clients.product(category.id, sku=first.sku)

    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert violated_field(refused.value) == "sku"


async def test_customers_and_anonymous_callers_cannot_write(clients: Clients) -> None:
    category = await clients.category()
    request = pb.CreateCategoryRequest(name="Shoes", slug=f"s-{uuid.uuid4().hex[:8]}")

    with pytest.raises(grpc.aio.AioRpcError) as customer:
        await clients.products.CreateCategory(
            request, metadata=(("authorization", f"Bearer {customer_token()}"),)
        )
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await clients.products.AdjustStock(
            pb.AdjustStockRequest(id=category.id, delta=1, reason="x")
        )

    assert customer.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"amount": -1}, "price.amount"),
        ({"currency": "XYZ"}, "price.currency"),
        ({"currency": "usd"}, "price.currency"),
        ({"category_id": "nope"}, "category_id"),
        ({"sku": ""}, "sku"),
        ({"stock": -3}, "stock"),
    ],
)
async def test_bad_product_input_is_refused_naming_the_field(
    clients: Clients, change: dict[str, object], field: str
) -> None:
    category = await clients.category()
    request = pb.CreateProductRequest(
        sku=f"SKU-{uuid.uuid4().hex[:8]}", name="Mug", category_id=category.id, stock=1
    )
    request.price.amount = 500
    request.price.currency = "EUR"
    for name, value in change.items():
        target = request.price if name in ("amount", "currency") else request
        setattr(target, name, value)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await clients.products.CreateProduct(request, metadata=clients.admin)

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(refused.value) == field
    assert field.split(".")[-1] in (refused.value.details() or "")


async def test_a_partial_update_changes_only_the_masked_fields(clients: Clients) -> None:
    category = await clients.category()
    product = await clients.product(category.id, description="Old text")

    updated = await clients.products.UpdateProduct(
        pb.UpdateProductRequest(
            id=product.id,
            product=pb.Product(name="Renamed", description="ignored, not in the mask"),
            update_mask=FieldMask(paths=["name"]),
        ),
        metadata=clients.admin,
    )

    assert (updated.name, updated.description) == ("Renamed", "Old text")
    assert updated.etag != product.etag
    assert updated.update_time.ToMicroseconds() >= product.update_time.ToMicroseconds()


async def test_an_update_with_a_stale_etag_is_aborted(clients: Clients) -> None:
    category = await clients.category()
    product = await clients.product(category.id)
    await clients.products.UpdateProduct(
        pb.UpdateProductRequest(id=product.id, product=pb.Product(name="First admin")),
        metadata=clients.admin,
    )

    with pytest.raises(grpc.aio.AioRpcError) as aborted:
        await clients.products.UpdateProduct(
            pb.UpdateProductRequest(
                id=product.id, product=pb.Product(name="Second admin", etag=product.etag)
            ),
            metadata=clients.admin,
        )

    assert aborted.value.code() == grpc.StatusCode.ABORTED
    read = await clients.products.GetProduct(pb.GetProductRequest(id=product.id))
    assert read.name == "First admin"


async def test_price_and_stock_cannot_be_changed_by_update(clients: Clients) -> None:
    category = await clients.category()
    product = await clients.product(category.id)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await clients.products.UpdateProduct(
            pb.UpdateProductRequest(
                id=product.id, product=pb.Product(), update_mask=FieldMask(paths=["price"])
            ),
            metadata=clients.admin,
        )

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(refused.value) == "update_mask"


async def test_an_archived_product_disappears_from_reads(clients: Clients) -> None:
    category = await clients.category()
    product = await clients.product(category.id)

    await clients.products.DeleteProduct(
        pb.DeleteProductRequest(id=product.id), metadata=clients.admin
    )

    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await clients.products.GetProduct(pb.GetProductRequest(id=product.id))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await clients.products.ListProducts(pb.ListProductsRequest(category_id=category.id))
    assert list(listed.products) == []
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await clients.products.DeleteProduct(
            pb.DeleteProductRequest(id=product.id), metadata=clients.admin
        )
    assert again.value.code() == grpc.StatusCode.NOT_FOUND


async def test_price_changes_are_kept_newest_first_with_who_for_admins(clients: Clients) -> None:
    category = await clients.category()
    product = await clients.product(category.id, amount=1000)
    request = pb.SetProductPriceRequest(id=product.id)
    request.price.amount, request.price.currency = 1200, "USD"
    changed = await clients.products.SetProductPrice(request, metadata=clients.admin)

    public = await clients.products.ListPriceHistory(pb.ListPriceHistoryRequest(id=product.id))
    admin = await clients.products.ListPriceHistory(
        pb.ListPriceHistoryRequest(id=product.id, page_size=1), metadata=clients.admin
    )

    assert changed.price.amount == 1200
    assert [c.price.amount for c in public.price_changes] == [1200, 1000]
    assert {c.changed_by for c in public.price_changes} == {""}
    assert [c.changed_by for c in admin.price_changes] == ["admin-1"]
    assert admin.next_page_token


async def test_stock_adjustments_never_take_stock_below_zero(clients: Clients) -> None:
    category = await clients.category()
    product = await clients.product(category.id, stock=3)

    added = await clients.products.AdjustStock(
        pb.AdjustStockRequest(id=product.id, delta=5, reason="delivery"), metadata=clients.admin
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await clients.products.AdjustStock(
            pb.AdjustStockRequest(id=product.id, delta=-9, reason="count"),
            metadata=clients.admin,
        )

    assert (added.available, added.reserved) == (8, 0)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    read = await clients.products.GetProduct(pb.GetProductRequest(id=product.id))
    assert read.stock.available == 8


async def test_listing_a_category_includes_its_subcategories(clients: Clients) -> None:
    root = await clients.category()
    child = await clients.products.CreateCategory(
        pb.CreateCategoryRequest(
            name="Child", slug=f"child-{uuid.uuid4().hex[:8]}", parent_id=root.id
        ),
        metadata=clients.admin,
    )
    other = await clients.category()
    in_root = await clients.product(root.id)
    in_child = await clients.product(child.id)
    await clients.product(other.id)

    listed = await clients.products.ListProducts(pb.ListProductsRequest(category_id=root.id))

    assert {p.id for p in listed.products} == {in_root.id, in_child.id}


async def test_a_category_with_an_unknown_parent_or_a_taken_slug_is_refused(
    clients: Clients,
) -> None:
    existing = await clients.category()

    with pytest.raises(grpc.aio.AioRpcError) as orphan:
        await clients.products.CreateCategory(
            pb.CreateCategoryRequest(name="X", slug=f"x-{uuid.uuid4().hex[:8]}", parent_id="no"),
            metadata=clients.admin,
        )
    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await clients.products.CreateCategory(
            pb.CreateCategoryRequest(name="Y", slug=existing.slug), metadata=clients.admin
        )

    assert (orphan.value.code(), violated_field(orphan.value)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "parent_id",
    )
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_categories_are_listed_page_by_page(clients: Clients) -> None:
    mine = {(await clients.category()).id for _ in range(3)}
    seen: list[str] = []
    token = ""
    while True:
        page = await clients.products.ListCategories(
            pb.ListCategoriesRequest(page_size=2, page_token=token)
        )
        assert len(page.categories) <= 2
        seen.extend(c.id for c in page.categories)
        token = page.next_page_token
        if not token:
            break

    assert mine <= set(seen)
    assert len(seen) == len(set(seen))
