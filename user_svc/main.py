"""Wiring and start-up of the user service: settings, layers, gRPC server, health stream."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any

from common.background import periodic
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
from user_svc.key_encryption import KeyEncryption
from user_svc.keys import KeyRing, SigningKeys
from user_svc.passwords import Passwords
from user_svc.service import SERVICE_TOKEN_TTL, Accounts, Lifetimes, Throttling
from user_svc.settings import UserSettings
from user_svc.shared_keys import DatabaseKeyRing
from user_svc.store import AccountStore

_log = get_logger(__name__)

# Ended sessions and their spent refresh tokens are deleted this often (after a week).
PRUNE_INTERVAL_S = 3600.0


def key_ring(settings: UserSettings) -> KeyRing:
    """The ring in the configured directory, loaded (its first key created) now."""
    ring = KeyRing(
        settings.key_directory(),
        retire_after=_retire_after(settings),
        activate_after=timedelta(seconds=settings.jwt_key_activation_s),
        rotate_every=_rotate_every(settings),
        # Reread as often as the database ring: a key another process added (`python -m
        # user_svc.keys rotate`) must be published well before it starts to sign.
        reload_interval=timedelta(seconds=settings.jwt_key_reload_s),
    )
    ring.load()
    return ring


def _retire_after(settings: UserSettings) -> timedelta:
    # A replaced key verifies until every token it signed has expired, leeway included.
    longest_token = max(settings.access_token_ttl, SERVICE_TOKEN_TTL)
    return longest_token + timedelta(seconds=DEFAULT_LEEWAY_S * 2)


def _rotate_every(settings: UserSettings) -> timedelta | None:
    rotation = settings.jwt_key_rotation_s
    return timedelta(seconds=rotation) if rotation else None


def shared_key_ring(database: Database, settings: UserSettings) -> DatabaseKeyRing:
    """The ring in the service's database (MC_JWT_KEY_ENCRYPTION_KEY set); load() it first."""
    secret = settings.jwt_key_encryption_key
    assert secret is not None, "only with MC_JWT_KEY_ENCRYPTION_KEY"
    return DatabaseKeyRing(
        database,
        KeyEncryption(secret.get_secret_value()),
        retire_after=_retire_after(settings),
        activate_after=timedelta(seconds=settings.jwt_key_activation_s),
        rotate_every=_rotate_every(settings),
    )


def accounts(
    database: Database, outbox: Outbox, settings: UserSettings, ring: SigningKeys
) -> Accounts:
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
    ring: SigningKeys
    startup: list[Callable[[], Awaitable[None]]] = []
    refresh: list[Callable[[], Coroutine[Any, Any, None]]] = []
    if settings.jwt_key_encryption_key is not None:
        shared = shared_key_ring(runtime.database, settings)
        # Reread often (well inside the activation delay), so every replica publishes a new
        # key before any signs with it; a failed reload keeps the last ring.
        reload = periodic(settings.jwt_key_reload_s, shared.load, name="signing-key-reload")
        ring, startup, refresh = shared, [shared.load], [reload]
    else:
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

    return Wiring(
        services=[user_service(use_cases)],
        checks={"database": use_cases.database_reachable},
        background=[
            bootstrap_admin,
            periodic(PRUNE_INTERVAL_S, use_cases.prune_sessions, name="session-pruning"),
            *refresh,
        ],
        key_source=ring,
        startup=startup,
    )


SPEC = ServiceSpec[UserSettings](
    name="user",
    migrations=Path(__file__).parent / "migrations",
    wire=wire,
)


def main() -> None:
    serve(SPEC, UserSettings)
