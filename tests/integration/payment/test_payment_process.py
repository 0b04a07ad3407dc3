"""The real payment_svc process: SIGKILLed at each saga step and recovered; its events on Kafka.

product_svc and user_svc are stand-ins served by this test over real gRPC (the in-memory
inventory, and a user service that hands out the test key's JWKS and service tokens), so the
crash recovery of the real process is proven before issues 3 and 4 land; the end-to-end
version with every real service is tests/e2e/test_checkout_recovery.py.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import select

from common.db import Database
from common.grpc_server import Service, create_server
from common.tokens import ROLE_SERVICE, public_jwk
from localrun.broker import EmbeddedBroker, free_port
from microcommerce.common.v1 import money_pb2
from microcommerce.payment.v1 import order_service_pb2 as pb
from microcommerce.payment.v1 import order_service_pb2_grpc
from microcommerce.product.v1 import inventory_service_pb2 as inv
from microcommerce.product.v1 import inventory_service_pb2_grpc
from microcommerce.user.v1 import user_service_pb2, user_service_pb2_grpc
from payment_svc.domain import RequestedItem
from payment_svc.ports import InventoryError, OutOfStock, ReservationLost, UnknownProduct
from payment_svc.provider import sandbox_ledger
from payment_svc.saga import FAULT_POINTS
from tests.support.kafka_events import checkout_events
from tests.support.payment_fakes import FakeInventory
from tests.support.processes import FAST_KAFKA, Process, start_process, wait_for
from tests.support.tokens import SIGNER, customer_token

_Context = Any


class InventoryStandIn(inventory_service_pb2_grpc.InventoryServiceServicer):
    """product_svc's InventoryService contract over the in-memory inventory."""

    def __init__(self, inventory: FakeInventory) -> None:
        self.inventory = inventory

    async def ReserveStock(self, request: inv.ReserveStockRequest, context: _Context) -> Any:
        items = [RequestedItem(i.product_id, i.quantity) for i in request.items]
        try:
            lines = await self.inventory.reserve(request.order_id, items)
        except InventoryError as error:
            await context.abort(_code(error), str(error))
        return inv.Reservation(
            order_id=request.order_id,
            status=inv.RESERVATION_STATUS_ACTIVE,
            items=[
                inv.ReservedItem(
                    product_id=line.product_id,
                    sku=line.sku,
                    name=line.name,
                    quantity=line.quantity,
                    unit_price=money_pb2.Money(
                        amount=line.unit_price.amount, currency=line.unit_price.currency
                    ),
                )
                for line in lines
            ],
        )

    async def CommitReservation(
        self, request: inv.CommitReservationRequest, context: _Context
    ) -> Any:
        try:
            await self.inventory.commit(request.order_id)
        except InventoryError as error:
            await context.abort(_code(error), str(error))
        return inv.Reservation(order_id=request.order_id)

    async def ReleaseReservation(
        self, request: inv.ReleaseReservationRequest, context: _Context
    ) -> Any:
        await self.inventory.release(request.order_id)
        return inv.Reservation(order_id=request.order_id)

    async def ExtendReservation(
        self, request: inv.ExtendReservationRequest, context: _Context
    ) -> Any:
        try:
            await self.inventory.extend(request.order_id, request.expire_time.ToDatetime(UTC))
        except InventoryError as error:
            await context.abort(_code(error), str(error))
        return inv.Reservation(order_id=request.order_id)


def _code(error: InventoryError) -> grpc.StatusCode:
    if isinstance(error, OutOfStock | ReservationLost):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(error, UnknownProduct):
        return grpc.StatusCode.NOT_FOUND
    return grpc.StatusCode.UNAVAILABLE


