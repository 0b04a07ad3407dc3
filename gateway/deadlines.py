"""A request's total deadline: the route's setting, shortened (never lengthened) by the client."""

from __future__ import annotations

import re

from aiohttp import web

from gateway.problems import invalid_argument

# "2s", "500ms", "1.5" (seconds); also gRPC's own form, "<digits><H|M|S|m|u|n>".
REQUEST_TIMEOUT_HEADER = "Request-Timeout"
GRPC_TIMEOUT_HEADER = "grpc-timeout"
_FRIENDLY = re.compile(r"\s*(\d{1,9}(?:\.\d{1,6})?)\s*(ms|s)?\s*")
_GRPC = re.compile(r"(\d{1,8})([HMSmun])")
_GRPC_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def client_timeout(request: web.Request) -> float | None:
    """The deadline the client asked for, in seconds, or None; 400 when it cannot be read."""
    friendly = request.headers.get(REQUEST_TIMEOUT_HEADER)
    if friendly is not None:
        match = _FRIENDLY.fullmatch(friendly)
        if match is None:
            raise invalid_argument(
                f"{REQUEST_TIMEOUT_HEADER} must be seconds or milliseconds, e.g. 2s or 500ms."
            )
        value = float(match[1])
        return value / 1000 if match[2] == "ms" else value
    wire = request.headers.get(GRPC_TIMEOUT_HEADER)
    if wire is not None:
        match = _GRPC.fullmatch(wire.strip())
        if match is None:
            raise invalid_argument(f"{GRPC_TIMEOUT_HEADER} must be like 2S or 500m.")
        return int(match[1]) * _GRPC_UNITS[match[2]]
    return None


def request_timeout(request: web.Request, configured: float) -> float:
    """The deadline of this request: the configured one, or the client's when shorter."""
    asked = client_timeout(request)
    return configured if asked is None else min(configured, asked)
