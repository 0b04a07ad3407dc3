"""Cross-cutting request handling: the request id, the body size limit, errors as problem+json."""

from __future__ import annotations

import time
from http import HTTPStatus

import grpc
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from structlog.contextvars import bind_contextvars, reset_contextvars

from common.logging import get_logger
from common.request_context import accept_request_id, request_id_var
from common.telemetry import continue_trace, end_trace
from gateway.access_log import log_request
from gateway.client_address import client_address
from gateway.metrics import GatewayMetrics
from gateway.problems import ProblemError

_log = get_logger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID = web.RequestKey("request_id", str)

# The gRPC code a problem made by the gateway itself carries (an HTTP status with no upstream
# call behind it). 405 is UNIMPLEMENTED as in grpc-gateway; 413 is RESOURCE_EXHAUSTED as gRPC
# itself answers a message over its size limit.
_CODE_OF_HTTP_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# Headers of an aiohttp HTTP error worth keeping on the problem that replaces it.
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


def request_id(request: web.BaseRequest) -> str:
    """The request's id: the caller's ``X-Request-Id`` when it is a plain token, else a new one.

    Decided once per request and remembered, so the log lines, the upstream metadata, the
    problem body and the response header all carry the same id.
    """
    existing = request.get(_REQUEST_ID)
    if existing is None:
        existing = accept_request_id(request.headers.get(REQUEST_ID_HEADER))
        request[_REQUEST_ID] = existing
    return existing


def observing_middleware(metrics: GatewayMetrics) -> Middleware:
    """The outermost middleware: request id and client address in the log context, then the
    request's metrics and access-log line once it is answered.

    One middleware rather than three: each aiohttp middleware is a further coroutine and
    partial per request, and these three wrap every request the same way.
    """

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        # aiohttp serves the requests of one keep-alive connection in one task: reset, or the
        # id would leak into the next request's log lines.
        token = request_id_var.set(request_id(request))
        # Without the aiohttp instrumentation (no exporter), the caller's trace id still
        # reaches the log lines; with it, its server span is current and this does nothing.
        headers = request.headers
        trace_token = continue_trace(headers.get("traceparent"), headers.get("tracestate"))
        started = time.perf_counter()
        status = 500
        answered = False
        try:
            # bind/reset rather than bound_contextvars(): the same restore of the previous
            # value, without a generator and a scan of every bound variable per request.
            bound = bind_contextvars(client_address=client_address(request))
            try:
                response = await handler(request)
                status, answered = response.status, True
                return response
            except web.HTTPException as answer:  # redirects and the like, as answers
                status, answered = answer.status, True
                raise
            finally:
                seconds = time.perf_counter() - started
                if answered:  # problem answers included: the problem middleware is inside
                    metrics.observe_request(request, status, seconds)
                log_request(request, status, seconds)
                reset_contextvars(**bound)
        finally:
            end_trace(trace_token)
            request_id_var.reset(token)

    return observe


async def stamp_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response carries ``X-Request-Id``, whoever made it (a
    handler, a static file, aiohttp's own error pages)."""
    response.headers[REQUEST_ID_HEADER] = request_id(request)


def body_limit_middleware(max_bytes: int) -> Middleware:
    """Refuse a declared body over ``max_bytes`` before reading it.

    A chunked body has no length to check up front; ``web.Application(client_max_size=...)``
    stops it while it is read, and the problem middleware turns that into the same 413.
    """

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > max_bytes:
            raise _too_large(max_bytes)
        return await handler(request)

    return limit


def _too_large(max_bytes: int) -> ProblemError:
    return ProblemError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"The request body is larger than {max_bytes} bytes.",
        status=HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    )


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every error as problem+json: ours, aiohttp's (404, 405, 413...) and the
    unexpected, which is logged and answered with a bare 500."""
    try:
        return await handler(request)
    except ProblemError as problem:
        return problem.response(request_id(request))
    except web.HTTPException as error:
        if error.status < 400:
            raise  # redirects and the like are answers, not errors
        return _from_http_error(request, error).response(request_id(request))
    except Exception:
        _log.exception("request_failed", method=request.method, path=request.path)
        internal = ProblemError(grpc.StatusCode.INTERNAL, "unexpected error")
        return internal.response(request_id(request))


def _from_http_error(request: web.Request, error: web.HTTPException) -> ProblemError:
    headers = {name: error.headers[name] for name in _KEPT_HEADERS if name in error.headers}
    status = HTTPStatus(error.status)
    default_text = f"{error.status}: {error.reason}"
    if isinstance(error, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(error.allowed_methods))
        detail = f"{request.method} is not allowed here; allowed: {allowed}."
    elif isinstance(error, web.HTTPNotFound) and error.text in (None, default_text):
        detail = f"No resource at {request.path}."
    elif error.text and error.text != default_text:
        detail = error.text  # e.g. the sizes of a body over client_max_size
    else:
        detail = status.description
    code = _CODE_OF_HTTP_STATUS.get(
        error.status,
        grpc.StatusCode.INVALID_ARGUMENT if error.status < 500 else grpc.StatusCode.INTERNAL,
    )
    return ProblemError(code, detail, status=status, headers=headers)
