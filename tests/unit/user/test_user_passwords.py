"""argon2id hashing: verification, rehash on new parameters, equal work for unknown accounts."""

from __future__ import annotations

from typing import Any

from user_svc.passwords import Passwords

CHEAP = {"time_cost": 1, "memory_cost_kib": 1024, "parallelism": 1}


async def test_a_hash_verifies_its_password_only() -> None:
    passwords = Passwords(**CHEAP)
    stored = await passwords.hash("correct horse battery")

    assert stored.startswith("$argon2id$")
    assert await passwords.verify(stored, "correct horse battery")
    assert not await passwords.verify(stored, "wrong horse battery")
    assert not await passwords.verify(None, "correct horse battery")


async def test_a_hash_made_with_other_parameters_needs_rehashing() -> None:
    old = await Passwords(**CHEAP).hash("correct horse battery")
    stronger = Passwords(time_cost=2, memory_cost_kib=2048, parallelism=1)

    assert stronger.needs_rehash(old)
    assert not stronger.needs_rehash(await stronger.hash("correct horse battery"))


async def test_an_unknown_account_costs_a_full_argon2_verification() -> None:
    passwords = Passwords(**CHEAP)
    verified: list[str] = []
    original = passwords._verify

    def spy(stored: str, password: str) -> bool:
        verified.append(stored)
        result: bool = original(stored, password)
        return result

    spied: Any = passwords
    spied._verify = spy

    await passwords.verify_unknown("some guess")

    assert len(verified) == 1
    assert not passwords.needs_rehash(verified[0])  # same parameters as real hashes
