"""The README's rotation promise on the key directory (`make run`'s ring): a key rotated by hand
is published within MC_JWT_KEY_RELOAD_S and signs only MC_JWT_KEY_ACTIVATION_S after it was
made, so verifiers can fetch it before they meet its kid.

The database ring keeps the same promise (test_user_shared_keys.py).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import grpc
import jwt

from common.service_runner import run_service
from common.user_client import UserServiceClient
from localrun.broker import free_port
from tests.support.processes import FAST_KAFKA, wait_for
from user_svc.keys import main as keys_command
from user_svc.keys import read_keys
from user_svc.main import SPEC as USER
from user_svc.settings import UserSettings

CREDENTIAL = secrets.token_urlsafe(32)
RELOAD_S = 0.5
ACTIVATION_S = 4.0


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def test_a_key_rotated_by_hand_is_published_before_it_signs(tmp_path: Path) -> None:
    port = free_port()
    settings = UserSettings.model_validate(
        {
            "port": port,
            "data_dir": tmp_path,
            "kafka_bootstrap": f"127.0.0.1:{free_port()}",  # signing needs no broker
            "service_credential": CREDENTIAL,
            "jwt_key_reload_s": RELOAD_S,
            "jwt_key_activation_s": ACTIVATION_S,
            **{k.removeprefix("MC_").lower(): v for k, v in FAST_KAFKA.items()},
        }
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_service(USER, settings, until=stop.wait))
    client = UserServiceClient(f"127.0.0.1:{port}")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 20)

        async def token_kid() -> str:
            token, _ = await client.issue_service_token("payment", CREDENTIAL)
            return kid_of(token)

        async def published() -> set[str]:
            return {key["kid"] for key in (await client.fetch_jwks())["keys"]}

        old_kid = await token_kid()
        # What `make keys-rotate` runs, against the service's key directory.
        directory = settings.key_directory()
        assert keys_command(["rotate", "--dir", str(directory)]) == 0
        new_key = (await asyncio.to_thread(read_keys, directory))[-1]
        assert new_key.kid != old_kid

        async def new_key_published() -> bool:
            return new_key.kid in await published()

        await wait_for(new_key_published, within=RELOAD_S + 2, interval=0.1)
        assert time.time() - new_key.created < ACTIVATION_S, "published well before it signs"
        assert await token_kid() == old_kid

        async def new_key_signs() -> bool:
            return await token_kid() == new_key.kid

        await wait_for(new_key_signs, within=ACTIVATION_S + 3, interval=0.1)
        assert time.time() - new_key.created >= ACTIVATION_S
        assert old_kid in await published(), "the old key verifies its tokens until they expire"
    finally:
        await client.close()
        stop.set()
        await asyncio.wait_for(task, 15)
