"""An order's history page token replayed for another order, through the real gateway.

The ListOrders replay cases live with the other order routes (test_payment_rest.py); this
covers the audit trail: a token is bound to the order whose trail it pages, so replayed on
another order (even one of the same customer) it is a 400 naming ``page_token``, never a page
of the other order's trail that starts at a position taken from the first.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

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
from payment_svc.service import PaymentPolicy, Payments
from payment_svc.store import PaymentStore
from tests.integration.payment.test_payment_rest import body, place, stocked
from tests.support.gateway_testing import Client
from tests.support.page_token_replay import assert_refused_on_page_token, replays_page_token
from tests.support.payment_fakes import FakeInventory
from tests.support.tokens import KEYS, bearer, customer_token

ORDER_SERVICE = order_service_pb2.DESCRIPTOR.services_by_name["OrderService"]


@pytest.fixture
async def orders(tmp_path: Path) -> AsyncIterator[tuple[Client, FakeInventory]]:
    """The order routes (SQLite, in-memory inventory, sandbox provider) behind a gateway."""
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'payment.db'}")
    await upgrade_to_head(database.engine, script_location_of("payment"))
    inventory = FakeInventory()
    store = PaymentStore(database, Outbox("payment"))
    provider = ResilientProvider(SandboxProvider(database), backoff_s=0.001)
    saga = CheckoutSaga(store, inventory, provider, inventory_backoff_s=0.001)
    use_cases = Payments(store, saga, provider, policy=PaymentPolicy(replay_poll_s=0.01))
    running = await create_server(
        services=[
            Service(
                ORDER_SERVICE.full_name,
                grpc_api.OrderApi(use_cases),
                order_service_pb2_grpc.add_OrderServiceServicer_to_server,
            )
        ],
        address="127.0.0.1:0",
        interceptors=[AccessInterceptor(TokenVerifier(KEYS))],
    )
    await running.server.start()
    app = create_app(
        GatewaySettings(environment="test", rate_limit_enabled=False),
        services=[ORDER_SERVICE],
        upstream_addresses={ORDER_SERVICE.full_name: f"127.0.0.1:{running.port}"},
        key_source=KEYS,
    )
    client: Client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    yield client, inventory
    await client.close()
    await running.server.stop(None)
    await database.dispose()


@replays_page_token("microcommerce.payment.v1.OrderService", "ListOrderHistory")
async def test_an_order_history_token_replayed_for_another_order_is_a_400_naming_page_token(
    orders: tuple[Client, FakeInventory],
) -> None:
    client, inventory = orders
    user = f"user-{uuid.uuid4().hex[:6]}"
    mine = bearer(customer_token(user))
    item = stocked(inventory, stock=5)
    placed: list[dict[str, Any]] = []
    for _ in range(2):
        status, order = await place(client, body(item), user=user)
        assert status == 201, order
        placed.append(order)
    first_order, second_order = (order["id"] for order in placed)

    async def history(order_id: str, **params: str) -> tuple[int, Any]:
        response = await client.get(
            f"/api/v1/orders/{order_id}/history", params=params, headers=mine
        )
        return response.status, await response.json()

    status, first = await history(first_order, page_size="1")
    assert status == 200, first
    assert first["next_page_token"]
    status, same = await history(first_order, page_token=first["next_page_token"])
    assert status == 200, same

    status, problem = await history(second_order, page_token=first["next_page_token"])

    assert_refused_on_page_token(status, problem)
