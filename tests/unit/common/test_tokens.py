"""Access tokens: what the verifier accepts and every way a forged or stale token is refused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from common.errors import Unauthenticated
from common.tokens import (
    ROLE_ADMIN,
    ROLE_CUSTOMER,
    ROLE_SERVICE,
    JwksCache,
    StaticKeys,
    TokenSigner,
    TokenVerifier,
    bearer_token,
    key_id,
    keys_from_jwks,
    new_key,
    public_jwk,
)

KEY = new_key()
SIGNER = TokenSigner(KEY, kid=key_id(KEY.public_key()))
VERIFIER = TokenVerifier(StaticKeys({SIGNER.kid: SIGNER.public_key}))


def _segments(token: str) -> list[str]:
    return token.split(".")


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def test_a_minted_token_verifies_to_its_subject_and_roles() -> None:
    principal = await VERIFIER.verify(SIGNER.mint("user-7", [ROLE_CUSTOMER, ROLE_ADMIN]))

    assert principal.subject == "user-7"
    assert principal.roles == {ROLE_CUSTOMER, ROLE_ADMIN}
    assert principal.is_admin
    assert not principal.is_service
    assert principal.token_id


async def test_a_service_token_is_a_service_principal_without_a_user_id() -> None:
    principal = await VERIFIER.verify(SIGNER.mint("service:payment", [ROLE_SERVICE]))

    assert principal.is_service
    with pytest.raises(Unauthenticated):
        _ = principal.user_id


async def test_a_user_cannot_pass_as_a_service_by_holding_the_role_alone() -> None:
    principal = await VERIFIER.verify(SIGNER.mint("user-7", [ROLE_SERVICE]))

    assert not principal.is_service


async def test_alg_none_is_refused() -> None:
    _, payload, _ = _segments(SIGNER.mint("user-7", [ROLE_ADMIN]))
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': SIGNER.kid})}.{payload}."

    with pytest.raises(Unauthenticated, match="algorithm"):
        await VERIFIER.verify(unsigned)


async def test_an_hmac_token_signed_with_the_public_key_is_refused() -> None:
    public_pem = SIGNER.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {
        "sub": "attacker",
        "roles": [ROLE_ADMIN],
        "iss": SIGNER.issuer,
        "aud": SIGNER.audience,
        "iat": int(datetime.now(UTC).timestamp()),
        "exp": int((datetime.now(UTC) + timedelta(minutes=5)).timestamp()),
        "jti": "x",
    }
    # PyJWT itself refuses to HMAC with a PEM key, so the token is assembled by hand.
    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': SIGNER.kid})}.{_b64(claims)}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(signature).decode().rstrip('=')}"

    with pytest.raises(Unauthenticated, match="algorithm"):
        await VERIFIER.verify(forged)


async def test_a_token_from_another_issuer_or_for_another_audience_is_refused() -> None:
    foreign_issuer = TokenSigner(KEY, kid=SIGNER.kid, issuer="someone-else")
    foreign_audience = TokenSigner(KEY, kid=SIGNER.kid, audience="another-api")

    # Built here, not at import: mutation testing switches a mutant on after imports.
    verifier = TokenVerifier(StaticKeys({SIGNER.kid: SIGNER.public_key}))

    with pytest.raises(Unauthenticated, match=r"(?i)issuer"):
        await verifier.verify(foreign_issuer.mint("user-7", []))
    with pytest.raises(Unauthenticated, match=r"(?i)audience"):
        await verifier.verify(foreign_audience.mint("user-7", []))


async def test_an_expired_token_is_refused_beyond_the_clock_skew_allowance() -> None:
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    expired = SIGNER.mint("user-7", [], ttl=timedelta(minutes=15), now=an_hour_ago)
    barely = SIGNER.mint(
        "user-7", [], ttl=timedelta(minutes=15), now=datetime.now(UTC) - timedelta(seconds=905)
    )

    with pytest.raises(Unauthenticated, match="expired"):
        await VERIFIER.verify(expired)
    assert (await VERIFIER.verify(barely)).subject == "user-7"  # 5 s late: within the skew


async def test_a_token_signed_by_an_unknown_key_is_refused() -> None:
    stranger = new_key()
    other = TokenSigner(stranger, kid=key_id(stranger.public_key()))

    with pytest.raises(Unauthenticated, match="unknown key"):
        await VERIFIER.verify(other.mint("user-7", []))


async def test_a_token_whose_kid_names_a_known_key_but_was_signed_by_another_is_refused() -> None:
    stranger = new_key()
    impostor = TokenSigner(stranger, kid=SIGNER.kid)

    with pytest.raises(Unauthenticated, match="invalid"):
        await VERIFIER.verify(impostor.mint("user-7", [ROLE_ADMIN]))


async def test_a_tampered_payload_is_refused() -> None:
    header, _, signature = _segments(SIGNER.mint("user-7", [ROLE_CUSTOMER]))
    claims = jwt.decode(SIGNER.mint("user-7", [ROLE_CUSTOMER]), options={"verify_signature": False})
    claims["roles"] = [ROLE_ADMIN]

    with pytest.raises(Unauthenticated, match="invalid"):
        await VERIFIER.verify(f"{header}.{_b64(claims)}.{signature}")


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "Bearer x"])
async def test_garbage_is_refused_as_malformed(garbage: str) -> None:
    with pytest.raises(Unauthenticated):
        await VERIFIER.verify(garbage)


async def test_a_token_without_a_jti_is_refused() -> None:
    token = jwt.encode(
        {
            "sub": "user-7",
            "iss": SIGNER.issuer,
            "aud": SIGNER.audience,
            "iat": int(datetime.now(UTC).timestamp()),
            "exp": int((datetime.now(UTC) + timedelta(minutes=5)).timestamp()),
        },
        KEY,
        algorithm="ES256",
        headers={"kid": SIGNER.kid},
    )

    with pytest.raises(Unauthenticated, match="jti"):
        await VERIFIER.verify(token)


def test_the_jwks_round_trip_gives_back_the_public_key_under_its_kid() -> None:
    document = {"keys": [public_jwk(SIGNER.public_key, kid=SIGNER.kid)]}

    keys = keys_from_jwks(document)

    assert list(keys) == [SIGNER.kid]
    assert keys[SIGNER.kid].public_numbers() == SIGNER.public_key.public_numbers()


def test_the_key_id_is_stable_for_one_key_and_differs_between_keys() -> None:
    assert key_id(KEY.public_key()) == key_id(KEY.public_key())
    assert key_id(KEY.public_key()) != key_id(new_key().public_key())


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_the_jwks_cache_refetches_when_an_unknown_kid_appears_after_a_rotation() -> None:
    rotated = new_key()
    rotated_kid = key_id(rotated.public_key())
    published = [public_jwk(SIGNER.public_key, kid=SIGNER.kid)]
    fetches = 0

    async def fetch() -> dict[str, object]:
        nonlocal fetches
        fetches += 1
        return {"keys": list(published)}

    clock = _Clock()
    cache = JwksCache(fetch, min_refresh_interval_s=5, clock=clock)
    assert await cache.get(SIGNER.kid) is not None

    published.append(public_jwk(rotated.public_key(), kid=rotated_kid))
    clock.now = 10

    assert await cache.get(rotated_kid) is not None
    assert fetches == 2


async def test_made_up_kids_cost_at_most_one_fetch_per_refresh_interval() -> None:
    fetches = 0

    async def fetch() -> dict[str, object]:
        nonlocal fetches
        fetches += 1
        return {"keys": [public_jwk(SIGNER.public_key, kid=SIGNER.kid)]}

    clock = _Clock()
    cache = JwksCache(fetch, min_refresh_interval_s=5, clock=clock)
    for attempt in range(50):
        assert await cache.get(f"made-up-{attempt}") is None

    assert fetches == 1


async def test_known_keys_keep_working_while_the_jwks_cannot_be_fetched() -> None:
    healthy = True

    async def fetch() -> dict[str, object]:
        if not healthy:
            raise ConnectionError("user service down")
        return {"keys": [public_jwk(SIGNER.public_key, kid=SIGNER.kid)]}

    clock = _Clock()
    cache = JwksCache(fetch, ttl_s=60, clock=clock)
    assert await cache.get(SIGNER.kid) is not None
    healthy = False
    clock.now = 3600  # long past the TTL

    assert await cache.get(SIGNER.kid) is not None


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("  Bearer   abc  ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_the_bearer_token_is_read_from_the_authorization_header(
    header: str | None, token: str | None
) -> None:
    assert bearer_token(header) == token


# Found by `make mutants`: each test below kills mutants that survived the ones above.


async def test_every_claim_of_a_verified_token_reaches_the_principal() -> None:
    issued = datetime.now(UTC).replace(microsecond=0)
    token = SIGNER.mint("user-7", [ROLE_CUSTOMER], now=issued, extra_claims={"sid": "s-1"})
    claims = jwt.decode(token, options={"verify_signature": False})

    principal = await TokenVerifier(StaticKeys({SIGNER.kid: SIGNER.public_key})).verify(token)

    assert principal.token_id == claims["jti"]
    assert principal.session_id == "s-1"
    assert principal.expires_at == issued + timedelta(minutes=15)
    assert principal.expires_at.tzinfo is UTC


async def test_roles_that_are_not_a_list_of_strings_are_refused() -> None:
    for roles in ("admin", [ROLE_ADMIN, 7]):
        forged = SIGNER.mint("user-7", [], extra_claims={"roles": roles})
        with pytest.raises(Unauthenticated):
            await VERIFIER.verify(forged)


async def test_a_remembered_token_is_refused_once_its_key_is_withdrawn() -> None:
    keys = StaticKeys({SIGNER.kid: SIGNER.public_key})
    verifier = TokenVerifier(keys)
    token = SIGNER.mint("user-7", [ROLE_CUSTOMER])
    await verifier.verify(token)

    del keys.keys[SIGNER.kid]

    with pytest.raises(Unauthenticated):
        await verifier.verify(token)


def test_a_published_key_says_its_algorithm_and_use() -> None:
    jwk = public_jwk(SIGNER.public_key, kid=SIGNER.kid)

    assert (jwk["kid"], jwk["alg"], jwk["use"], jwk["kty"]) == (SIGNER.kid, "ES256", "sig", "EC")


def test_unusable_jwks_entries_are_skipped_and_the_usable_ones_after_them_kept() -> None:
    good = public_jwk(SIGNER.public_key, kid=SIGNER.kid)
    other = new_key()
    entries = [
        {"kty": "RSA", "kid": "rsa", "n": "x", "e": "AQAB"},  # another key type
        {**public_jwk(other.public_key(), kid="wrong-alg"), "alg": "ES384"},
        {**public_jwk(other.public_key(), kid="x"), "x": "not-a-point"},  # unreadable
        {k: v for k, v in public_jwk(other.public_key(), kid="-").items() if k != "kid"},
        good,
    ]

    assert set(keys_from_jwks({"keys": entries})) == {SIGNER.kid}
    assert keys_from_jwks({}) == {}


async def test_a_known_key_is_served_from_the_cache_until_the_ttl_then_refetched() -> None:
    fetches = 0

    async def fetch() -> dict[str, object]:
        nonlocal fetches
        fetches += 1
        return {"keys": [public_jwk(SIGNER.public_key, kid=SIGNER.kid)]}

    clock = _Clock()
    cache = JwksCache(fetch, ttl_s=60, min_refresh_interval_s=5, clock=clock)
    for moment in (0, 10, 59):
        clock.now = moment
        assert await cache.get(SIGNER.kid) is not None
    assert fetches == 1

    clock.now = 61
    assert await cache.get(SIGNER.kid) is not None
    assert fetches == 2


async def test_a_token_verifies_again_on_every_request_it_comes_with() -> None:
    # A client sends one token with every request: the second and later ones are answered
    # from the verifier's memory and must give the same caller as the first.
    verifier = TokenVerifier(StaticKeys({SIGNER.kid: SIGNER.public_key}))
    token = SIGNER.mint("user-7", [ROLE_ADMIN])

    principals = [await verifier.verify(token) for _ in range(3)]

    assert [p.subject for p in principals] == ["user-7"] * 3
    assert all(p.is_admin for p in principals)


def test_a_published_key_that_does_not_name_its_algorithm_is_used() -> None:
    # RFC 7517 makes "alg" optional; an EC key without it still verifies ES256 tokens.
    jwk = {k: v for k, v in public_jwk(SIGNER.public_key, kid=SIGNER.kid).items() if k != "alg"}

    assert set(keys_from_jwks({"keys": [jwk]})) == {SIGNER.kid}


async def test_a_token_without_roles_is_a_caller_with_no_rights() -> None:
    now = datetime.now(UTC)
    claims = {
        "sub": "user-7",
        "iss": SIGNER.issuer,
        "aud": SIGNER.audience,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "jti": "j-1",
    }
    token = jwt.encode(claims, KEY, algorithm="ES256", headers={"kid": SIGNER.kid})

    principal = await TokenVerifier(StaticKeys({SIGNER.kid: SIGNER.public_key})).verify(token)

    assert principal.subject == "user-7"
    assert principal.roles == frozenset()
    assert not principal.is_admin


async def test_a_token_issued_outside_a_session_names_no_session() -> None:
    # Service tokens carry no sid: no session of a user may be taken for theirs.
    token = SIGNER.mint("service:payment", [ROLE_SERVICE])

    principal = await TokenVerifier(StaticKeys({SIGNER.kid: SIGNER.public_key})).verify(token)

    assert principal.session_id == ""


async def test_a_known_key_is_served_from_the_cache_on_a_real_monotonic_clock() -> None:
    # time.monotonic() is far from zero on a running machine; the TTL counts from the fetch.
    fetches = 0

    async def fetch() -> dict[str, object]:
        nonlocal fetches
        fetches += 1
        return {"keys": [public_jwk(SIGNER.public_key, kid=SIGNER.kid)]}

    clock = _Clock()
    clock.now = 86_400.0
    cache = JwksCache(fetch, ttl_s=60, min_refresh_interval_s=5, clock=clock)
    for later in (0, 10, 59):
        clock.now = 86_400.0 + later
        assert await cache.get(SIGNER.kid) is not None

    assert fetches == 1


async def test_a_withdrawn_key_is_trusted_for_the_default_ttl_and_not_a_moment_longer() -> None:
    # How long a key user_svc stopped publishing still admits tokens: 300 s from the fetch.
    published = [public_jwk(SIGNER.public_key, kid=SIGNER.kid)]

    async def fetch() -> dict[str, object]:
        return {"keys": list(published)}

    clock = _Clock()
    clock.now = 86_400.0
    cache = JwksCache(fetch, clock=clock)
    assert await cache.get(SIGNER.kid) is not None
    published.clear()

    clock.now = 86_400.0 + 300
    assert await cache.get(SIGNER.kid) is not None
    clock.now = 86_400.0 + 300.5
    assert await cache.get(SIGNER.kid) is None


async def test_a_new_key_is_looked_up_again_exactly_the_default_refresh_interval_later() -> None:
    # user_svc signs with a new key 10 s after creating it and publishes it within 3 s
    # (README "Keys"): that holds only if a verifier may refetch after 5 s, not later.
    rotated = new_key()
    rotated_kid = key_id(rotated.public_key())
    published = [public_jwk(SIGNER.public_key, kid=SIGNER.kid)]

    async def fetch() -> dict[str, object]:
        return {"keys": list(published)}

    clock = _Clock()
    clock.now = 86_400.0
    cache = JwksCache(fetch, clock=clock)
    assert await cache.get(SIGNER.kid) is not None
    published.append(public_jwk(rotated.public_key(), kid=rotated_kid))

    clock.now = 86_400.0 + 4.5
    assert await cache.get(rotated_kid) is None
    clock.now = 86_400.0 + 5
    assert await cache.get(rotated_kid) is not None


async def test_lookups_that_queue_behind_a_failing_fetch_share_it_and_keep_the_known_keys() -> None:
    # Past the TTL with user_svc unreachable, every request looks its key up at once. Each one
    # fetching in turn would hold the last request for the sum of all their timeouts.
    reachable = True
    fetches = 0

    async def fetch() -> dict[str, object]:
        nonlocal fetches
        fetches += 1
        if not reachable:
            await asyncio.sleep(0)  # waiting on the network: the other lookups queue up
            raise TimeoutError("user service unreachable")
        return {"keys": [public_jwk(SIGNER.public_key, kid=SIGNER.kid)]}

    clock = _Clock()
    clock.now = 86_400.0
    cache = JwksCache(fetch, ttl_s=60, clock=clock)
    assert await cache.get(SIGNER.kid) is not None
    reachable = False
    clock.now = 86_400.0 + 600

    found = await asyncio.gather(*(cache.get(SIGNER.kid) for _ in range(20)))

    assert all(key is not None for key in found)
    assert fetches == 2
