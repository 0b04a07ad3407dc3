"""Opaque page tokens (AIP-158): a keyset cursor bound to the request's filters and signed.

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
from collections.abc import Sequence

from google.protobuf.message import DecodeError

from common.errors import InvalidArgument
from microcommerce.common.v1.pagination_pb2 import PageCursor

_TAG_BYTES = 16
_MAX_TOKEN_LENGTH = 2048


class PageTokens:
    """Issues and checks page tokens with one secret key (the same across replicas)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the page token key needs at least 16 bytes")
        self._key = key

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
