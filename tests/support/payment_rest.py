"""The payment service behind the real gateway, for REST tests: everything real but product_svc.

A migrated SQLite database, the sandbox provider, the checkout saga on an in-memory inventory,
the Order and Payment gRPC services with the access interceptor, and a gateway in front.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web import Application, Request

from common.access import AccessInterceptor
from common.db import Database
from common.grpc_server import Service, create_server
from common.migrations import script_location_of, upgrade_to_head
from common.outbox import Outbox
from common.tokens import TokenVerifier
from gateway.app import create_app
from gateway.settings import GatewaySettings
from microcommerce.payment.v1 import order_service_pb2, order_service_pb2_grpc
from payment_svc import grpc_api
from payment_svc.provider import ResilientProvider, SandboxProvider
from payment_svc.saga import CheckoutSaga
from payment_svc.screening import ScreeningPolicy
from payment_svc.service import PaymentPolicy, Payments
from payment_svc.store import PaymentStore
from tests.support.payment_fakes import FakeInventory
from tests.support.tokens import KEYS

Client = TestClient[Request, Application]


@dataclass(frozen=True)
class PaymentRest:
    client: Client
    inventory: FakeInventory
    database: Database


@asynccontextmanager
async def payment_rest(
    folder: Path, *, screening: ScreeningPolicy | None = None, card_key: bytes | None = None
) -> AsyncIterator[PaymentRest]:
    """The stack on a database in ``folder``; ``screening`` turns fraud screening on."""
    database = Database.from_url(f"sqlite+aiosqlite:///{folder / 'payment.db'}")
    await upgrade_to_head(database.engine, script_location_of("payment"))
    inventory = FakeInventory()
    store = PaymentStore(database, Outbox("payment"))
    provider = ResilientProvider(SandboxProvider(database), backoff_s=0.001)
    saga = CheckoutSaga(store, inventory, provider, inventory_backoff_s=0.001, screening=screening)
    use_cases = Payments(
        store, saga, provider, policy=PaymentPolicy(replay_poll_s=0.01), card_key=card_key
    )
    names = order_service_pb2.DESCRIPTOR.services_by_name
    running = await create_server(
        services=[
            Service(
                names["OrderService"].full_name,
                grpc_api.OrderApi(use_cases),
                order_service_pb2_grpc.add_OrderServiceServicer_to_server,
            ),
            Service(
                names["PaymentService"].full_name,
                grpc_api.PaymentApi(use_cases),
                order_service_pb2_grpc.add_PaymentServiceServicer_to_server,
            ),
        ],
        address="127.0.0.1:0",
        interceptors=[AccessInterceptor(TokenVerifier(KEYS))],
    )
    await running.server.start()
    settings = GatewaySettings.model_validate(
        {"environment": "test", "payment_address": f"127.0.0.1:{running.port}"}
    )
    client = TestClient(TestServer(create_app(settings, key_source=KEYS), host="127.0.0.1"))
    await client.start_server()
    try:
        yield PaymentRest(client, inventory, database)
    finally:
        await client.close()
        await running.server.stop(None)
        await database.dispose()
