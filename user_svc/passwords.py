"""Password hashing with argon2id, off the event loop, with a dummy hash for unknown accounts."""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class Passwords:
    """Hashes and verifies passwords; each argon2 call runs in a worker thread.

    argon2 takes tens of milliseconds by design: on the event loop it would stall every other
    call of the process. ``verify_unknown`` spends the same effort as a real verification so
    that an unknown email cannot be told from a wrong password by timing.
    """

    def __init__(self, *, time_cost: int, memory_cost_kib: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost_kib, parallelism=parallelism
        )
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    @property
    def parameters(self) -> dict[str, int]:
        return {
            "time_cost": self._hasher.time_cost,
            "memory_cost_kib": self._hasher.memory_cost,
            "parallelism": self._hasher.parallelism,
        }

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; an erased account (no hash) never matches."""
        if password_hash is None:
            await self.verify_unknown(password)
            return False
        return await asyncio.to_thread(self._verify, password_hash, password)

    async def verify_unknown(self, password: str) -> None:
        await asyncio.to_thread(self._verify, self._dummy_hash, password)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other parameters than the current ones."""
        return self._hasher.check_needs_rehash(password_hash)
