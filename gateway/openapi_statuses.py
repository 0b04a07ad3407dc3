"""Every HTTP status an operation can answer, derived from what its RPC declares.

Nothing here is written per route: the statuses follow from the RPC's options (access level,
idempotency key, its declared ``errors`` and ``error_reasons``), its HTTP binding (a body, a
conditional method) and what the gateway itself may answer on any route.
"""

from __future__ import annotations

from http import HTTPStatus

import grpc

from common.reasons import Reason
from gateway.conditional import CONDITIONAL_METHODS
from gateway.problems import GRPC_TO_HTTP, REASON_TO_HTTP
from gateway.routes import Route

_CODES: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}

# Any route: a request the gateway cannot map or the service refuses as invalid (400), too
# many requests (429, rate limits), an upstream failing or paused (503, breaker and bulkhead),
# its deadline passing (504).
_EVERY_ROUTE = frozenset(
    (
        HTTPStatus.BAD_REQUEST,
        HTTPStatus.TOO_MANY_REQUESTS,
        HTTPStatus.SERVICE_UNAVAILABLE,
        HTTPStatus.GATEWAY_TIMEOUT,
    )
)


def error_statuses(route: Route) -> set[HTTPStatus]:
    """The error statuses of ``route``, each answered as problem+json."""
    statuses = set(_EVERY_ROUTE)
    if not route.public:
        # 401 without a valid token; 403 for a token without the right (a customer on an
        # admin route, a service token where a user's is needed, another user's resource).
        statuses |= {HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN}
    if route.body:
        # Over the body size limit; not arrived within the body read timeout.
        statuses |= {HTTPStatus.REQUEST_ENTITY_TOO_LARGE, HTTPStatus.REQUEST_TIMEOUT}
    if route.http_method in CONDITIONAL_METHODS:
        statuses.add(HTTPStatus.PRECONDITION_FAILED)  # a stale If-Match
    if route.requires_idempotency_key:
        # The same key while its first request runs (409), or with another body (422).
        statuses.add(GRPC_TO_HTTP[grpc.StatusCode.ABORTED])
        statuses.add(REASON_TO_HTTP[Reason.IDEMPOTENCY_KEY_REUSED])
    for value in route.declared_errors:
        statuses.add(GRPC_TO_HTTP[_CODES[value]])
    for reason in route.declared_reasons:
        if reason in REASON_TO_HTTP:
            statuses.add(REASON_TO_HTTP[reason])
    return statuses


def state_reasons(route: Route) -> list[str]:
    """The reasons ``route`` may send without a status of their own, when it declares
    FAILED_PRECONDITION: its 400 may then refuse a well-formed request because what it acts on
    is in a state that forbids it (cancelling an order that FAILED)."""
    if grpc.StatusCode.FAILED_PRECONDITION.value[0] not in route.declared_errors:
        return []
    return [reason for reason in route.declared_reasons if reason not in REASON_TO_HTTP]
