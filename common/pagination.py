"""Pagination for every list RPC (AIP-158): page sizes, and signed keyset page tokens.

Every list RPC takes ``optional int32 page_size`` and ``string page_token`` and answers with
``next_page_token``: absent or 0 means the default of 20, above 100 is coerced to 100 (AIP-158
says coerce, not refuse), negative is INVALID_ARGUMENT on ``page_size``.

The token is a ``microcommerce.common.v1.PageCursor`` (the digest of the filters and the last
item's sort key) followed by an HMAC-SHA256 tag, URL-safe base64. A token edited by hand fails
the tag; a token presented with other filters fails the digest; both are INVALID_ARGUMENT on
``page_token``, never a silently wrong page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping, Sequence

from google.protobuf.message import DecodeError
from pydantic import SecretStr

from common.errors import InvalidArgument
from microcommerce.common.v1.pagination_pb2 import PageCursor

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

_TAG_BYTES = 16
_MAX_TOKEN_LENGTH = 2048
_MIN_KEY_BYTES = 16


def page_size(requested: int | None) -> int:
    """The number of items to return for a request's ``page_size`` (AIP-158)."""
    if requested is None or requested == 0:
        return DEFAULT_PAGE_SIZE
    if requested < 0:
        raise InvalidArgument("page_size must not be negative", field="page_size")
    return min(requested, MAX_PAGE_SIZE)


def fingerprint(rpc: str, filters: Mapping[str, object]) -> str:
    """What a token is bound to: the list RPC and every filter and ordering of the request.

    ``rpc`` keeps a token of one listing from being read by another that happens to share
    filter names; the filters are written canonically (sorted keys) so their order in the
    request does not matter.
    """
    return json.dumps([rpc, dict(filters)], sort_keys=True, separators=(",", ":"), default=str)


class PageTokens:
    """Issues and checks page tokens with one secret key (the same across replicas)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < _MIN_KEY_BYTES:
            raise ValueError(f"the page token key needs at least {_MIN_KEY_BYTES} bytes")
        self._key = key

    @classmethod
    def for_service(cls, secret: SecretStr | str | None, service: str) -> PageTokens:
        """The tokens of one service, keyed from the deployment's shared secret.

        Each service derives its own key (HMAC of the service name), so a token can only be
        read by the service that issued it. Without a secret the process draws a random key:
        its tokens are then refused by other replicas and after a restart, which is why
        production requires ``MC_PAGE_TOKEN_KEY``.
        """
        if secret is None:
            return cls(secrets.token_bytes(32))
        if isinstance(secret, SecretStr):
            secret = secret.get_secret_value()
        if len(secret.encode()) < _MIN_KEY_BYTES:
            raise ValueError(f"the page token key needs at least {_MIN_KEY_BYTES} bytes")
        return cls(hmac.new(secret.encode(), service.encode(), hashlib.sha256).digest())

    def issue(self, fingerprint: str, last_key: Sequence[str]) -> str:
        cursor = PageCursor(filter_digest=_digest(fingerprint), last_key=list(last_key))
        payload = cursor.SerializeToString()
        return base64.urlsafe_b64encode(payload + self._tag(payload)).decode().rstrip("=")

    def read(self, token: str, fingerprint: str, *, key_length: int) -> list[str] | None:
        """The last key of the previous page; None for an empty token (the first page)."""
        if not token:
            return None
        if len(token) > _MAX_TOKEN_LENGTH:
            raise _invalid()
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise _invalid() from None
        payload, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
        if len(raw) <= _TAG_BYTES or not hmac.compare_digest(tag, self._tag(payload)):
            raise _invalid()
        cursor = PageCursor()
        try:
            cursor.ParseFromString(payload)
        except DecodeError:
            raise _invalid() from None
        if not hmac.compare_digest(cursor.filter_digest, _digest(fingerprint)):
            raise InvalidArgument(
                "page_token was issued for other filters or another order; "
                "repeat the first request without page_token",
                field="page_token",
            )
        if len(cursor.last_key) != key_length:
            raise _invalid()
        return list(cursor.last_key)

    def _tag(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_TAG_BYTES]


def _digest(fingerprint: str) -> bytes:
    return hashlib.sha256(fingerprint.encode()).digest()[:16]


def _invalid() -> InvalidArgument:
    return InvalidArgument("page_token is not a token this service issued", field="page_token")