class UsersStandIn(user_service_pb2_grpc.UserServiceServicer):
    """Just what every service needs from user_svc: the JWKS and service tokens."""

    async def GetJwks(self, request: Any, context: _Context) -> Any:
        return user_service_pb2.JsonWebKeySet(
            keys=[user_service_pb2.JsonWebKey(**public_jwk(SIGNER.public_key, kid=SIGNER.kid))]
        )

    async def IssueServiceToken(self, request: Any, context: _Context) -> Any:
        token = SIGNER.mint(f"service:{request.service}", [ROLE_SERVICE])
        return user_service_pb2.TokenPair(access_token=token, token_type="Bearer", expires_in=900)


@dataclass
class Rig:
    inventory: FakeInventory
    env: dict[str, str]
    data_dir: Path
    address: str
    payment: Process | None = None

    def start_payment(self, **extra: str) -> Process:
        self.stop_payment()
        self.payment = start_process(
            "payment_svc", {**self.env, **extra}, self.data_dir, f"payment-{uuid.uuid4().hex[:6]}"
        )
        return self.payment

    def stop_payment(self) -> None:
        if self.payment is None or self.payment.popen.poll() is not None:
            return
        try:
            self.payment.terminate(timeout=20)
        except subprocess.TimeoutExpired:  # a slow graceful stop must not leave it running
            self.payment.kill()

    async def ledger_operations(self, payment_id: str) -> list[str]:
        """Every provider call made for the payment, in the order it was made."""
        database = Database.from_url(f"sqlite+aiosqlite:///{self.data_dir / 'payment.db'}")
        try:
            async with database.session() as session:
                operations = await session.scalars(
                    select(sandbox_ledger.c.operation)
                    .where(sandbox_ledger.c.key.startswith(f"{payment_id}:"))
                    .order_by(sandbox_ledger.c.create_time)
                )
                return list(operations)
        finally:
            await database.dispose()

    async def ledger_captures(self) -> list[str]:
        database = Database.from_url(f"sqlite+aiosqlite:///{self.data_dir / 'payment.db'}")
        try:
            async with database.session() as session:
                keys = await session.scalars(
                    select(sandbox_ledger.c.key).where(
                        sandbox_ledger.c.operation == "capture", sandbox_ledger.c.approved == 1
                    )
                )
                return list(keys)
        finally:
            await database.dispose()


@pytest.fixture
async def rig(broker: EmbeddedBroker, tmp_path: Path) -> AsyncIterator[Rig]:
    inventory = FakeInventory()
    names = {
        "inventory": inv.DESCRIPTOR.services_by_name["InventoryService"].full_name,
        "users": user_service_pb2.DESCRIPTOR.services_by_name["UserService"].full_name,
    }
    product = await create_server(
        services=[
            Service(
                names["inventory"],
                InventoryStandIn(inventory),
                inventory_service_pb2_grpc.add_InventoryServiceServicer_to_server,
            )
        ],
        address="127.0.0.1:0",
    )
    users = await create_server(
        services=[
            Service(
                names["users"],
                UsersStandIn(),  # type: ignore[abstract]  # only what services use
                user_service_pb2_grpc.add_UserServiceServicer_to_server,
            )
        ],
        address="127.0.0.1:0",
    )
    await product.server.start()
    await users.server.start()
    port = free_port()
    env = {
        **FAST_KAFKA,
        "MC_ENVIRONMENT": "test",
        "MC_KAFKA_BOOTSTRAP": broker.bootstrap,
        "MC_DATA_DIR": str(tmp_path),
        "MC_PAYMENT_PORT": str(port),
        "MC_PRODUCT_ADDRESS": f"127.0.0.1:{product.port}",
        "MC_USER_ADDRESS": f"127.0.0.1:{users.port}",
        "MC_SERVICE_CREDENTIAL": "test-credential",
        "MC_PAYMENT_RECOVERY_GRACE_S": "0",
        "MC_PAYMENT_RECOVERY_INTERVAL_S": "0.3",
    }
    running = Rig(inventory, env, tmp_path, f"127.0.0.1:{port}")
    yield running
    running.stop_payment()
    await product.server.stop(None)
    await users.server.stop(None)


