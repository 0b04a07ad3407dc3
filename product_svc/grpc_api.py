"""The product service's gRPC servicers: proto in, use case, proto out."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from google.protobuf.empty_pb2 import Empty

from common.access import current_principal, require_principal
from common.errors import InvalidArgument
from common.grpc_types import ServicerContext
from common.money import Money
from common.proto_values import money_message, timestamp
from microcommerce.product.v1 import (
    inventory_service_pb2 as inv,
)
from microcommerce.product.v1 import (
    inventory_service_pb2_grpc,
    product_service_pb2_grpc,
)
from microcommerce.product.v1 import (
    product_service_pb2 as pb,
)
from product_svc import domain
from product_svc.service import Catalog

# The fields UpdateProduct may change; price and stock have their own audited methods.
_UPDATABLE = ("sku", "name", "description", "category_id", "low_stock_threshold")
_AUDITED = {"price": "SetProductPrice", "stock": "AdjustStock"}
_STATUS = {
    domain.ReservationStatus.ACTIVE: inv.RESERVATION_STATUS_ACTIVE,
    domain.ReservationStatus.COMMITTED: inv.RESERVATION_STATUS_COMMITTED,
    domain.ReservationStatus.RELEASED: inv.RESERVATION_STATUS_RELEASED,
    domain.ReservationStatus.EXPIRED: inv.RESERVATION_STATUS_EXPIRED,
}


def _money_in(message: Any, present: bool) -> Money | None:
    return Money(message.amount, message.currency) if present else None


def product_message(product: domain.Product) -> pb.Product:
    return pb.Product(
        id=product.id,
        sku=product.sku,
        name=product.name,
        description=product.description,
        category_id=product.category_id,
        price=money_message(product.price),
        stock=pb.StockLevel(available=product.available, reserved=product.reserved),
        create_time=timestamp(product.create_time),
        update_time=timestamp(product.update_time),
        etag=product.etag,
        low_stock_threshold=product.low_stock_threshold,
    )


def category_message(category: domain.Category) -> pb.Category:
    return pb.Category(
        id=category.id,
        name=category.name,
        slug=category.slug,
        parent_id=category.parent_id,
        create_time=timestamp(category.create_time),
    )


def reservation_message(reservation: domain.Reservation) -> inv.Reservation:
    return inv.Reservation(
        order_id=reservation.order_id,
        items=[
            inv.ReservedItem(
                product_id=item.product_id,
                sku=item.sku,
                name=item.name,
                quantity=item.quantity,
                unit_price=money_message(item.unit_price),
            )
            for item in reservation.items
        ],
        status=_STATUS[reservation.status],
        expire_time=timestamp(reservation.expire_time),
    )


def product_changes(request: pb.UpdateProductRequest) -> domain.ProductChanges:
    """The AIP-134 update: the mask's fields, or every populated updatable field without one."""
    product = request.product
    if request.HasField("update_mask"):
        paths = list(request.update_mask.paths)
        if not paths:
            raise InvalidArgument("update_mask names no field", field="update_mask")
        for path in paths:
            if path in _AUDITED:
                raise InvalidArgument(
                    f"{path} is changed with {_AUDITED[path]}, not UpdateProduct",
                    field="update_mask",
                )
            if path not in _UPDATABLE:
                raise InvalidArgument(
                    f"update_mask may name {', '.join(_UPDATABLE)}; not {path!r}",
                    field="update_mask",
                )
    else:
        paths = [name for name in _UPDATABLE if getattr(product, name)]
    chosen = {path: getattr(product, path) for path in paths}
    return domain.ProductChanges(**chosen)


