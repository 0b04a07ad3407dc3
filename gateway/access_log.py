"""The gateway's access log: one JSON line per request, without credentials or bodies."""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler

from common.logging import get_logger
from gateway.auth import PRINCIPAL_KEY

_log = get_logger("gateway.access")


def route_template(request: web.Request) -> str:
    """The matched route's template (``/v1/orders/{id}``): bounded, and holds no ids or secrets."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Log method, route template, status, duration and user id once the request is answered.

    Never the raw path or query (they may carry ids or tokens a client put there), never
    headers or bodies (tokens, passwords, card numbers).
    """
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as answer:  # redirects and the like, raised as answers
        status = answer.status
        raise
    finally:
        principal = request.get(PRINCIPAL_KEY)
        _log.info(
            "request",
            method=request.method,
            route=route_template(request),
            status=status,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
            user_id=principal.subject if principal is not None else None,
        )
