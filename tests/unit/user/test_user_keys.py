"""The signing key ring: first key, sharing between replicas, rotation and retirement."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from common.errors import Unauthenticated
from common.tokens import AUDIENCE, ISSUER, TokenVerifier
from user_svc.keys import KeyRing, main, read_keys, rotate


class Clock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def ring(directory: Path, clock: Clock, **options: timedelta) -> KeyRing:
    options.setdefault("retire_after", timedelta(minutes=16))
    created = KeyRing(directory, clock=clock, **options)
    created.load()
    return created


def test_the_first_start_creates_one_private_key_readable_only_by_the_owner(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "keys"
    ring(directory, Clock())

    files = list(directory.glob("*.pem"))
    assert len(files) == 1
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_replicas_sharing_a_directory_sign_with_the_same_key(tmp_path: Path) -> None:
    clock = Clock()
    first, second = ring(tmp_path, clock), ring(tmp_path, clock)

    assert first.signer().kid == second.signer().kid
    assert len(read_keys(tmp_path)) == 1


async def test_a_minted_token_has_every_required_claim_and_verifies(tmp_path: Path) -> None:
    keys = ring(tmp_path, Clock())
    token = keys.signer().mint("user-7", ["customer"], ttl=timedelta(minutes=15))

    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    principal = await TokenVerifier(keys).verify(token)

    assert header["alg"] == "ES256"
    assert header["kid"] == keys.signer().kid
    assert set(claims) >= {"sub", "roles", "iat", "exp", "iss", "aud", "jti"}
    assert (claims["iss"], claims["aud"]) == (ISSUER, AUDIENCE)
    assert claims["exp"] - claims["iat"] == 15 * 60
    assert principal.subject == "user-7"


async def test_after_a_rotation_old_tokens_verify_until_the_old_key_retires(
    tmp_path: Path,
) -> None:
    clock = Clock()
    keys = ring(tmp_path, clock)
    old_kid = keys.signer().kid
    old_token = keys.signer().mint("user-1", ["customer"])
    clock.now += 60

    rotate(tmp_path, now=clock.now)
    keys.load()
    new_kid = keys.signer().kid
    published = [jwk["kid"] for jwk in keys.jwks()]
    old_token_principal = await TokenVerifier(keys).verify(old_token)

    clock.now += timedelta(minutes=17).total_seconds()
    keys.load()

    assert new_kid != old_kid
    assert published == [old_kid, new_kid]
    assert old_token_principal.subject == "user-1"
    assert [jwk["kid"] for jwk in keys.jwks()] == [new_kid]
    assert await keys.get(old_kid) is None


def test_a_new_key_is_published_before_it_signs(tmp_path: Path) -> None:
    clock = Clock()
    keys = ring(tmp_path, clock, activate_after=timedelta(seconds=10))
    old_kid = keys.signer().kid
    clock.now += 60

    rotate(tmp_path, now=clock.now)
    keys.load()
    published_at_once = [jwk["kid"] for jwk in keys.jwks()]
    signer_at_once = keys.signer().kid
    clock.now += 11

    assert len(published_at_once) == 2
    assert signer_at_once == old_kid
    assert keys.signer().kid == published_at_once[-1]


async def test_a_replica_finds_a_key_another_replica_rotated_in(tmp_path: Path) -> None:
    clock = Clock()
    first, second = ring(tmp_path, clock), ring(tmp_path, clock)
    clock.now += 2  # past the one-second guard against reload floods

    rotate(tmp_path, now=clock.now)
    first.load()
    token = first.signer().mint("user-2", ["customer"])

    assert (await TokenVerifier(second).verify(token)).subject == "user-2"


def test_an_over_age_key_is_rotated_on_load(tmp_path: Path) -> None:
    clock = Clock()
    keys = ring(tmp_path, clock, rotate_every=timedelta(days=30))
    first_kid = keys.signer().kid

    clock.now += timedelta(days=31).total_seconds()
    keys.load()

    assert keys.signer().kid != first_kid
    assert len(read_keys(tmp_path)) == 2


async def test_a_token_of_a_foreign_key_with_our_kid_is_refused(tmp_path: Path) -> None:
    ours = ring(tmp_path / "ours", Clock())
    foreign = ring(tmp_path / "foreign", Clock()).signer()
    forged = jwt.encode(
        {"sub": "x", "roles": ["admin"], "iss": ISSUER, "aud": AUDIENCE, "iat": 0, "jti": "j"}
        | {"exp": int(datetime.now(UTC).timestamp()) + 600},
        foreign.private_key,
        algorithm="ES256",
        headers={"kid": ours.signer().kid},
    )

    with pytest.raises(Unauthenticated):
        await TokenVerifier(ours).verify(forged)


def test_the_rotate_command_adds_a_key(tmp_path: Path) -> None:
    ring(tmp_path, Clock())

    assert main(["rotate", "--dir", str(tmp_path)]) == 0

    assert len(read_keys(tmp_path)) == 2
