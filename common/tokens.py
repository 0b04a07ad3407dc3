"""Access tokens: ES256 JWTs minted by user_svc, verified by every service and the gateway.

One algorithm (ES256), one issuer and one audience are accepted, so ``alg: none``, an HMAC
token signed with a public key, or a token meant for another system all fail the same way:
``Unauthenticated``. Keys are found by the ``kid`` header in a ``KeySource``; the usual source
is user_svc's JWKS (``JwksCache``), refreshed when an unknown ``kid`` shows up (rotation).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from common import clock
from common.errors import Unauthenticated
from common.logging import get_logger

# Re-exported: callers that verify tokens name roles from here.
from common.roles import ROLE_ADMIN as ROLE_ADMIN
from common.roles import ROLE_CUSTOMER as ROLE_CUSTOMER
from common.roles import ROLE_SERVICE as ROLE_SERVICE
from common.roles import SERVICE_SUBJECT_PREFIX as SERVICE_SUBJECT_PREFIX

_log = get_logger(__name__)

ALGORITHM = "ES256"
ISSUER = "microcommerce-user"
AUDIENCE = "microcommerce"
# Clocks of different machines disagree a little; a token is still valid this long after exp.
DEFAULT_LEEWAY_S = 30

PublicKey = ec.EllipticCurvePublicKey
PrivateKey = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (``sub`` is the user id) or a service (``service:<name>``)."""

    subject: str
    roles: frozenset[str]
    token_id: str = ""
    expires_at: datetime | None = None
    # The user_svc session the token was issued for (``sid`` claim); empty for service tokens.
    session_id: str = ""

    @property
    def is_admin(self) -> bool:
        return ROLE_ADMIN in self.roles

    @property
    def is_service(self) -> bool:
        return ROLE_SERVICE in self.roles and self.subject.startswith(SERVICE_SUBJECT_PREFIX)

    @property
    def user_id(self) -> str:
        """The user's id; a service principal has none and gets ``Unauthenticated``."""
        if self.is_service:
            raise Unauthenticated("this call needs a user's token, not a service token")
        return self.subject


def new_key() -> PrivateKey:
    """A fresh P-256 signing key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_id(public_key: PublicKey) -> str:
    """A stable ``kid`` derived from the key itself (RFC 7638 thumbprint, truncated)."""
    jwk = ECAlgorithm.to_jwk(public_key, as_dict=True)
    canonical = f'{{"crv":"{jwk["crv"]}","kty":"EC","x":"{jwk["x"]}","y":"{jwk["y"]}"}}'
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:16]


def public_jwk(public_key: PublicKey, *, kid: str) -> dict[str, str]:
    """The public key as a JWK for the JWKS document."""
    jwk: dict[str, str] = ECAlgorithm.to_jwk(public_key, as_dict=True)
    return {
        "kty": jwk["kty"],
        "crv": jwk["crv"],
        "x": jwk["x"],
        "y": jwk["y"],
        "kid": kid,
        "alg": ALGORITHM,
        "use": "sig",
    }


def keys_from_jwks(document: Mapping[str, Any]) -> dict[str, PublicKey]:
    """Public keys by ``kid`` from a JWKS document; entries that are not ES256 keys are skipped."""
    keys: dict[str, PublicKey] = {}
    for entry in document.get("keys", ()):
        if entry.get("kty") != "EC" or entry.get("alg", ALGORITHM) != ALGORITHM:
            continue
        try:
            key = ECAlgorithm.from_jwk(dict(entry))
        except (jwt.InvalidKeyError, ValueError, KeyError) as error:
            _log.warning("jwks_entry_skipped", kid=entry.get("kid"), error=str(error))
            continue
        if isinstance(key, ec.EllipticCurvePublicKey) and entry.get("kid"):
            keys[str(entry["kid"])] = key
    return keys


@dataclass(frozen=True)
class TokenSigner:
    """Mints access tokens with one private key; user_svc holds it, tests make their own."""

    private_key: PrivateKey
    kid: str
    issuer: str = ISSUER
    audience: str = AUDIENCE

    def mint(
        self,
        subject: str,
        roles: Iterable[str],
        *,
        ttl: timedelta = timedelta(minutes=15),
        now: datetime | None = None,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        issued = now or clock.now()
        claims: dict[str, Any] = {
            "sub": subject,
            "roles": sorted(set(roles)),
            "iss": self.issuer,
            "aud": self.audience,
            "iat": int(issued.timestamp()),
            "exp": int((issued + ttl).timestamp()),
            "jti": uuid.uuid4().hex,
            **(extra_claims or {}),
        }
        return jwt.encode(claims, self.private_key, algorithm=ALGORITHM, headers={"kid": self.kid})

    @property
    def public_key(self) -> PublicKey:
        return self.private_key.public_key()


class KeySource(Protocol):
    """Where a verifier finds public keys by ``kid``."""

    async def get(self, kid: str) -> PublicKey | None:
        """The key with this ``kid``, looking again at the source if it is not known yet."""


@dataclass
class StaticKeys:
    """Keys known in-process: user_svc's own key ring, and tests."""

    keys: dict[str, PublicKey] = field(default_factory=dict)

    async def get(self, kid: str) -> PublicKey | None:
        return self.keys.get(kid)


