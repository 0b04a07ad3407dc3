"""The gateway's access log: one JSON line per request, without credentials or bodies."""

from __future__ import annotations

import logging

from aiohttp import web

from gateway.auth import PRINCIPAL_KEY

# The standard-library logger, not a structlog one: common.logging renders both through the
# same formatter (the same fields, context and order), and this line is written once per
# request, where structlog's bound-logger and event-processing pass before the standard
# library's own came to about a fifth of the line's cost (bench/README.md).
_log = logging.getLogger("gateway.access")


def route_template(request: web.Request) -> str:
    """The matched route's template (``/v1/orders/{id}``): bounded, and holds no ids or secrets."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def log_request(request: web.Request, status: int, seconds: float) -> None:
    """Log method, route template, status, duration and user id of an answered request.

    Never the raw path or query (they may carry ids or tokens a client put there), never
    headers or bodies (tokens, passwords, card numbers). Called by the gateway's outermost
    middleware (``gateway.middleware.observing_middleware``).
    """
    if not _log.isEnabledFor(logging.INFO):
        return
    principal = request.get(PRINCIPAL_KEY)
    _log.info(
        "request",
        extra={
            "method": request.method,
            "route": route_template(request),
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "user_id": principal.subject if principal is not None else None,
        },
    )
