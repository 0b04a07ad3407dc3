"""Wiring and start-up of the user service: settings, layers, gRPC server, health stream."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

from common.db import Database
from common.grpc_server import Service
from common.logging import get_logger
from common.outbox import Outbox
from common.pagination import PageTokens
from common.service_runner import Runtime, ServiceSpec, Wiring, serve
from common.tokens import DEFAULT_LEEWAY_S
from microcommerce.user.v1 import user_service_pb2, user_service_pb2_grpc
from user_svc import grpc_api
from user_svc.domain import ThrottlePolicy
from user_svc.keys import KeyRing
from user_svc.passwords import Passwords
from user_svc.service import SERVICE_TOKEN_TTL, Accounts, Lifetimes, Throttling
from user_svc.settings import UserSettings
from user_svc.store import AccountStore

_log = get_logger(__name__)

# Ended sessions and their spent refresh tokens are deleted this often (after a week).
PRUNE_INTERVAL_S = 3600.0


def key_ring(settings: UserSettings) -> KeyRing:
    """The ring in the configured directory, loaded (its first key created) now."""
    longest_token = max(settings.access_token_ttl, SERVICE_TOKEN_TTL)
    ring = KeyRing(
        settings.key_directory(),
        # A replaced key verifies until every token it signed has expired, leeway included.
        retire_after=longest_token + timedelta(seconds=DEFAULT_LEEWAY_S * 2),
        activate_after=timedelta(seconds=settings.jwt_key_activation_s),
        rotate_every=(
            timedelta(seconds=settings.jwt_key_rotation_s) if settings.jwt_key_rotation_s else None
        ),
    )
    ring.load()
    return ring


def accounts(database: Database, outbox: Outbox, settings: UserSettings, ring: KeyRing) -> Accounts:
    """The use cases over this database, signing with ``ring``."""
    window = timedelta(seconds=settings.login_failure_window_s)
    return Accounts(
        AccountStore(database, outbox),
        page_tokens=PageTokens.for_service(settings.page_token_key, "user"),
        keys=ring,
        passwords=Passwords(
            time_cost=settings.argon2_time_cost,
            memory_cost_kib=settings.argon2_memory_cost_kib,
            parallelism=settings.argon2_parallelism,
        ),
        throttling=Throttling(
            account=ThrottlePolicy(settings.login_max_failures_per_account, window),
            client=ThrottlePolicy(settings.login_max_failures_per_client, window),
        ),
        lifetimes=Lifetimes(
            access_token=settings.access_token_ttl,
            session_idle=timedelta(seconds=settings.session_idle_ttl_s),
        ),
        service_credential=settings.service_credential,
    )


def user_service(use_cases: Accounts) -> Service[Any]:
    return Service(
        user_service_pb2.DESCRIPTOR.services_by_name["UserService"].full_name,
        grpc_api.UserApi(use_cases),
        user_service_pb2_grpc.add_UserServiceServicer_to_server,
    )


def wire(runtime: Runtime[UserSettings]) -> Wiring:
    settings = runtime.settings
    ring = key_ring(settings)
    use_cases = accounts(runtime.database, runtime.outbox, settings, ring)

    async def bootstrap_admin() -> None:
        if settings.admin_email and settings.admin_password is not None:
            try:
                admin = await use_cases.bootstrap_admin(
                    settings.admin_email, settings.admin_password.get_secret_value()
                )
            except Exception as error:  # logged, not fatal: the shop runs without the admin
                _log.error("admin_bootstrap_failed", error=type(error).__name__, detail=str(error))
            else:
                _log.info("admin_bootstrapped", user_id=admin.id)

    async def prune_sessions() -> None:
        while True:
            try:
                await use_cases.prune_sessions()
            except Exception as error:  # the database may be away for a while; try next time
                _log.warning("session_pruning_failed", error=type(error).__name__)
            await asyncio.sleep(PRUNE_INTERVAL_S)

    return Wiring(
        services=[user_service(use_cases)],
        checks={"database": use_cases.database_reachable},
        background=[bootstrap_admin, prune_sessions],
        key_source=ring,
    )


SPEC = ServiceSpec[UserSettings](
    name="user",
    migrations=Path(__file__).parent / "migrations",
    wire=wire,
)


def main() -> None:
    serve(SPEC, UserSettings)
