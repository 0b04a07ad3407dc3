"""A real user_svc gRPC server (in process, port 0) on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from common.access import AccessInterceptor
from common.db import Database
from common.grpc_server import create_server, stop_gracefully
from common.migrations import upgrade_to_head
from common.outbox import Outbox
from common.tokens import TokenVerifier
from microcommerce.user.v1 import user_service_pb2_grpc
from user_svc.keys import KeyRing
from user_svc.main import SPEC, accounts, key_ring, user_service
from user_svc.service import Accounts
from user_svc.settings import UserSettings
from user_svc.store import AccountStore

SERVICE_CREDENTIAL = "test-service-credential"


def user_settings(data_dir: Path, database_url: str, **overrides: Any) -> UserSettings:
    """Settings for a test server: cheap argon2, a low throttle, a known service credential."""
    values: dict[str, Any] = {
        "port": 0,
        "data_dir": data_dir,
        "user_database_url": database_url,
        "service_credential": SERVICE_CREDENTIAL,
        "jwt_key_activation_s": 0,
        "argon2_time_cost": 1,
        "argon2_memory_cost_kib": 1024,
        "argon2_parallelism": 1,
        "login_max_failures_per_account": 3,
        "login_max_failures_per_client": 5,
        **overrides,
    }
    return UserSettings.model_validate(values)


@dataclass
class UserServer:
    """A running user_svc and what a test needs to look behind it."""

    address: str
    stub: user_service_pb2_grpc.UserServiceAsyncStub
    accounts: Accounts
    ring: KeyRing
    database: Database
    outbox: Outbox
    settings: UserSettings

    @property
    def store(self) -> AccountStore:
        """Direct access to the tables, to check what an RPC left behind."""
        return AccountStore(self.database, self.outbox)


@asynccontextmanager
async def running_user_server(settings: UserSettings) -> AsyncIterator[UserServer]:
    """user_svc's servicer behind the same interceptors as in production, on a free port."""
    url = settings.user_database_url
    assert url is not None
    database = Database.from_url(url.get_secret_value())
    await upgrade_to_head(database.engine, SPEC.migrations)
    outbox = Outbox("user")
    ring = key_ring(settings)
    use_cases = accounts(database, outbox, settings, ring)
    server = await create_server(
        services=[user_service(use_cases)],
        address="127.0.0.1:0",
        interceptors=[AccessInterceptor(TokenVerifier(ring))],
    )
    await server.server.start()
    address = f"127.0.0.1:{server.port}"
    channel = grpc.aio.insecure_channel(address)
    try:
        yield UserServer(
            address,
            user_service_pb2_grpc.UserServiceStub(channel),
            use_cases,
            ring,
            database,
            outbox,
            settings,
        )
    finally:
        await channel.close(None)
        await stop_gracefully(server.server, server.health, 0)
        await database.dispose()


@pytest.fixture
async def user_server(db_url: str, tmp_path: Path) -> AsyncIterator[UserServer]:
    async with running_user_server(user_settings(tmp_path, db_url)) as server:
        yield server


@pytest.fixture
async def sqlite_user_server(tmp_path: Path) -> AsyncIterator[UserServer]:
    """For behaviour that does not depend on the database: SQLite only."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'user.db'}"
    async with running_user_server(user_settings(tmp_path, url)) as server:
        yield server