def checkout_request(product_id: str, number: str) -> pb.CreateOrderRequest:
    return pb.CreateOrderRequest(
        items=[pb.CreateOrderRequest.Item(product_id=product_id, quantity=1)],
        payment_method=pb.PaymentMethod(
            card=pb.CardDetails(
                number=number, exp_month=12, exp_year=2099, cvc="123", holder_name="Ada"
            )
        ),
    )


APPROVED = "4242424242424242"
DECLINED = "4000000000000002"
NO_CAPTURE = "4000000000000341"  # authorized, then the capture is refused

# A declined card never reaches the steps after the authorization; a refused capture is
# killed between the capture and its compensation (void, release, FAILED recorded).
CASES = [
    *((point, APPROVED) for point in FAULT_POINTS),
    *((point, DECLINED) for point in FAULT_POINTS[: FAULT_POINTS.index("authorized_remote") + 1]),
    ("payment_authorized", NO_CAPTURE),
    ("captured_remote", NO_CAPTURE),
]
# What a client's retry with the same key answers after a card's failed checkout.
REPLAYED_ERROR = {DECLINED: "PAYMENT_DECLINED", NO_CAPTURE: "CAPTURE_FAILED"}


@pytest.mark.parametrize(("point", "number"), CASES)
async def test_a_killed_payment_process_recovers_the_order_on_restart(
    rig: Rig, point: str, number: str
) -> None:
    rig.inventory.add_product("p-1", 3, 1500)
    user = f"user-{uuid.uuid4().hex[:6]}"
    metadata = (("authorization", f"Bearer {customer_token(user)}"), ("idempotency-key", "k"))
    crashing = rig.start_payment(MC_PAYMENT_FAULT_AT=point)

    async with grpc.aio.insecure_channel(rig.address) as channel:
        await channel.channel_ready()
        stub = order_service_pb2_grpc.OrderServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.CreateOrder(checkout_request("p-1", number), metadata=metadata, timeout=30)
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE  # the process died mid-call
    assert crashing.popen.wait(30) == -9
    assert "fault_injected" in crashing.log()

    rig.start_payment()
    async with grpc.aio.insecure_channel(rig.address) as channel:
        await channel.channel_ready()
        stub = order_service_pb2_grpc.OrderServiceStub(channel)

        async def settled() -> pb.Order | None:
            listed = await stub.ListOrders(pb.ListOrdersRequest(), metadata=metadata[:1])
            final = (pb.ORDER_STATUS_CONFIRMED, pb.ORDER_STATUS_FAILED)
            return listed.orders[0] if listed.orders and listed.orders[0].status in final else None

        order = await wait_for(settled, within=30, interval=0.2)
        replay = await _replay(stub, number, metadata)

    captures = [k for k in await rig.ledger_captures() if k.startswith(order.payment.id)]
    if number == APPROVED:
        assert order.status == pb.ORDER_STATUS_CONFIRMED
        assert (len(captures), rig.inventory.sold("p-1"), rig.inventory.available["p-1"]) == (
            1,
            1,
            2,
        )
        assert replay == order.id  # the client's retry with its key gets the same order
    else:
        assert order.status == pb.ORDER_STATUS_FAILED
        assert (captures, rig.inventory.available["p-1"]) == ([], 3)
        assert rig.inventory.status(order.id) == "RELEASED"
        assert replay == REPLAYED_ERROR[number]
    if number == NO_CAPTURE:
        assert order.payment.status == pb.PAYMENT_STATUS_VOIDED
        assert await rig.ledger_operations(order.payment.id) == ["authorize", "capture", "void"]


async def _replay(
    stub: order_service_pb2_grpc.OrderServiceAsyncStub, number: str, metadata: Any
) -> str:
    try:
        order = await stub.CreateOrder(checkout_request("p-1", number), metadata=metadata)
    except grpc.aio.AioRpcError as error:
        return error_reason(error)
    return str(order.id)


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a gRPC error's rich status ("" when it has none)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else []:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


