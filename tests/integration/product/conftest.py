"""A real product service for the tests: migrated database (SQLite and PostgreSQL), gRPC server."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer

from common.access import AccessInterceptor
from common.consumer import EventConsumers, RetryPolicy
from common.db import Database
from common.dead_letters import DeadLetterStore
from common.grpc_server import Service, create_server, stop_gracefully
from common.migrations import script_location_of, upgrade_to_head
from common.outbox import Outbox
from common.pagination import PageTokens
from common.tokens import TokenVerifier
from gateway.app import create_app
from gateway.settings import GatewaySettings
from localrun.broker import EmbeddedBroker
from microcommerce.product.v1 import (
    inventory_service_pb2,
    inventory_service_pb2_grpc,
    product_service_pb2,
    product_service_pb2_grpc,
)
from microcommerce.product.v1 import product_service_pb2 as pb
from product_svc import events
from product_svc.grpc_api import InventoryApi, ProductApi
from product_svc.service import Catalog
from product_svc.store import CatalogStore
from tests.support.consumer_probe import start_consumers
from tests.support.gateway_testing import Client
from tests.support.tokens import KEYS, admin_token, service_token


@pytest.fixture
async def product_db(db_url: str) -> AsyncIterator[Database]:
    await upgrade_to_head(db_url, script_location_of("product"))
    database = Database.from_url(db_url)
    yield database
    await database.dispose()


@pytest.fixture
def outbox() -> Outbox:
    return Outbox("product")


@pytest.fixture
def catalog(product_db: Database, outbox: Outbox) -> Catalog:
    return Catalog(
        CatalogStore(product_db, outbox),
        PageTokens(secrets.token_bytes(32)),
        reservation_ttl_s=900,
        default_low_stock_threshold=5,
    )


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    # Its own: the consumer group reads order-events from the start.
    broker = EmbeddedBroker.start()
    yield broker
    broker.stop()


@pytest.fixture
async def consuming(
    catalog: Catalog, product_db: Database, own_broker: EmbeddedBroker
) -> AsyncIterator[EventConsumers]:
    """product_svc's own event consumers on a broker of their own, in a fresh consumer group."""
    consumers = EventConsumers.build(
        DeadLetterStore(product_db, "product"),
        events.subscriptions(catalog),
        RetryPolicy(attempts=2, first_delay_s=0.05),
        PageTokens(secrets.token_bytes(32)),
    )
    stream = start_consumers(consumers, own_broker.bootstrap, f"product-{uuid.uuid4().hex}")
    yield consumers
    await stream.stop()


@dataclass
class Clients:
    """Stubs on one channel, and the metadata of each kind of caller."""

    products: product_service_pb2_grpc.ProductServiceAsyncStub
    inventory: inventory_service_pb2_grpc.InventoryServiceAsyncStub
    admin: tuple[tuple[str, str], ...]
    service: tuple[tuple[str, str], ...]

    async def category(self) -> pb.Category:
        """A fresh category, so a test's listings see only its own products."""
        slug = f"cat-{uuid.uuid4().hex[:12]}"
        return await self.products.CreateCategory(
            pb.CreateCategoryRequest(name=f"Category {slug}", slug=slug), metadata=self.admin
        )

    async def product(
        self, category_id: str, *, stock: int = 10, amount: int = 1000, **fields: object
    ) -> pb.Product:
        request = pb.CreateProductRequest(
            sku=f"SKU-{uuid.uuid4().hex[:12]}",
            name="Plain widget",
            description="A widget.",
            category_id=category_id,
            stock=stock,
        )
        request.price.amount = amount
        request.price.currency = "USD"
        for name, value in fields.items():
            setattr(request, name, value)
        return await self.products.CreateProduct(request, metadata=self.admin)


@pytest.fixture
async def product_address(catalog: Catalog) -> AsyncIterator[str]:
    """Where a real product gRPC server (with the access interceptor) listens."""
    server = await create_server(
        services=[
            Service(
                product_service_pb2.DESCRIPTOR.services_by_name["ProductService"].full_name,
                ProductApi(catalog),
                product_service_pb2_grpc.add_ProductServiceServicer_to_server,
            ),
            Service(
                inventory_service_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name,
                InventoryApi(catalog),
                inventory_service_pb2_grpc.add_InventoryServiceServicer_to_server,
            ),
        ],
        address="127.0.0.1:0",
        interceptors=[AccessInterceptor(TokenVerifier(KEYS))],
    )
    await server.server.start()
    yield f"127.0.0.1:{server.port}"
    await stop_gracefully(server.server, server.health, 0)


@pytest.fixture
async def clients(product_address: str) -> AsyncIterator[Clients]:
    async with grpc.aio.insecure_channel(product_address) as channel:
        yield Clients(
            products=product_service_pb2_grpc.ProductServiceStub(channel),
            inventory=inventory_service_pb2_grpc.InventoryServiceStub(channel),
            admin=(("authorization", f"Bearer {admin_token()}"),),
            service=(("authorization", f"Bearer {service_token()}"),),
        )


PRODUCT_SERVICE = product_service_pb2.DESCRIPTOR.services_by_name["ProductService"]


@pytest.fixture
async def rest(product_address: str) -> AsyncIterator[Client]:
    """A real gateway (trusting the test key) in front of the product service."""
    app = create_app(
        GatewaySettings(environment="test", rate_limit_enabled=False),
        services=[PRODUCT_SERVICE],
        upstream_addresses={PRODUCT_SERVICE.full_name: product_address},
        key_source=KEYS,
    )
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    yield client
    await client.close()
