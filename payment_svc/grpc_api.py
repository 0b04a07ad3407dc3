"""The payment service's gRPC servicers: proto in, use case, proto out.

The card number and CVC are reduced to a token, brand and last4 here, before anything else
sees the request, and wiped from the request message.
"""

from __future__ import annotations

from common.access import require_principal
from common.errors import InvalidArgument
from common.grpc_types import ServicerContext
from common.proto_values import money_message, money_of, timestamp
from common.request_context import CLIENT_ADDRESS_METADATA_KEY
from microcommerce.payment.v1 import order_service_pb2 as pb
from microcommerce.payment.v1 import order_service_pb2_grpc
from payment_svc import domain, messages
from payment_svc.domain import (
    Caller,
    CardInput,
    Order,
    OrderStatus,
    Payment,
    RequestedItem,
)
from payment_svc.service import Payments

IDEMPOTENCY_KEY_METADATA = "idempotency-key"


def _caller() -> Caller:
    principal = require_principal()
    return Caller(principal.user_id, principal.is_admin)


def _metadata(context: ServicerContext, key: str) -> str:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value if isinstance(value, str) else value.decode()
    return ""


def _client_address(context: ServicerContext) -> str:
    """The shopper's address as the gateway saw it; "" when unknown (a direct gRPC caller)."""
    address = _metadata(context, CLIENT_ADDRESS_METADATA_KEY)
    return "" if address == "unknown" else address[:64]


def order_message(order: Order, *, admin: bool = False) -> pb.Order:
    """The order as the contract shows it; its fraud screening only to an administrator."""
    message = pb.Order(
        id=order.id,
        status=pb.OrderStatus.Value(f"ORDER_STATUS_{order.status.value}"),
        items=messages.order_items(order),
        create_time=timestamp(order.create_time),
        update_time=timestamp(order.update_time),
        user_id=order.user_id,
    )
    if order.total is not None:
        message.total.CopyFrom(money_message(order.total))
    payment = order.payment
    # Absent until checkout reaches the payment step (the order was priced).
    if payment is not None and order.total is not None:
        message.payment.CopyFrom(
            pb.PaymentSummary(
                id=payment.id,
                status=pb.PaymentStatus.Value(f"PAYMENT_STATUS_{payment.status.value}"),
                card=messages.card_summary(payment),
            )
        )
    if admin and order.screening is not None:
        message.screening.CopyFrom(messages.screening_message(order.screening))
    return message


def _order_bytes(order: Order) -> bytes:
    return order_message(order).SerializeToString()


def _admin_order_bytes(order: Order) -> bytes:
    return order_message(order, admin=True).SerializeToString()


def refund_message(refund: domain.Refund) -> pb.Refund:
    return pb.Refund(
        id=refund.id,
        amount=money_message(refund.amount),
        reason=refund.reason,
        create_time=timestamp(refund.create_time),
    )


def payment_message(payment: Payment) -> pb.Payment:
    message = pb.Payment(
        id=payment.id,
        order_id=payment.order_id,
        status=pb.PaymentStatus.Value(f"PAYMENT_STATUS_{payment.status.value}"),
        amount=money_message(payment.amount),
        card=messages.card_summary(payment),
        refunds=[
            refund_message(r) for r in payment.refunds if r.status is not domain.RefundStatus.FAILED
        ],
        create_time=timestamp(payment.create_time),
    )
    if payment.failure_reason is not None:
        message.failure_reason = pb.PaymentFailureReason.Value(
            f"PAYMENT_FAILURE_REASON_{payment.failure_reason.value}"
        )
    return message


def change_message(change: domain.OrderChange) -> pb.OrderChange:
    message = pb.OrderChange(
        id=change.id,
        # UNKNOWN (an event type newer than this replica) has no value of its own.
        kind=pb.OrderChangeKind.Value(f"ORDER_CHANGE_KIND_{change.kind.value}")
        if change.kind is not domain.ChangeKind.UNKNOWN
        else pb.ORDER_CHANGE_KIND_UNSPECIFIED,
        time=timestamp(change.time),
        actor=pb.ActorKind.Value(f"ACTOR_KIND_{change.actor.value}"),
        actor_id=change.actor_id,
        reason=change.reason,
        event_type=change.event_type,
    )
    if change.amount is not None:
        message.amount.CopyFrom(money_message(change.amount))
    return message