async def test_a_refused_capture_is_aborted_voided_released_and_its_events_follow_in_order(
    rig: Rig, broker: EmbeddedBroker
) -> None:
    rig.inventory.add_product("p-1", 3, 1500)
    user = f"user-{uuid.uuid4().hex[:6]}"
    metadata = (("authorization", f"Bearer {customer_token(user)}"), ("idempotency-key", "k"))
    rig.start_payment()

    async with grpc.aio.insecure_channel(rig.address) as channel:
        await channel.channel_ready()
        stub = order_service_pb2_grpc.OrderServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.CreateOrder(checkout_request("p-1", NO_CAPTURE), metadata=metadata)
        [order] = (await stub.ListOrders(pb.ListOrdersRequest(), metadata=metadata[:1])).orders

    assert raised.value.code() is grpc.StatusCode.ABORTED
    assert error_reason(raised.value) == "CAPTURE_FAILED"
    assert (order.status, order.payment.status) == (
        pb.ORDER_STATUS_FAILED,
        pb.PAYMENT_STATUS_VOIDED,
    )
    assert (rig.inventory.status(order.id), rig.inventory.available["p-1"]) == ("RELEASED", 3)
    assert await rig.ledger_operations(order.payment.id) == ["authorize", "capture", "void"]
    assert await rig.ledger_captures() == []
    events = await checkout_events(broker.bootstrap, {order.id}, expected=4)
    # Each topic keeps its own order; the two topics are read interleaved.
    assert [e["type"] for e in events if ".order." in e["type"]] == [
        "microcommerce.order.placed",
        "microcommerce.order.failed",
    ]
    assert [e["type"] for e in events if ".payment." in e["type"]] == [
        "microcommerce.payment.authorized",
        "microcommerce.payment.voided",
    ]
    [failed] = [e for e in events if e["type"] == "microcommerce.order.failed"]
    assert failed["data"]["reason"] == "CAPTURE_FAILED"


async def test_checkouts_succeed_with_kafka_frozen_and_every_event_follows_in_order(
    rig: Rig, broker: EmbeddedBroker
) -> None:
    rig.inventory.add_product("p-1", 10, 1500)
    token = customer_token(f"user-{uuid.uuid4().hex[:6]}")
    rig.start_payment()
    async with grpc.aio.insecure_channel(rig.address) as channel:
        await channel.channel_ready()
        stub = order_service_pb2_grpc.OrderServiceStub(channel)
        broker.freeze()
        try:
            orders = [
                await stub.CreateOrder(
                    checkout_request("p-1", number),
                    metadata=(
                        ("authorization", f"Bearer {token}"),
                        ("idempotency-key", f"key-{number[-4:]}"),
                    ),
                    timeout=30,
                )
                for number in ("4242424242424242", "5555555555554444")
            ]
        finally:
            broker.thaw()

    assert [o.status for o in orders] == [pb.ORDER_STATUS_CONFIRMED] * 2
    events = await checkout_events(broker.bootstrap, {o.id for o in orders}, expected=8)
    for order in orders:
        mine = [e for e in events if e["subject"] == order.id]
        assert [e["type"] for e in mine if ".order." in e["type"]] == [
            "microcommerce.order.placed",
            "microcommerce.order.confirmed",
        ]
        assert [e["type"] for e in mine if ".payment." in e["type"]] == [
            "microcommerce.payment.authorized",
            "microcommerce.payment.captured",
        ]
        assert all(e["specversion"] == "1.0" for e in mine)
    assert rig.payment is not None
    for number in ("4242424242424242", "5555555555554444"):
        assert number not in json.dumps(events)
        assert number not in rig.payment.log()
        assert not any(number.encode() in p.read_bytes() for p in rig.data_dir.glob("payment.db*"))
