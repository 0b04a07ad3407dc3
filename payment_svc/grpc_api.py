"""The payment service's gRPC servicers: proto in, use case, proto out."""

from __future__ import annotations

from microcommerce.payment.v1 import order_service_pb2_grpc
from payment_svc.service import Payments


class OrderApi(order_service_pb2_grpc.OrderServiceServicer):
    """Checkout, order history, cancellation and refunds.

    RPCs not overridden here answer UNIMPLEMENTED (501 through the gateway) until their issue
    lands: the generated base raises NotImplementedError, which the boundary interceptor maps.
    """

    def __init__(self, use_cases: Payments) -> None:
        self._use_cases = use_cases


class PaymentApi(order_service_pb2_grpc.PaymentServiceServicer):
    """Read access to payments.

    RPCs not overridden here answer UNIMPLEMENTED (501 through the gateway) until their issue
    lands: the generated base raises NotImplementedError, which the boundary interceptor maps.
    """

    def __init__(self, use_cases: Payments) -> None:
        self._use_cases = use_cases