class OrderApi(order_service_pb2_grpc.OrderServiceServicer):
    """Checkout, order history, cancellation and refunds."""

    def __init__(self, use_cases: Payments) -> None:
        self._use_cases = use_cases

    async def CreateOrder(
        self, request: pb.CreateOrderRequest, context: ServicerContext
    ) -> pb.Order:
        caller = _caller()
        if not request.payment_method.HasField("card"):
            raise InvalidArgument("a card is required", field="payment_method.card")
        entered = request.payment_method.card
        card = self._use_cases.accept_card(
            CardInput(
                number=entered.number,
                exp_month=entered.exp_month,
                exp_year=entered.exp_year,
                cvc=entered.cvc,
                holder_name=entered.holder_name,
            )
        )
        # From here on nothing can leak the number: not a log of the request, not a trace.
        request.ClearField("payment_method")
        del entered
        items = [RequestedItem(item.product_id, item.quantity) for item in request.items]
        key = _metadata(context, IDEMPOTENCY_KEY_METADATA)
        # Kept to answer this caller's replays alike: a customer's copy has no screening.
        render = _admin_order_bytes if caller.is_admin else _order_bytes
        reply = await self._use_cases.checkout(
            caller,
            key,
            items,
            card,
            render,
            client_address=_client_address(context),
        )
        # The kept first answer, not the order as it is now: a replay repeats it byte for byte.
        return pb.Order.FromString(reply.body)

    async def ListOrders(
        self, request: pb.ListOrdersRequest, context: ServicerContext
    ) -> pb.ListOrdersResponse:
        page_size = request.page_size if request.HasField("page_size") else None
        caller = _caller()
        status = (
            OrderStatus(pb.OrderStatus.Name(request.status).removeprefix("ORDER_STATUS_"))
            if request.status != pb.ORDER_STATUS_UNSPECIFIED
            else None
        )
        found, token = await self._use_cases.list_orders(
            caller, request.user_id, page_size, request.page_token, status
        )
        return pb.ListOrdersResponse(
            orders=[order_message(order, admin=caller.is_admin) for order in found],
            next_page_token=token,
        )

    async def GetOrder(self, request: pb.GetOrderRequest, context: ServicerContext) -> pb.Order:
        caller = _caller()
        order = await self._use_cases.get_order(caller, request.id)
        return order_message(order, admin=caller.is_admin)

    async def ApproveOrder(
        self, request: pb.ApproveOrderRequest, context: ServicerContext
    ) -> pb.Order:
        caller = _caller()
        return order_message(await self._use_cases.approve(caller, request.id), admin=True)

    async def RejectOrder(
        self, request: pb.RejectOrderRequest, context: ServicerContext
    ) -> pb.Order:
        caller = _caller()
        return order_message(await self._use_cases.reject(caller, request.id), admin=True)

    async def ListOrderHistory(
        self, request: pb.ListOrderHistoryRequest, context: ServicerContext
    ) -> pb.ListOrderHistoryResponse:
        page_size = request.page_size if request.HasField("page_size") else None
        changes, token = await self._use_cases.order_history(
            _caller(), request.id, page_size, request.page_token
        )
        return pb.ListOrderHistoryResponse(
            changes=[change_message(change) for change in changes], next_page_token=token
        )

    async def CancelOrder(
        self, request: pb.CancelOrderRequest, context: ServicerContext
    ) -> pb.Order:
        caller = _caller()
        return order_message(
            await self._use_cases.cancel(caller, request.id), admin=caller.is_admin
        )

    async def CreateRefund(
        self, request: pb.CreateRefundRequest, context: ServicerContext
    ) -> pb.Refund:
        caller = _caller()
        amount = money_of(request.amount, field="amount") if request.HasField("amount") else None
        refund = await self._use_cases.refund(caller, request.id, amount, request.reason)
        return refund_message(refund)


class PaymentApi(order_service_pb2_grpc.PaymentServiceServicer):
    """Read access to payments."""

    def __init__(self, use_cases: Payments) -> None:
        self._use_cases = use_cases

    async def GetPayment(
        self, request: pb.GetPaymentRequest, context: ServicerContext
    ) -> pb.Payment:
        return payment_message(await self._use_cases.get_payment(_caller(), request.id))
