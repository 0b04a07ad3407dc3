"""The sales routes through the real gateway and gRPC server: transcoded, admin only, checked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web import Application, Request

from common.access import AccessInterceptor
from common.consumer import EventConsumers
from common.db import Database
from common.grpc_server import Service, create_server
from common.tokens import TokenVerifier
from gateway.app import create_app
from gateway.settings import GatewaySettings
from microcommerce.payment.v1 import sales_analytics_service_pb2, sales_analytics_service_pb2_grpc
from payment_svc.analytics.grpc_api import SalesAnalyticsApi
from payment_svc.analytics.service import SalesAnalytics
from payment_svc.domain import RequestedItem
from payment_svc.service import Payments
from tests.integration.payment.test_payment_checkout import checkout, new_user
from tests.integration.payment.test_sales_analytics import deliver, published
from tests.support.payment_fakes import FakeInventory
from tests.support.tokens import KEYS, admin_token, bearer, customer_token

Client = TestClient[Request, Application]


@pytest_asyncio.fixture
async def client(analytics: SalesAnalytics) -> AsyncIterator[Client]:
    service = sales_analytics_service_pb2.DESCRIPTOR.services_by_name["SalesAnalyticsService"]
    running = await create_server(
        services=[
            Service(
                service.full_name,
                SalesAnalyticsApi(analytics),
                sales_analytics_service_pb2_grpc.add_SalesAnalyticsServiceServicer_to_server,
            )
        ],
        address="127.0.0.1:0",
        interceptors=[AccessInterceptor(TokenVerifier(KEYS))],
    )
    await running.server.start()
    settings = GatewaySettings.model_validate(
        {"environment": "test", "payment_address": f"127.0.0.1:{running.port}"}
    )
    test_client = TestClient(TestServer(create_app(settings, key_source=KEYS), host="127.0.0.1"))
    await test_client.start_server()
    yield test_client
    await test_client.close()
    await running.server.stop(None)


def _range(days: int = 1) -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "start_time": (now - timedelta(days=days)).isoformat().replace("+00:00", "Z"),
        "end_time": (now + timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
    }


async def get(client: Client, path: str, params: dict[str, str], token: str) -> tuple[int, Any]:
    response = await client.get(path, params=params, headers=bearer(token))
    return response.status, await response.json()


async def test_an_admin_reads_sales_and_top_products_with_their_as_of(
    client: Client,
    payments: Payments,
    inventory: FakeInventory,
    payment_db: Database,
    consumers: EventConsumers,
) -> None:
    inventory.add_product("p-rest-mug", 10, 1250)
    order = await checkout(payments, new_user(), [RequestedItem("p-rest-mug", 2)])
    await deliver(consumers, await published(payment_db, [order.id]))

    status, sales = await get(
        client,
        "/api/v1/payment/analytics/sales",
        {**_range(), "granularity": "GRANULARITY_DAY"},
        admin_token(),
    )
    assert status == 200, sales
    assert len(sales["periods"]) in (2, 3)  # yesterday, today (and tomorrow near midnight)
    assert sum(int(p.get("orders_confirmed", 0)) for p in sales["periods"]) == 1
    revenue = [m for p in sales["periods"] for m in p.get("revenue", [])]
    assert revenue == [{"amount": 2500, "currency": "USD"}]
    assert sales["as_of"].startswith(str(datetime.now(UTC).year))

    status, top = await get(
        client, "/api/v1/payment/analytics/top-products", {**_range(), "limit": "5"}, admin_token()
    )
    assert status == 200, top
    assert top["products"] == [
        {
            "product_id": "p-rest-mug",
            "units": 2,
            "revenue": [{"amount": 2500, "currency": "USD"}],
        }
    ]
    assert top["as_of"] == sales["as_of"]


async def test_customers_are_refused_and_bad_ranges_answered_400(client: Client) -> None:
    day = {**_range(), "granularity": "GRANULARITY_DAY"}
    status, _ = await get(client, "/api/v1/payment/analytics/sales", day, customer_token())
    assert status == 403

    backwards = {"start_time": day["end_time"], "end_time": day["start_time"]}
    status, problem = await get(
        client,
        "/api/v1/payment/analytics/sales",
        {**backwards, "granularity": "GRANULARITY_HOUR"},
        admin_token(),
    )
    assert status == 400, problem
    status, problem = await get(client, "/api/v1/payment/analytics/sales", _range(), admin_token())
    assert status == 400, problem  # no granularity
    status, problem = await get(
        client,
        "/api/v1/payment/analytics/sales",
        {**_range(days=40), "granularity": "GRANULARITY_HOUR"},
        admin_token(),
    )
    assert status == 400, problem  # more than 744 hours
    status, problem = await get(
        client,
        "/api/v1/payment/analytics/top-products",
        {**_range(), "limit": "101"},
        admin_token(),
    )
    assert status == 400, problem