class ProductApi(product_service_pb2_grpc.ProductServiceServicer):
    """Catalog reads for everyone, writes for admins (the access option on each RPC)."""

    def __init__(self, use_cases: Catalog) -> None:
        self._use_cases = use_cases

    async def ListCategories(
        self, request: pb.ListCategoriesRequest, context: ServicerContext
    ) -> pb.ListCategoriesResponse:
        page_size = request.page_size if request.HasField("page_size") else None
        found, token = await self._use_cases.list_categories(page_size, request.page_token)
        return pb.ListCategoriesResponse(
            categories=[category_message(c) for c in found], next_page_token=token
        )

    async def CreateCategory(
        self, request: pb.CreateCategoryRequest, context: ServicerContext
    ) -> pb.Category:
        category = await self._use_cases.create_category(
            request.name, request.slug, request.parent_id
        )
        return category_message(category)

    async def ListProducts(
        self, request: pb.ListProductsRequest, context: ServicerContext
    ) -> pb.ListProductsResponse:
        found, token = await self._use_cases.search(
            q=request.q,
            category_id=request.category_id,
            min_price=request.min_price if request.HasField("min_price") else None,
            max_price=request.max_price if request.HasField("max_price") else None,
            in_stock=request.in_stock if request.HasField("in_stock") else None,
            order_by=request.order_by,
            requested_size=request.page_size if request.HasField("page_size") else None,
            page_token=request.page_token,
        )
        return pb.ListProductsResponse(
            products=[product_message(p) for p in found], next_page_token=token
        )

    async def GetProduct(
        self, request: pb.GetProductRequest, context: ServicerContext
    ) -> pb.Product:
        return product_message(await self._use_cases.get_product(request.id))

    async def CreateProduct(
        self, request: pb.CreateProductRequest, context: ServicerContext
    ) -> pb.Product:
        product = await self._use_cases.create_product(
            sku=request.sku,
            name=request.name,
            description=request.description,
            category_id=request.category_id,
            price=_money_in(request.price, request.HasField("price")),
            stock=request.stock,
            low_stock_threshold=(
                request.low_stock_threshold if request.HasField("low_stock_threshold") else None
            ),
            actor=require_principal().subject,
        )
        return product_message(product)

    async def UpdateProduct(
        self, request: pb.UpdateProductRequest, context: ServicerContext
    ) -> pb.Product:
        product = await self._use_cases.update_product(
            request.id, product_changes(request), request.product.etag
        )
        return product_message(product)

    async def DeleteProduct(
        self, request: pb.DeleteProductRequest, context: ServicerContext
    ) -> Empty:
        await self._use_cases.archive_product(request.id, request.etag)
        return Empty()

    async def SetProductPrice(
        self, request: pb.SetProductPriceRequest, context: ServicerContext
    ) -> pb.Product:
        product = await self._use_cases.set_price(
            request.id,
            _money_in(request.price, request.HasField("price")),
            require_principal().subject,
        )
        return product_message(product)

    async def ListRecommendations(
        self, request: pb.ListRecommendationsRequest, context: ServicerContext
    ) -> pb.ListRecommendationsResponse:
        page_size = request.page_size if request.HasField("page_size") else None
        recommended = await self._use_cases.recommendations(request.id, page_size)
        return pb.ListRecommendationsResponse(
            products=[product_message(product) for product in recommended]
        )

    async def ListPriceHistory(
        self, request: pb.ListPriceHistoryRequest, context: ServicerContext
    ) -> pb.ListPriceHistoryResponse:
        page_size = request.page_size if request.HasField("page_size") else None
        changes, token = await self._use_cases.price_history(
            request.id, page_size, request.page_token
        )
        caller = current_principal()
        # The history is public; who runs the shop is not.
        show_who = caller is not None and caller.is_admin
        return pb.ListPriceHistoryResponse(
            price_changes=[
                pb.PriceChange(
                    price=money_message(change.price),
                    changed_by=change.changed_by if show_who else "",
                    change_time=timestamp(change.change_time),
                )
                for change in changes
            ],
            next_page_token=token,
        )

    async def AdjustStock(
        self, request: pb.AdjustStockRequest, context: ServicerContext
    ) -> pb.StockLevel:
        product = await self._use_cases.adjust_stock(
            request.id, request.delta, request.reason, require_principal().subject
        )
        return pb.StockLevel(available=product.available, reserved=product.reserved)


class InventoryApi(inventory_service_pb2_grpc.InventoryServiceServicer):
    """Stock reservations for checkout (service callers only)."""

    def __init__(self, use_cases: Catalog) -> None:
        self._use_cases = use_cases

    async def ReserveStock(
        self, request: inv.ReserveStockRequest, context: ServicerContext
    ) -> inv.Reservation:
        items = [(item.product_id, item.quantity) for item in request.items]
        return reservation_message(await self._use_cases.reserve(request.order_id, items))

    async def CommitReservation(
        self, request: inv.CommitReservationRequest, context: ServicerContext
    ) -> inv.Reservation:
        return reservation_message(await self._use_cases.commit(request.order_id))

    async def ReleaseReservation(
        self, request: inv.ReleaseReservationRequest, context: ServicerContext
    ) -> inv.Reservation:
        return reservation_message(await self._use_cases.release(request.order_id))

    async def ExtendReservation(
        self, request: inv.ExtendReservationRequest, context: ServicerContext
    ) -> inv.Reservation:
        until = request.expire_time.ToDatetime(tzinfo=UTC)
        return reservation_message(await self._use_cases.extend(request.order_id, until))
