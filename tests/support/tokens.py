"""Access tokens for tests: a test signing key, its key source, tokens for each kind of caller."""

from __future__ import annotations

from datetime import timedelta

from common.tokens import (
    ROLE_ADMIN,
    ROLE_CUSTOMER,
    ROLE_SERVICE,
    SERVICE_SUBJECT_PREFIX,
    StaticKeys,
    TokenSigner,
    key_id,
    new_key,
)

_KEY = new_key()
SIGNER = TokenSigner(_KEY, kid=key_id(_KEY.public_key()))
# Hand this to create_app / the services' wiring so they trust SIGNER's tokens.
KEYS = StaticKeys({SIGNER.kid: SIGNER.public_key})


def customer_token(user_id: str = "user-1", *, ttl: timedelta = timedelta(minutes=15)) -> str:
    return SIGNER.mint(user_id, [ROLE_CUSTOMER], ttl=ttl)


def admin_token(user_id: str = "admin-1") -> str:
    return SIGNER.mint(user_id, [ROLE_CUSTOMER, ROLE_ADMIN])


def service_token(service: str = "payment") -> str:
    return SIGNER.mint(f"{SERVICE_SUBJECT_PREFIX}{service}", [ROLE_SERVICE])


def admin_headers() -> dict[str, str]:
    """A fresh admin bearer header, minted when the test runs.

    Minted at import time, a module's token expired before its tests ran once the whole suite
    took longer than the token's 15 minutes.
    """
    return bearer(admin_token())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
