"""The verifier remembers tokens it verified, but never past their expiry or their key."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from common.errors import Unauthenticated
from common.tokens import StaticKeys, TokenSigner, TokenVerifier, key_id, new_key


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every signature check the verifier really performs."""
    seen: list[str] = []
    original = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(token)
        return original(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    return seen


def signer() -> TokenSigner:
    key = new_key()
    return TokenSigner(key, key_id(key.public_key()))


async def test_a_token_seen_before_is_not_checked_again(decodes: list[str]) -> None:
    ours = signer()
    verifier = TokenVerifier(StaticKeys({ours.kid: ours.public_key}))
    token = ours.mint("user-1", ["customer"])

    first = await verifier.verify(token)
    again = await verifier.verify(token)

    assert first == again
    assert decodes == [token]


async def test_a_withdrawn_key_ends_its_remembered_tokens(decodes: list[str]) -> None:
    ours = signer()
    keys = StaticKeys({ours.kid: ours.public_key})
    verifier = TokenVerifier(keys)
    token = ours.mint("user-1", ["customer"])
    await verifier.verify(token)

    del keys.keys[ours.kid]

    with pytest.raises(Unauthenticated):
        await verifier.verify(token)


async def test_a_remembered_token_is_checked_again_once_expired(
    decodes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = signer()
    verifier = TokenVerifier(StaticKeys({ours.kid: ours.public_key}))
    token = ours.mint("user-1", ["customer"])
    await verifier.verify(token)
    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)

    await verifier.verify(token)

    assert decodes == [token, token]


async def test_the_memory_is_bounded(decodes: list[str]) -> None:
    ours = signer()
    verifier = TokenVerifier(StaticKeys({ours.kid: ours.public_key}), cache_size=2)
    first, second, third = (ours.mint(f"user-{n}", ["customer"]) for n in range(3))
    for token in (first, second, third):
        await verifier.verify(token)

    await verifier.verify(first)

    assert decodes == [first, second, third, first]
