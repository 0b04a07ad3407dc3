"""The signing key ring kept in user_svc's database, for replicas that share no filesystem.

Every replica reads the same ``user_signing_keys`` rows (private keys sealed with
``MC_JWT_KEY_ENCRYPTION_KEY``), so they all sign with the same key and publish the same JWKS.
Creating the first key, rotating by age and deleting retired keys happen under a database
lock (a PostgreSQL advisory lock; on SQLite the unit of work's write lock), so two replicas
never both rotate. Each replica reloads the ring every ``MC_JWT_KEY_RELOAD_S``, which is shorter
than the activation delay: a new key is published by every replica before any signs with it.
The rules themselves (rotation age, activation, retirement) are ``user_svc.keys``'s.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import Database
from common.logging import get_logger
from common.tokens import key_id, new_key
from user_svc.key_encryption import KeyEncryption
from user_svc.keys import PublishingRing, StoredKey, retired, rotation_due
from user_svc.store import signing_keys

_log = get_logger(__name__)

# One advisory lock id for the ring, whichever database the service shares.
_LOCK_KEY = zlib.crc32(b"mc-user-signing-keys")


class DatabaseKeyRing(PublishingRing):
    """The keys this replica signs and verifies with; a ``user_svc.keys.SigningKeys``.

    ``load`` (awaited once before serving, then every ``MC_JWT_KEY_RELOAD_S`` by the service's
    background loop) brings the ring up to date. Signing reads the in-memory copy and never
    waits on the database.
    """

    def __init__(
        self,
        database: Database,
        encryption: KeyEncryption,
        *,
        retire_after: timedelta,
        rotate_every: timedelta | None = None,
        activate_after: timedelta = timedelta(0),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._database = database
        self._encryption = encryption
        self._retire_after = retire_after.total_seconds()
        self._rotate_every = rotate_every.total_seconds() if rotate_every else None
        self._activate_after = activate_after.total_seconds()
        self._clock = clock
        self._keys: list[StoredKey] = []
        self._opened: dict[str, StoredKey] = {}  # decrypted once per kid
        self._loaded_at = float("-inf")

    async def load(self) -> None:
        """Read the ring, creating the first key, rotating an over-age one and deleting retired
        ones under the lock, so that replicas do each of these once."""
        async with self._locked() as connection:
            keys = await self._read(connection)
            now = self._clock()
            if rotation_due(keys, now, self._rotate_every):
                keys.append(await self._insert_new_key(connection, now))
            gone = retired(
                keys, now, activate_after=self._activate_after, retire_after=self._retire_after
            )
            if gone:
                await connection.execute(
                    delete(signing_keys).where(signing_keys.c.kid.in_([k.kid for k in gone]))
                )
                _log.info("signing_keys_retired", kids=[k.kid for k in gone])
        gone_kids = {stored.kid for stored in gone}
        self._keys = [stored for stored in keys if stored.kid not in gone_kids]
        self._loaded_at = self._clock()

    async def rotate(self, *, replacing: str | None = None) -> StoredKey | None:
        """Add a key that signs once active; older keys stay published until retired.

        With ``replacing``, only when that kid is still the newest key: replicas (or operators)
        asking at the same moment to replace the same key make one new key, not several; the
        others get None.
        """
        async with self._locked() as connection:
            keys = await self._read(connection)
            if replacing is not None and keys and keys[-1].kid != replacing:
                return None
            stored = await self._insert_new_key(connection, self._clock())
        await self.load()
        return stored

    def _current(self) -> list[StoredKey]:
        if not self._keys:
            raise RuntimeError("the signing key ring is used before DatabaseKeyRing.load()")
        return self._keys

    async def _reload(self) -> None:
        await self.load()

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[AsyncConnection]:
        async with self._database.session() as connection:
            if self._database.engine.dialect.name == "postgresql":
                # Held until the unit of work ends. SQLite needs nothing more: the unit of work
                # began IMMEDIATE and holds the database's write lock already.
                await connection.execute(select(func.pg_advisory_xact_lock(_LOCK_KEY)))
            yield connection

    async def _read(self, connection: AsyncConnection) -> list[StoredKey]:
        rows = (
            await connection.execute(
                select(
                    signing_keys.c.kid,
                    signing_keys.c.create_time,
                    signing_keys.c.sealed_private_key,
                ).order_by(signing_keys.c.create_time, signing_keys.c.kid)
            )
        ).all()
        keys: list[StoredKey] = []
        for row in rows:
            opened = self._opened.get(row.kid)
            if opened is None:
                private_key = self._encryption.open(row.sealed_private_key, row.kid)
                opened = StoredKey(private_key, row.kid, row.create_time.timestamp())
                self._opened[row.kid] = opened
            keys.append(opened)
        return keys

    async def _insert_new_key(self, connection: AsyncConnection, now: float) -> StoredKey:
        private_key = new_key()
        stored = StoredKey(private_key, key_id(private_key.public_key()), now)
        await connection.execute(
            insert(signing_keys).values(
                kid=stored.kid,
                create_time=datetime.fromtimestamp(now, UTC),
                sealed_private_key=self._encryption.seal(private_key, stored.kid),
            )
        )
        _log.info("signing_key_created", kid=stored.kid)
        return stored
