"""user_svc replicas sharing no filesystem share one key ring through their database.

Two real user_svc instances (in-process, each its own port and data dir) run on one fresh
PostgreSQL database with MC_JWT_KEY_ENCRYPTION_KEY set: they sign with the same key, each
verifies the other's tokens, a rotation made anywhere reaches both before the new key signs,
and replicas asking to rotate at once make one key.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from sqlalchemy import select, text

from common.db import Database
from common.migrations import upgrade_to_head
from common.service_runner import run_service
from common.tokens import TokenVerifier
from common.user_client import UserServiceClient, jwks_cache
from localrun.broker import free_port
from localrun.postgres import database_of_its_own
from tests.support.processes import FAST_KAFKA, ROOT, wait_for
from user_svc.key_encryption import KeyEncryption, UndecryptableKey
from user_svc.main import SPEC as USER
from user_svc.settings import UserSettings
from user_svc.shared_keys import DatabaseKeyRing
from user_svc.store import signing_keys

pytestmark = pytest.mark.postgres

ENCRYPTION_SECRET = secrets.token_urlsafe(32)
CREDENTIAL = secrets.token_urlsafe(32)


@pytest.fixture
async def shared_database(postgres_url: str) -> AsyncIterator[str]:
    """A database of its own: the ring's rows must not meet another test's."""
    async with database_of_its_own(postgres_url, "mc_keys") as url:
        await upgrade_to_head(url, USER.migrations)
        yield url


@dataclass
class Replica:
    client: UserServiceClient
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def token(self) -> str:
        token, _ = await self.client.issue_service_token("payment", CREDENTIAL)
        return token

    async def published_kids(self) -> set[str]:
        return {key["kid"] for key in (await self.client.fetch_jwks())["keys"]}


@asynccontextmanager
async def replica(database_url: str, data_dir: Path, **overrides: Any) -> AsyncIterator[Replica]:
    port = free_port()
    settings = UserSettings.model_validate(
        {
            "port": port,
            "data_dir": data_dir,
            "user_database_url": database_url,
            # No broker: signing and the key ring need none.
            "kafka_bootstrap": f"127.0.0.1:{free_port()}",
            "service_credential": CREDENTIAL,
            "jwt_key_encryption_key": ENCRYPTION_SECRET,
            "jwt_key_reload_s": 0.2,
            **{k.removeprefix("MC_").lower(): v for k, v in FAST_KAFKA.items()},
            **overrides,
        }
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_service(USER, settings, until=stop.wait))
    client = UserServiceClient(f"127.0.0.1:{port}")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 20)
        yield Replica(client, stop, task)
    finally:
        await client.close()
        stop.set()
        await asyncio.wait_for(task, 15)


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def ring_on(database: Database, **options: Any) -> DatabaseKeyRing:
    options.setdefault("retire_after", timedelta(minutes=16))
    return DatabaseKeyRing(database, KeyEncryption(ENCRYPTION_SECRET), **options)


async def test_two_replicas_sign_with_one_ring_and_verify_each_others_tokens(
    shared_database: str, tmp_path: Path
) -> None:
    async with (
        replica(shared_database, tmp_path / "a") as first,
        replica(shared_database, tmp_path / "b") as second,
    ):
        from_first, from_second = await first.token(), await second.token()

        assert kid_of(from_first) == kid_of(from_second)
        assert await first.published_kids() == await second.published_kids()
        principal = await TokenVerifier(jwks_cache(second.client)).verify(from_first)
        assert principal.subject == "service:payment"
        await TokenVerifier(jwks_cache(first.client)).verify(from_second)

    # Neither replica wrote a key file: the ring lives in the database only.
    assert not await asyncio.to_thread(lambda: list(tmp_path.rglob("*.pem")))


async def test_a_rotation_reaches_every_replica_before_the_new_key_signs(
    shared_database: str, tmp_path: Path
) -> None:
    async with (
        replica(shared_database, tmp_path / "a", jwt_key_activation_s=4) as first,
        replica(shared_database, tmp_path / "b", jwt_key_activation_s=4) as second,
    ):
        old_kid = kid_of(await first.token())
        operator = Database.from_url(shared_database)
        try:
            rotated = await ring_on(operator).rotate(replacing=old_kid)
        finally:
            await operator.dispose()
        assert rotated is not None

        async def both_publish_it() -> bool:
            published = [await r.published_kids() for r in (first, second)]
            return all(rotated.kid in kids for kids in published)

        await wait_for(both_publish_it, within=3)
        # Published but not yet active: both still sign with the old key.
        assert {kid_of(await first.token()), kid_of(await second.token())} == {old_kid}

        async def both_sign_with_it() -> bool:
            kids = {kid_of(await first.token()), kid_of(await second.token())}
            return kids == {rotated.kid}

        await wait_for(both_sign_with_it, within=8, interval=0.2)
        # The old key stays published: tokens it signed still verify.
        assert old_kid in await second.published_kids()


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_replicas_rotating_by_age_at_the_same_moment_make_exactly_one_key(
    backend: str, shared_database: str, tmp_path: Path
) -> None:
    url = (
        shared_database if backend == "postgres" else f"sqlite+aiosqlite:///{tmp_path / 'user.db'}"
    )
    if backend == "sqlite":
        await upgrade_to_head(url, USER.migrations)
    now = [1_800_000_000.0]
    first_db, second_db = Database.from_url(url), Database.from_url(url)
    try:
        options: dict[str, Any] = {"rotate_every": timedelta(days=30), "clock": lambda: now[0]}
        first, second = ring_on(first_db, **options), ring_on(second_db, **options)
        await asyncio.gather(first.load(), second.load())
        assert len(first.published()) == 1, "the first start makes one key, not one per replica"

        now[0] += timedelta(days=30).total_seconds()
        await asyncio.gather(first.load(), second.load())

        async with first_db.session() as session:
            kids = (await session.scalars(select(signing_keys.c.kid))).all()
        assert len(kids) == 2
        assert [k.kid for k in first.published()] == [k.kid for k in second.published()]
    finally:
        await first_db.dispose()
        await second_db.dispose()


async def test_asking_to_replace_the_same_key_at_once_makes_one_key(
    shared_database: str,
) -> None:
    first_db, second_db = Database.from_url(shared_database), Database.from_url(shared_database)
    try:
        first, second = ring_on(first_db), ring_on(second_db)
        await first.load()
        current = first.published()[-1].kid

        made = await asyncio.gather(
            first.rotate(replacing=current), second.rotate(replacing=current)
        )

        assert sum(1 for key in made if key is not None) == 1
        async with first_db.session() as session:
            assert len((await session.scalars(select(signing_keys.c.kid))).all()) == 2
    finally:
        await first_db.dispose()
        await second_db.dispose()


async def test_the_table_holds_no_private_key_in_the_clear(
    shared_database: str, tmp_path: Path
) -> None:
    async with replica(shared_database, tmp_path / "a") as first:
        await first.token()

    database = Database.from_url(shared_database)
    try:
        async with database.session() as session:
            # The whole table as text, as a dump or a careless query would show it.
            dumped = " ".join(
                str(row)
                for row in await session.execute(
                    text(
                        "SELECT kid, create_time, encode(sealed_private_key, 'escape') "
                        "FROM user_signing_keys"
                    )
                )
            )
            (sealed,) = (await session.scalars(select(signing_keys.c.sealed_private_key))).all()
    finally:
        await database.dispose()

    assert "PRIVATE KEY" not in dumped
    assert b"PRIVATE KEY" not in sealed
    # A P-256 PKCS#8 DER key starts with this sequence header; sealed bytes must not.
    assert b"\x30\x81\x87\x02\x01\x00\x30\x13" not in sealed


async def test_a_replica_with_another_encryption_secret_refuses_to_use_the_ring(
    shared_database: str,
) -> None:
    database = Database.from_url(shared_database)
    try:
        await ring_on(database).load()
        stranger = DatabaseKeyRing(
            database,
            KeyEncryption(secrets.token_urlsafe(32)),
            retire_after=timedelta(minutes=16),
        )
        with pytest.raises(UndecryptableKey, match="MC_JWT_KEY_ENCRYPTION_KEY"):
            await stranger.load()
    finally:
        await database.dispose()


async def test_the_rotate_command_adds_a_key_to_the_database_ring(shared_database: str) -> None:
    database = Database.from_url(shared_database)
    try:
        await ring_on(database).load()
        environment = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MC_")},
            "MC_USER_DATABASE_URL": shared_database,
            "MC_JWT_KEY_ENCRYPTION_KEY": ENCRYPTION_SECRET,
        }
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "user_svc.keys", "rotate"],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        async with database.session() as session:
            kids = (await session.scalars(select(signing_keys.c.kid))).all()
    finally:
        await database.dispose()

    assert result.returncode == 0, result.stderr
    assert "in the database" in result.stdout
    assert len(kids) == 2