JwksFetcher = Callable[[], Awaitable[Mapping[str, Any]]]


class JwksCache:
    """user_svc's JWKS, fetched on first use, kept ``ttl_s`` and refetched on an unknown kid.

    A storm of tokens with made-up ``kid`` values must not become a storm of fetches: an
    unknown kid triggers at most one fetch per ``min_refresh_interval_s``. When user_svc cannot
    be reached, the keys already known keep working.
    """

    def __init__(
        self,
        fetch: JwksFetcher,
        *,
        ttl_s: float = 300.0,
        min_refresh_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl_s = ttl_s
        self._min_refresh_interval_s = min_refresh_interval_s
        self._clock = clock
        self._keys: dict[str, PublicKey] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._fetches_ended = 0
        self._lock = asyncio.Lock()

    async def get(self, kid: str) -> PublicKey | None:
        now = self._clock()
        stale = self._fetched_at is None or now - self._fetched_at > self._ttl_s
        if kid in self._keys and not stale:
            return self._keys[kid]
        may_refresh = self._attempted_at is None or (
            now - self._attempted_at >= self._min_refresh_interval_s
        )
        if stale or may_refresh:
            await self._refresh()
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        seen = self._fetches_ended
        async with self._lock:
            # A fetch ended while this task waited for the lock: it was under way when this
            # task asked, so its answer serves this task too. Fetching again in turn would
            # hold every request queued behind an unreachable user_svc for the sum of their
            # time-outs.
            if self._fetches_ended != seen:
                return
            now = self._clock()
            self._attempted_at = now
            try:
                document = await self._fetch()
            except Exception as error:
                _log.warning("jwks_fetch_failed", error=type(error).__name__, detail=str(error))
                return
            finally:
                self._fetches_ended += 1
            self._keys = keys_from_jwks(document)
            self._fetched_at = now


class TokenVerifier:
    """Turns a bearer token into a ``Principal`` or raises ``Unauthenticated``.

    An ES256 signature check costs ~0.1 ms, and a client sends the same token with every
    request for its whole lifetime, so tokens that verified are remembered (up to
    ``cache_size``, least recently used out). A remembered token is accepted again only while
    it has not expired and its ``kid`` still resolves to the same public key, so a retired or
    withdrawn key ends its tokens here too.
    """

    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str = ISSUER,
        audience: str = AUDIENCE,
        leeway_s: float = DEFAULT_LEEWAY_S,
        cache_size: int = 10_000,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway_s = leeway_s
        self._cache_size = cache_size
        self._verified: OrderedDict[str, tuple[Principal, str, PublicKey]] = OrderedDict()

    async def verify(self, token: str) -> Principal:
        remembered = self._verified.get(token)
        if remembered is not None:
            principal, kid, key = remembered
            expires = principal.expires_at.timestamp() if principal.expires_at else 0.0
            if time.time() <= expires + self._leeway_s and await self._keys.get(kid) == key:
                self._verified.move_to_end(token)
                return principal
            self._verified.pop(token, None)
        principal, kid, key = await self._verify_signed(token)
        if self._cache_size > 0:
            self._verified[token] = (principal, kid, key)
            if len(self._verified) > self._cache_size:
                self._verified.popitem(last=False)
        return principal

    async def _verify_signed(self, token: str) -> tuple[Principal, str, PublicKey]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise Unauthenticated("malformed access token") from error
        # Checked before any key is looked at: the key type decides nothing.
        if header.get("alg") != ALGORITHM:
            raise Unauthenticated(f"access token algorithm must be {ALGORITHM}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("access token has no key id")
        key = await self._keys.get(kid)
        if key is None:
            raise Unauthenticated("access token signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway_s,
                options={"require": ["sub", "iat", "exp", "iss", "aud", "jti"]},
            )
        except jwt.ExpiredSignatureError as error:
            raise Unauthenticated("access token expired") from error
        except jwt.PyJWTError as error:
            raise Unauthenticated(f"invalid access token: {error}") from error
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise Unauthenticated("invalid access token: roles must be a list of strings")
        principal = Principal(
            subject=str(claims["sub"]),
            roles=frozenset(roles),
            token_id=str(claims["jti"]),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
            session_id=str(claims.get("sid", "")),
        )
        return principal, kid, key


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value, None when absent or not Bearer."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
