"""The gRPC adapter of the saga's Inventory port: product_svc's InventoryService.

Each call carries this service's identity token (``ServiceTokens``) and a deadline; product_svc's
status codes become the port's exceptions, so the saga never looks at gRPC codes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

import grpc

from common.errors import Unavailable
from common.grpc_client import LazyStub
from common.money import Money
from common.user_client import ServiceTokens
from microcommerce.product.v1 import (
    inventory_service_pb2,
    inventory_service_pb2_grpc,
    product_service_pb2,
    product_service_pb2_grpc,
)
from payment_svc.domain import ProductFacts, RequestedItem
from payment_svc.ports import (
    InventoryError,
    InventoryUnavailable,
    OutOfStock,
    ReservationLost,
    ReservationRefused,
    ReservedLine,
    UnknownProduct,
)

# No answer within the deadline, or an answer that says nothing about the outcome: the call
# may or may not have happened, and the saga treats it as "retry or compensate".
_UNKNOWN_OUTCOME = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)


class GrpcInventory:
    """product_svc's InventoryService behind the saga's ``Inventory`` port."""

    def __init__(self, address: str, tokens: ServiceTokens, *, deadline_s: float = 5.0) -> None:
        self._address = address
        self._tokens = tokens
        self._deadline_s = deadline_s
        self._stub: LazyStub[inventory_service_pb2_grpc.InventoryServiceAsyncStub] = LazyStub(
            address, inventory_service_pb2_grpc.InventoryServiceStub
        )
        self._catalog: LazyStub[product_service_pb2_grpc.ProductServiceAsyncStub] = LazyStub(
            address, product_service_pb2_grpc.ProductServiceStub
        )

    async def reserve(self, order_id: str, items: Sequence[RequestedItem]) -> list[ReservedLine]:
        request = inventory_service_pb2.ReserveStockRequest(
            order_id=order_id,
            items=[
                inventory_service_pb2.ReserveStockRequest.Item(
                    product_id=item.product_id, quantity=item.quantity
                )
                for item in items
            ],
        )
        try:
            reservation = await self._stub().ReserveStock(
                request, metadata=await self._metadata(), timeout=self._deadline_s
            )
        except grpc.aio.AioRpcError as error:
            raise _reserve_error(error) from error
        return [
            ReservedLine(
                product_id=line.product_id,
                sku=line.sku,
                name=line.name,
                quantity=line.quantity,
                unit_price=Money(line.unit_price.amount, line.unit_price.currency),
            )
            for line in reservation.items
        ]

    async def commit(self, order_id: str) -> None:
        request = inventory_service_pb2.CommitReservationRequest(order_id=order_id)
        try:
            await self._stub().CommitReservation(
                request, metadata=await self._metadata(), timeout=self._deadline_s
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                raise ReservationLost(error.details() or "") from error
            raise _generic_error(error) from error

    async def extend(self, order_id: str, until: datetime) -> None:
        request = inventory_service_pb2.ExtendReservationRequest(order_id=order_id)
        request.expire_time.FromDatetime(until)
        try:
            await self._stub().ExtendReservation(
                request, metadata=await self._metadata(), timeout=self._deadline_s
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                raise ReservationLost(error.details() or "") from error
            raise _generic_error(error) from error

    async def release(self, order_id: str) -> None:
        request = inventory_service_pb2.ReleaseReservationRequest(order_id=order_id)
        try:
            await self._stub().ReleaseReservation(
                request, metadata=await self._metadata(), timeout=self._deadline_s
            )
        except grpc.aio.AioRpcError as error:
            raise _generic_error(error) from error

    async def describe(self, product_ids: Sequence[str]) -> list[ProductFacts]:
        """Each product as the catalog has it now (GetProduct, public); one that cannot be read
        is left out: the facts only decorate a failed order, they decide nothing."""

        async def one(product_id: str) -> ProductFacts | None:
            try:
                product = await self._catalog().GetProduct(
                    product_service_pb2.GetProductRequest(id=product_id), timeout=self._deadline_s
                )
            except grpc.aio.AioRpcError:
                return None
            price = product.price if product.HasField("price") else None
            return ProductFacts(
                product_id=product_id,
                sku=product.sku,
                name=product.name,
                unit_price=Money(price.amount, price.currency)
                if price and price.currency
                else None,
                available=product.stock.available if product.HasField("stock") else None,
            )

        found = await asyncio.gather(
            *(one(product_id) for product_id in dict.fromkeys(product_ids))
        )
        return [facts for facts in found if facts is not None]

    async def _metadata(self) -> tuple[tuple[str, str], ...]:
        try:
            return await self._tokens.metadata()
        except Unavailable as error:
            raise InventoryUnavailable(error.message) from error

    async def close(self) -> None:
        await self._stub.close()
        await self._catalog.close()


def _reserve_error(error: grpc.aio.AioRpcError) -> InventoryError:
    code = error.code()
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return OutOfStock(error.details() or "")
    if code is grpc.StatusCode.NOT_FOUND:
        return UnknownProduct(error.details() or "")
    return _generic_error(error)


def _generic_error(error: grpc.aio.AioRpcError) -> InventoryError:
    if error.code() in _UNKNOWN_OUTCOME:
        return InventoryUnavailable(f"{error.code().name}: {error.details()}")
    return ReservationRefused(f"{error.code().name}: {error.details()}")
