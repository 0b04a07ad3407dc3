"""The three services as real gRPC servers inside the test's event loop, trusting the test key.

Each service gets its own SQLite file (or the given database URL), its migrations and its real
wiring; only the token keys differ from a deployment (``tests.support.tokens.KEYS`` everywhere,
so tests mint tokens for any caller). Background tasks and the health stream are not started:
tests that need them run real processes (``tests.support.processes``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from common.access import AccessInterceptor
from common.db import Database
from common.grpc_server import create_server
from common.migrations import upgrade_to_head
from common.outbox import Outbox
from common.service_runner import Runtime, ServiceSpec, close_all
from common.settings import SERVICE_NAMES
from common.tokens import KeySource, TokenVerifier
from common.user_client import UserServiceClient
from tests.support.tokens import KEYS


def _spec_and_settings(service: str) -> tuple[ServiceSpec[Any], type[Any]]:
    if service == "payment":
        from payment_svc.main import SPEC as PAYMENT
        from payment_svc.settings import PaymentSettings

        return PAYMENT, PaymentSettings
    if service == "product":
        from product_svc.main import SPEC as PRODUCT
        from product_svc.settings import ProductSettings

        return PRODUCT, ProductSettings
    from user_svc.main import SPEC as USER
    from user_svc.settings import UserSettings

    return USER, UserSettings


@asynccontextmanager
async def in_process_services(
    data_dir: Path,
    *,
    database_urls: Mapping[str, str] | None = None,
    key_source: KeySource = KEYS,
    settings: Mapping[str, Any] | None = None,
) -> AsyncIterator[dict[str, str]]:
    """Serve the three services on free ports; yields service name → ``host:port``."""
    addresses: dict[str, str] = {}
    async with AsyncExitStack() as stack:
        # user first: the others reach it for service tokens.
        for service in ("user", *(s for s in SERVICE_NAMES if s != "user")):
            spec, settings_class = _spec_and_settings(service)
            service_settings = settings_class(
                environment="test",
                data_dir=data_dir,
                port=0,
                service_credential="test-credential",
                **{f"{name}_address": address for name, address in addresses.items()},
                **(settings or {}),
            )
            url = (database_urls or {}).get(
                service
            ) or f"sqlite+aiosqlite:///{data_dir}/{service}.db"
            database = Database.from_url(url)
            stack.push_async_callback(database.dispose)
            await upgrade_to_head(database.engine, spec.migrations)
            users = UserServiceClient(service_settings.user_address)
            stack.push_async_callback(users.close)
            wiring = spec.wire(Runtime(service, service_settings, database, Outbox(service), users))
            stack.push_async_callback(close_all, wiring.cleanup)
            running = await create_server(
                services=wiring.services,
                address="127.0.0.1:0",
                interceptors=[AccessInterceptor(TokenVerifier(key_source))],
            )
            await running.server.start()
            stack.push_async_callback(running.server.stop, None)
            addresses[service] = f"127.0.0.1:{running.port}"
        yield addresses
