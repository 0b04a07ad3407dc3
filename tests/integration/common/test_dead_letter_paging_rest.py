"""Dead-letter page tokens replayed through a real gateway in front of each consuming service.

Both services serve the shared ``ListDeadLetters`` under their own service name; a token is
bound to the ``status`` filter, so one issued for every status and replayed for PENDING only
is a 400 naming ``page_token`` (not a page that silently mixes both listings).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from common.access import AccessInterceptor
from common.consumer import DeadLetterAdmin
from common.db import Database
from common.dead_letter_api import dead_letter_service
from common.dead_letters import ConsumedRecord, DeadLetterStore
from common.grpc_server import create_server
from common.migrations import script_location_of, upgrade_to_head
from common.pagination import PageTokens
from common.tokens import TokenVerifier
from gateway.app import create_app
from gateway.settings import GatewaySettings
from microcommerce.payment.v1 import dead_letter_service_pb2 as payment_pb2
from microcommerce.payment.v1 import dead_letter_service_pb2_grpc as payment_grpc
from microcommerce.product.v1 import dead_letter_service_pb2 as product_pb2
from microcommerce.product.v1 import dead_letter_service_pb2_grpc as product_grpc
from tests.support.gateway_testing import Client
from tests.support.page_token_replay import assert_refused_on_page_token, replays_page_token
from tests.support.tokens import KEYS, admin_token, bearer

SERVICES: dict[str, tuple[ModuleType, ModuleType]] = {
    "payment": (payment_pb2, payment_grpc),
    "product": (product_pb2, product_grpc),
}


@pytest.fixture(params=sorted(SERVICES))
async def dead_letters(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, Client]]:
    """A service's dead-letter RPCs (SQLite, three dead letters) behind a real gateway."""
    service: str = request.param
    descriptors, stubs = SERVICES[service]
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'letters.db'}")
    await upgrade_to_head(database.engine, script_location_of(service))
    store = DeadLetterStore(database, service)
    for offset in range(3):
        record = ConsumedRecord("order-events", 0, offset, b"key", b"{}", {})
        await store.add(
            "probe", record, event_id=uuid.uuid4().hex, event_type="x", error="boom", attempts=3
        )
    admin = DeadLetterAdmin(store, [], PageTokens(f"{service}-paging-test-key-0123".encode()))
    served = dead_letter_service(descriptors, stubs, admin)
    running = await create_server(
        services=[served],
        address="127.0.0.1:0",
        interceptors=[AccessInterceptor(TokenVerifier(KEYS))],
    )
    await running.server.start()
    (descriptor,) = descriptors.DESCRIPTOR.services_by_name.values()
    app = create_app(
        GatewaySettings(environment="test", rate_limit_enabled=False),
        services=[descriptor],
        upstream_addresses={descriptor.full_name: f"127.0.0.1:{running.port}"},
        key_source=KEYS,
    )
    client: Client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    yield service, client
    await client.close()
    await running.server.stop(None)
    await database.dispose()


@replays_page_token("microcommerce.payment.v1.PaymentDeadLetterService", "ListDeadLetters")
@replays_page_token("microcommerce.product.v1.ProductDeadLetterService", "ListDeadLetters")
async def test_a_dead_letters_token_replayed_with_another_status_is_a_400_naming_page_token(
    dead_letters: tuple[str, Client],
) -> None:
    service, client = dead_letters
    path = f"/api/v1/{service}/dead-letters"
    admin = bearer(admin_token())

    async def get(**params: str) -> tuple[int, Any]:
        response = await client.get(path, params=params, headers=admin)
        return response.status, await response.json()

    status, first = await get(page_size="1")
    assert status == 200, first
    assert first["next_page_token"]
    status, same = await get(page_size="1", page_token=first["next_page_token"])
    assert status == 200, same
    assert same["dead_letters"][0]["id"] != first["dead_letters"][0]["id"]

    status, problem = await get(
        page_size="1", status="DEAD_LETTER_STATUS_PENDING", page_token=first["next_page_token"]
    )

    assert_refused_on_page_token(status, problem)
