"""The signing key ring: ES256 keys in a directory that every user_svc replica shares.

Each key is one PEM file ``es256-<created, unix ms>-<kid>.pem`` (mode 0600). A new key is
published at once but signs only ``activate_after`` later, so verifiers that cached the JWKS
just before the rotation may refetch it (``JwksCache`` refetches at most every 5 s) before they
meet the new kid. An older key stays published until every token it signed has expired
(``retire_after`` past the moment a newer key took over), then it is deleted. Replicas agree
because the directory is the only state: they all pick the newest file and reload the
directory when they meet a kid they do not know or every ``reload_interval``. Creating a key
takes an exclusive ``flock`` on ``.lock`` so two replicas starting together make one key.

``python -m user_svc.keys rotate [--dir DIR]`` adds a new key by hand (e.g. after a leak);
with ``MC_JWT_KEY_ROTATION_S`` set, the service also rotates by age. The rules of the ring
(when to rotate, which key signs, when one retires) are functions here, shared with the ring
kept in the database for replicas that share no filesystem (``user_svc.shared_keys``).
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import itertools
import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from common.logging import configure_logging, get_logger
from common.tokens import PrivateKey, PublicKey, TokenSigner, key_id, new_key, public_jwk

if TYPE_CHECKING:
    from user_svc.settings import UserSettings

_log = get_logger(__name__)

_PREFIX = "es256-"
_SUFFIX = ".pem"


@dataclass(frozen=True)
class StoredKey:
    """One key of the ring and when it was created."""

    private_key: PrivateKey
    kid: str
    created: float  # unix time

    @property
    def public_key(self) -> PublicKey:
        return self.private_key.public_key()


class SigningKeys(Protocol):
    """What the use cases sign with and publish; also a ``common.tokens.KeySource``."""

    def signer(self) -> TokenSigner: ...

    def jwks(self) -> list[dict[str, str]]: ...

    async def get(self, kid: str) -> PublicKey | None: ...


def rotation_due(keys: Sequence[StoredKey], now: float, rotate_every: float | None) -> bool:
    """Whether the ring needs a new key: it has none, or its newest is over age."""
    return not keys or (rotate_every is not None and now - keys[-1].created >= rotate_every)


def retired(
    keys: Sequence[StoredKey], now: float, *, activate_after: float, retire_after: float
) -> list[StoredKey]:
    """The keys (oldest first) no still-valid token can be signed with any more.

    A key retires ``retire_after`` past the moment its successor took over (the successor's
    creation plus ``activate_after``).
    """
    return [
        stored
        for stored, successor in itertools.pairwise(keys)
        if now - (successor.created + activate_after) > retire_after
    ]


def signing_key(keys: Sequence[StoredKey], now: float, activate_after: float) -> StoredKey:
    """The newest active key; when none is active yet, the oldest (on first start the only key
    signs at once)."""
    active = [stored for stored in keys if now - stored.created >= activate_after]
    return active[-1] if active else keys[0]


class PublishingRing(ABC):
    """What both rings do with the keys they hold: pick the signer, publish the JWKS, find a
    kid. Each ring says how its keys are brought up to date (``_current``, ``_reload``)."""

    _keys: list[StoredKey]
    _loaded_at: float
    _activate_after: float
    _clock: Callable[[], float]

    @abstractmethod
    def _current(self) -> list[StoredKey]:
        """The keys, newest last, as up to date as the ring keeps them."""

    @abstractmethod
    async def _reload(self) -> None:
        """Read the keys again now (another replica may have rotated)."""

    def signer(self) -> TokenSigner:
        """The signer of the newest active key; when none is active yet, the oldest (on first
        start the only key signs at once)."""
        chosen = signing_key(self._current(), self._clock(), self._activate_after)
        return TokenSigner(chosen.private_key, chosen.kid)

    def published(self) -> Sequence[StoredKey]:
        """Every key a still-valid token may be signed with, newest last."""
        return list(self._current())

    def jwks(self) -> list[dict[str, str]]:
        return [public_jwk(stored.public_key, kid=stored.kid) for stored in self.published()]

    async def get(self, kid: str) -> PublicKey | None:
        for stored in self._current():
            if stored.kid == kid:
                return stored.public_key
        # Another replica may have rotated since the last reload: look again, at most once a
        # second so a flood of made-up kids cannot become a flood of reads.
        if self._clock() - self._loaded_at >= 1.0:
            await self._reload()
            for stored in self._keys:
                if stored.kid == kid:
                    return stored.public_key
        return None


def _file_name(created: float, kid: str) -> str:
    # Milliseconds: a rotation right after the first key must still sort after it.
    return f"{_PREFIX}{round(created * 1000)}-{kid}{_SUFFIX}"


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    with open(directory / ".lock", "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _prepare(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)


def read_keys(directory: Path) -> list[StoredKey]:
    """Every key in ``directory``, oldest first; unreadable files are skipped and logged."""
    keys: list[StoredKey] = []
    for path in directory.glob(f"{_PREFIX}*{_SUFFIX}"):
        try:
            created = int(path.name[len(_PREFIX) :].split("-", 1)[0]) / 1000
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, OSError, TypeError) as error:
            _log.warning("signing_key_unreadable", file=path.name, error=type(error).__name__)
            continue
        if not isinstance(loaded, ec.EllipticCurvePrivateKey) or not isinstance(
            loaded.curve, ec.SECP256R1
        ):
            _log.warning("signing_key_not_p256", file=path.name)
            continue
        keys.append(StoredKey(loaded, key_id(loaded.public_key()), created))
    keys.sort(key=lambda stored: (stored.created, stored.kid))
    return keys


def write_new_key(directory: Path, *, now: float | None = None) -> StoredKey:
    """Create a key file atomically (0600 from the start, renamed into place)."""
    _prepare(directory)
    private_key = new_key()
    created = time.time() if now is None else now
    stored = StoredKey(private_key, key_id(private_key.public_key()), created)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    final = directory / _file_name(created, stored.kid)
    temporary = directory / f".{final.name}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.rename(final)
    _log.info("signing_key_created", kid=stored.kid)
    return stored


def rotate(directory: Path, *, now: float | None = None) -> StoredKey:
    """Add a new key that signs from now on; older keys stay published until retired."""
    _prepare(directory)
    with _locked(directory):
        return write_new_key(directory, now=now)


class KeyRing(PublishingRing):
    """The keys this replica signs and verifies with; a ``common.tokens.KeySource``.

    ``retire_after`` must cover the longest token lifetime plus the verifiers' leeway: a key
    replaced at T is published until T + retire_after, so every token it signed can still be
    verified.
    """

    def __init__(
        self,
        directory: Path,
        *,
        retire_after: timedelta,
        rotate_every: timedelta | None = None,
        activate_after: timedelta = timedelta(0),
        reload_interval: timedelta = timedelta(seconds=30),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._directory = directory
        self._retire_after = retire_after.total_seconds()
        self._rotate_every = rotate_every.total_seconds() if rotate_every else None
        self._activate_after = activate_after.total_seconds()
        self._reload_interval = reload_interval.total_seconds()
        self._clock = clock
        self._keys: list[StoredKey] = []
        self._loaded_at = float("-inf")

    @property
    def directory(self) -> Path:
        return self._directory

    def load(self) -> None:
        """Read the directory, creating the first key, rotating an over-age one and deleting
        retired ones (under the lock, so replicas do each of these once)."""
        _prepare(self._directory)
        with _locked(self._directory):
            keys = read_keys(self._directory)
            now = self._clock()
            if rotation_due(keys, now, self._rotate_every):
                keys.append(write_new_key(self._directory, now=now))
            gone = retired(
                keys, now, activate_after=self._activate_after, retire_after=self._retire_after
            )
            for stored in gone:
                (self._directory / _file_name(stored.created, stored.kid)).unlink(missing_ok=True)
                _log.info("signing_key_retired", kid=stored.kid)
            gone_kids = {stored.kid for stored in gone}
            keys = [stored for stored in keys if stored.kid not in gone_kids]
        self._keys = keys
        self._loaded_at = self._clock()

    def _current(self) -> list[StoredKey]:
        if not self._keys or self._clock() - self._loaded_at >= self._reload_interval:
            self.load()
        return self._keys

    async def _reload(self) -> None:
        self.load()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m user_svc.keys rotate|list [--dir DIR]``.

    Without ``--dir`` it acts on the ring the service uses: the database one when
    MC_JWT_KEY_ENCRYPTION_KEY is set, else the key directory.
    """
    # Imported here: the settings module pulls in the whole service, the CLI needs only this.
    from common.settings import load_settings
    from user_svc.settings import UserSettings

    parser = argparse.ArgumentParser(prog="python -m user_svc.keys", description=__doc__)
    parser.add_argument("command", choices=("rotate", "list"))
    parser.add_argument("--dir", type=Path, help="key directory (default: from settings)")
    arguments = parser.parse_args(argv)
    settings = load_settings(UserSettings)
    # Its log lines to stderr as the service's are; stdout carries only the answer.
    configure_logging("user", settings.log_level)
    if arguments.dir is None and settings.jwt_key_encryption_key is not None:
        return asyncio.run(_in_database(arguments.command, settings))
    directory = arguments.dir or settings.key_directory()
    if arguments.command == "rotate":
        stored = rotate(directory)
        sys.stdout.write(f"new signing key {stored.kid} in {directory}\n")
    else:
        for stored in read_keys(directory):
            sys.stdout.write(f"{stored.kid} created {int(stored.created)}\n")
    return 0


async def _in_database(command: str, settings: UserSettings) -> int:
    from common.db import Database, database_url
    from user_svc.main import shared_key_ring

    database = Database.from_url(database_url("user", settings), application_name="user-keys")
    try:
        ring = shared_key_ring(database, settings)
        await ring.load()
        if command == "rotate":
            stored = await ring.rotate(replacing=ring.published()[-1].kid)
            if stored is None:
                sys.stdout.write("another replica rotated at the same moment; nothing added\n")
            else:
                sys.stdout.write(f"new signing key {stored.kid} in the database\n")
        else:
            for key in ring.published():
                sys.stdout.write(f"{key.kid} created {int(key.created)}\n")
    finally:
        await database.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
