"""user_svc as the runner starts it: bootstrap admin, own key ring, replicas sharing keys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc

from common.service_runner import run_service
from common.tokens import StaticKeys, TokenVerifier, keys_from_jwks
from localrun.broker import EmbeddedBroker, free_port
from microcommerce.user.v1 import user_service_pb2 as pb
from microcommerce.user.v1 import user_service_pb2_grpc
from tests.support.processes import FAST_KAFKA, wait_for
from user_svc.main import SPEC
from user_svc.settings import UserSettings

ADMIN_EMAIL = "root@shop.example.com"
ADMIN_PASSWORD = "a long admin passphrase"


@asynccontextmanager
async def running_user_svc(
    bootstrap: str, data_dir: Path, **settings: Any
) -> AsyncIterator[user_service_pb2_grpc.UserServiceAsyncStub]:
    port = free_port()
    values = {
        "port": port,
        "kafka_bootstrap": bootstrap,
        "data_dir": data_dir,
        "admin_email": ADMIN_EMAIL,
        "admin_password": ADMIN_PASSWORD,
        "argon2_time_cost": 1,
        "argon2_memory_cost_kib": 1024,
        "argon2_parallelism": 1,
        **{k.removeprefix("MC_").lower(): v for k, v in FAST_KAFKA.items()},
        **settings,
    }
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_service(SPEC, UserSettings.model_validate(values), until=stop.wait)
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 20)
            yield user_service_pb2_grpc.UserServiceStub(channel)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def admin_signs_in(
    stub: user_service_pb2_grpc.UserServiceAsyncStub,
) -> Callable[[], Any]:
    async def probe() -> pb.TokenPair | None:
        try:
            return await stub.IssueToken(
                pb.IssueTokenRequest(email=ADMIN_EMAIL, password=ADMIN_PASSWORD)
            )
        except grpc.aio.AioRpcError:
            return None

    return probe


async def test_the_configured_admin_exists_after_start_and_may_list_users(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    async with running_user_svc(broker.bootstrap, tmp_path) as stub:
        pair = await wait_for(admin_signs_in(stub), within=20)

        listed = await stub.ListUsers(
            pb.ListUsersRequest(), metadata=(("authorization", f"Bearer {pair.access_token}"),)
        )

    assert [user.email for user in listed.users] == [ADMIN_EMAIL]
    assert sorted(listed.users[0].roles) == ["admin", "customer"]


async def test_two_replicas_sharing_a_key_directory_accept_each_others_tokens(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    shared = {
        "jwt_key_dir": tmp_path / "keys",
        "user_database_url": f"sqlite+aiosqlite:///{tmp_path / 'u.db'}",
    }
    async with (
        running_user_svc(broker.bootstrap, tmp_path / "a", **shared) as first,
        running_user_svc(broker.bootstrap, tmp_path / "b", **shared) as second,
    ):
        pair = await wait_for(admin_signs_in(first), within=20)
        me = await second.GetMe(
            pb.GetMeRequest(), metadata=(("authorization", f"Bearer {pair.access_token}"),)
        )
        first_keys = await first.GetJwks(pb.GetJwksRequest())
        second_keys = await second.GetJwks(pb.GetJwksRequest())

    assert me.email == ADMIN_EMAIL
    assert [k.kid for k in first_keys.keys] == [k.kid for k in second_keys.keys]
    jwks = {
        "keys": [
            {"kty": k.kty, "crv": k.crv, "x": k.x, "y": k.y, "kid": k.kid, "alg": k.alg}
            for k in first_keys.keys
        ]
    }
    assert (
        await TokenVerifier(StaticKeys(keys_from_jwks(jwks))).verify(pair.access_token)
    ).is_admin
