"""HTTP caching (RFC 9111) of the public catalog reads, the way a CDN or a browser can use it.

A GET of a route whose RPC is ``ACCESS_PUBLIC``, asked without an ``Authorization`` header, is
the same for everyone: it is ``public`` with a short ``max-age`` and a
``stale-while-revalidate`` window, carries a strong ``ETag`` and answers a matching
``If-None-Match`` with ``304 Not Modified``. Everything else the RPC routes answer is personal
or a change, and is never stored: ``private, no-store``; a failed public read is ``no-store``
(a 404 must not outlive the product's creation).

The validator of a shared answer is a hash of its body, not the resource's AIP-154 ``etag``:
a product's etag versions what an admin edits, and stock reservations move ``stock`` without
a new version (product_svc/store.py), so a 304 on the etag would keep showing stale stock.
The body holds the etag too, so every edit changes the hash. Answers to token bearers keep the
resource's etag as ``ETag``, for ``If-Match`` on a later change (gateway/conditional.py).
"""

from __future__ import annotations

import base64
import hashlib

from aiohttp import web
from aiohttp.helpers import ETAG_ANY

from gateway.routes import Route

AUTHORIZATION_HEADER = "Authorization"
PERSONAL = "private, no-store"
UNCACHEABLE = "no-store"

# What the answer to a request depends on besides its URL: a token may change it (an admin
# sees who changed a price), and a token bearer's answer is private.
VARY = AUTHORIZATION_HEADER

# A public GET whose RPC declares (microcommerce.common.v1.revalidate_every_use), next to the
# RPC in its proto (the JWKS: a copy kept for max-age + stale-while-revalidate could outlive
# the lead a new signing key is published with before it signs, and verifiers behind a CDN
# would refuse valid tokens): caches keep it but revalidate every use (a 304 while unchanged).
REVALIDATED = "public, no-cache"

# How a request's answer may be kept, decided by the handler that knows its route.
_KEEPING = web.RequestKey("mc_cache_keeping", str)


class HttpCache:
    """The ``Cache-Control`` of the public reads; one per gateway, from its settings."""

    def __init__(self, max_age_s: int, stale_while_revalidate_s: int) -> None:
        self.shared = (
            f"public, max-age={max_age_s}, stale-while-revalidate={stale_while_revalidate_s}"
        )

    def shareable(self, route: Route, request: web.Request) -> bool:
        """Whether the answer is everyone's: a public GET asked without credentials.

        Credentials that fail verification are served anonymously, but the answer is still
        not shared: a cache that stored it under a bearer's request would break ``Vary``.
        """
        return shared_read(route) and AUTHORIZATION_HEADER not in request.headers

    def mark(self, route: Route, request: web.Request) -> None:
        """Remember, before the call, how any answer to this request may be kept."""
        if not self.shareable(route, request):
            request[_KEEPING] = PERSONAL
        elif route.revalidate_every_use:
            request[_KEEPING] = REVALIDATED
        else:
            request[_KEEPING] = self.shared

    def answer(self, request: web.Request, body: bytes, headers: dict[str, str]) -> web.Response:
        """A shared 200 with its validator, or 304 when the client's copy is still current."""
        etag = strong_etag(body)
        headers = {**headers, "ETag": f'"{etag}"'}
        if not_modified(request, etag):
            # RFC 9110 §15.4.5: a 304 carries the validator and the caching headers the 200
            # would have; the request's keeping adds Cache-Control and Vary when it is sent.
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, headers=headers, content_type="application/json")


def shared_read(route: Route) -> bool:
    """Whether the route's anonymous answers are shared: a GET of an ``ACCESS_PUBLIC`` RPC."""
    return route.public and route.http_method == "GET"


def strong_etag(body: bytes) -> str:
    """A strong validator of the exact bytes: 128 bits of SHA-256, URL-safe base64."""
    digest = hashlib.sha256(body).digest()[:16]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def not_modified(request: web.Request, etag: str) -> bool:
    """``If-None-Match`` with RFC 9110's weak comparison (§8.8.3.2): ``W/"x"`` matches ``"x"``.

    aiohttp parses the header (a malformed one reads as absent, so the full answer is sent).
    """
    tags = request.if_none_match
    if not tags:
        return False
    return any(tag.value == ETAG_ANY or tag.value == etag for tag in tags)


async def cache_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the ``Cache-Control`` (and ``Vary``) of every answer.

    A request bearing a token is personal whatever route served it; an RPC route's answer
    follows what its handler marked; other routes (meta, docs) set their own or none.
    """
    headers = response.headers
    if AUTHORIZATION_HEADER in request.headers:
        headers["Cache-Control"] = PERSONAL
        headers.add("Vary", VARY)
        return
    keeping = request.get(_KEEPING)
    if keeping is None:
        return
    if keeping == PERSONAL:
        headers["Cache-Control"] = PERSONAL
    elif response.status in (200, 304):
        headers["Cache-Control"] = keeping
        headers.add("Vary", VARY)
    else:
        headers["Cache-Control"] = UNCACHEABLE
