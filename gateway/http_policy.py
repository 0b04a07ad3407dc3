"""Headers every answer carries: security headers, and CORS for the configured origins only.

Caching headers are gateway/http_cache.py's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

# Swagger UI styles itself inline and draws icons from data: URIs; everything else is 'self'.
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
# The status page: its own script, stylesheet and summary, nothing inline, nothing foreign.
STATUS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
# JSON is never a document to render: nothing may load, nothing may frame it.
API_CSP = "default-src 'none'; frame-ancestors 'none'"

ALLOWED_REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "Request-Timeout",
    "X-Request-Id",
    "traceparent",
    "tracestate",
)
EXPOSED_HEADERS = (
    "X-Request-Id",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "Location",
)
_METHODS = "GET, POST, PUT, PATCH, DELETE"


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: on every response, whoever made it."""
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("X-Frame-Options", "DENY")
    docs = request.path == "/docs" or request.path.startswith("/docs/")
    policy = DOCS_CSP if docs else STATUS_CSP if request.path == "/status" else API_CSP
    headers.setdefault("Content-Security-Policy", policy)


class Cors:
    """CORS for a list of origins (``*``: any); with none, no CORS header is ever sent.

    Tokens travel in the Authorization header, not cookies: no credentials mode is needed.
    """

    def __init__(self, allowed_origins: Iterable[str]) -> None:
        origins = {o.rstrip("/") for o in allowed_origins}
        self._any = "*" in origins
        self._origins = frozenset(origins - {"*"})

    def allows(self, origin: str | None) -> bool:
        return origin is not None and (self._any or origin in self._origins)

    def middleware(self) -> Middleware:
        """Answers preflight requests from allowed origins before routing refuses OPTIONS."""

        @web.middleware
        async def cors_preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
            origin = request.headers.get("Origin")
            if (
                request.method == "OPTIONS"
                and "Access-Control-Request-Method" in request.headers
                and self.allows(origin)
            ):
                return web.Response(
                    status=204,
                    headers={
                        "Access-Control-Allow-Methods": _METHODS,
                        "Access-Control-Allow-Headers": ", ".join(ALLOWED_REQUEST_HEADERS),
                        "Access-Control-Max-Age": "600",
                    },
                )
            return await handler(request)

        return cors_preflight

    def on_prepare(self) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
        async def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
            origin = request.headers.get("Origin")
            if not (self._any or self._origins):
                return
            response.headers.add("Vary", "Origin")
            if self.allows(origin):
                assert origin is not None
                response.headers["Access-Control-Allow-Origin"] = origin
                response.headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_HEADERS)

        return cors_headers
