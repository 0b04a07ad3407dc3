"""Forged and doctored access tokens against the verifier and user_svc, with real user_svc keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from common.errors import Unauthenticated
from common.tokens import TokenSigner, TokenVerifier, key_id, new_key
from microcommerce.user.v1 import user_service_pb2 as pb
from tests.integration.user.conftest import UserServer
from tests.integration.user.user_helpers import auth, rpc_error, sign_in, sign_up, unique_email
from user_svc.keys import KeyRing


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _json_b64(value: object) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    claims: dict[str, object] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def alg_none(ring: KeyRing, genuine: str) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": ring.signer().kid}
    return f"{_json_b64(header)}.{_json_b64(_claims(genuine))}."


def hs256_with_the_public_key(ring: KeyRing, genuine: str) -> str:
    # The classic key-confusion attack: HMAC keyed with the published public key.
    public_pem = ring.signer().public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{_json_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': ring.signer().kid})}"
    signing_input += f".{_json_b64(_claims(genuine))}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _ours(ring: KeyRing, **options: str) -> TokenSigner:
    signer = ring.signer()
    return TokenSigner(signer.private_key, signer.kid, **options)


def wrong_issuer(ring: KeyRing, genuine: str) -> str:
    return _ours(ring, issuer="someone-else").mint(str(_claims(genuine)["sub"]), ["customer"])


def wrong_audience(ring: KeyRing, genuine: str) -> str:
    return _ours(ring, audience="another-system").mint(str(_claims(genuine)["sub"]), ["customer"])


def expired_beyond_leeway(ring: KeyRing, genuine: str) -> str:
    issued = datetime.now(UTC) - timedelta(minutes=15, seconds=45)
    return ring.signer().mint(str(_claims(genuine)["sub"]), ["customer"], now=issued)


def unknown_kid(ring: KeyRing, genuine: str) -> str:
    stranger = new_key()
    return TokenSigner(stranger, key_id(stranger.public_key())).mint(
        str(_claims(genuine)["sub"]), ["customer", "admin"]
    )


def tampered_payload(ring: KeyRing, genuine: str) -> str:
    header, _, signature = genuine.split(".")
    claims = _claims(genuine) | {"roles": ["admin", "customer"]}
    return f"{header}.{_json_b64(claims)}.{signature}"


def truncated_signature(ring: KeyRing, genuine: str) -> str:
    return genuine[:-8]


ATTACKS: dict[str, Callable[[KeyRing, str], str]] = {
    "alg none": alg_none,
    "HS256 keyed with the public key": hs256_with_the_public_key,
    "wrong iss": wrong_issuer,
    "wrong aud": wrong_audience,
    "expired beyond the leeway": expired_beyond_leeway,
    "unknown kid": unknown_kid,
    "tampered payload": tampered_payload,
    "truncated signature": truncated_signature,
}


async def genuine_token(server: UserServer) -> str:
    email = unique_email()
    await sign_up(server.stub, email=email)
    return (await sign_in(server.stub, email)).access_token


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_the_verifier_refuses_a_forged_token(
    sqlite_user_server: UserServer, attack: str
) -> None:
    forged = ATTACKS[attack](sqlite_user_server.ring, await genuine_token(sqlite_user_server))

    with pytest.raises(Unauthenticated):
        await TokenVerifier(sqlite_user_server.ring).verify(forged)


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_user_svc_refuses_a_forged_token_on_a_protected_rpc(
    sqlite_user_server: UserServer, attack: str
) -> None:
    forged = ATTACKS[attack](sqlite_user_server.ring, await genuine_token(sqlite_user_server))

    error = await rpc_error(sqlite_user_server.stub.GetMe(pb.GetMeRequest(), metadata=auth(forged)))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_token_expired_within_the_leeway_still_verifies(
    sqlite_user_server: UserServer,
) -> None:
    genuine = await genuine_token(sqlite_user_server)
    issued = datetime.now(UTC) - timedelta(minutes=15, seconds=10)
    late = sqlite_user_server.ring.signer().mint(
        str(_claims(genuine)["sub"]), ["customer"], now=issued
    )

    principal = await TokenVerifier(sqlite_user_server.ring).verify(late)

    assert principal.subject == _claims(genuine)["sub"]
