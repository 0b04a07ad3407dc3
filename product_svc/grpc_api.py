"""The product service's gRPC servicers: proto in, use case, proto out."""

from __future__ import annotations

from microcommerce.product.v1 import inventory_service_pb2_grpc, product_service_pb2_grpc
from product_svc.service import Catalog


class ProductApi(product_service_pb2_grpc.ProductServiceServicer):
    """Catalog reads for everyone, writes for admins.

    RPCs not overridden here answer UNIMPLEMENTED (501 through the gateway) until their issue
    lands: the generated base raises NotImplementedError, which the boundary interceptor maps.
    """

    def __init__(self, use_cases: Catalog) -> None:
        self._use_cases = use_cases


class InventoryApi(inventory_service_pb2_grpc.InventoryServiceServicer):
    """Stock reservations for checkout (service callers only).

    RPCs not overridden here answer UNIMPLEMENTED (501 through the gateway) until their issue
    lands: the generated base raises NotImplementedError, which the boundary interceptor maps.
    """

    def __init__(self, use_cases: Catalog) -> None:
        self._use_cases = use_cases
