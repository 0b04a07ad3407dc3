"""The gateway's access log: one JSON line per request, without credentials or bodies."""

from __future__ import annotations

from aiohttp import web

from common.logging import get_logger
from gateway.auth import PRINCIPAL_KEY

_log = get_logger("gateway.access")


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
    principal = request.get(PRINCIPAL_KEY)
    _log.info(
        "request",
        method=request.method,
        route=route_template(request),
        status=status,
        duration_ms=round(seconds * 1000, 3),
        user_id=principal.subject if principal is not None else None,
    )
