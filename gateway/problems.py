"""Errors as ``application/problem+json`` (RFC 9457) and the one gRPC status → HTTP status table."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from types import MappingProxyType
from typing import Any, Final

import grpc
from aiohttp import web

from common.reasons import http_overrides

PROBLEM_CONTENT_TYPE: Final = "application/problem+json"

# CONTRACT.md "REST conventions". Every grpc.StatusCode has an entry (a test checks it); OK is
# listed so the table is total, though a successful call never becomes a problem.
GRPC_TO_HTTP: Final[Mapping[grpc.StatusCode, HTTPStatus]] = MappingProxyType(
    {
        grpc.StatusCode.OK: HTTPStatus.OK,
        grpc.StatusCode.CANCELLED: HTTPStatus.INTERNAL_SERVER_ERROR,
        grpc.StatusCode.UNKNOWN: HTTPStatus.INTERNAL_SERVER_ERROR,
        grpc.StatusCode.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST,
        grpc.StatusCode.DEADLINE_EXCEEDED: HTTPStatus.GATEWAY_TIMEOUT,
        grpc.StatusCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS: HTTPStatus.CONFLICT,
        grpc.StatusCode.PERMISSION_DENIED: HTTPStatus.FORBIDDEN,
        grpc.StatusCode.RESOURCE_EXHAUSTED: HTTPStatus.TOO_MANY_REQUESTS,
        grpc.StatusCode.FAILED_PRECONDITION: HTTPStatus.BAD_REQUEST,
        grpc.StatusCode.ABORTED: HTTPStatus.CONFLICT,
        grpc.StatusCode.OUT_OF_RANGE: HTTPStatus.BAD_REQUEST,
        grpc.StatusCode.UNIMPLEMENTED: HTTPStatus.NOT_IMPLEMENTED,
        grpc.StatusCode.INTERNAL: HTTPStatus.INTERNAL_SERVER_ERROR,
        grpc.StatusCode.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS: HTTPStatus.INTERNAL_SERVER_ERROR,
        grpc.StatusCode.UNAUTHENTICATED: HTTPStatus.UNAUTHORIZED,
    }
)

# Upstream reasons (google.rpc.ErrorInfo) whose HTTP status is not their gRPC status's
# (CONTRACT.md, "Orders and payments"), as declared with the reasons in common.reasons.
REASON_TO_HTTP: Final[Mapping[str, HTTPStatus]] = MappingProxyType(http_overrides())

# What a 500 says instead of the upstream's text, which may hold internals (CONTRACT.md).
INTERNAL_DETAIL: Final = "The server failed to complete the request; quote the request id."


def http_status_of(code: grpc.StatusCode) -> HTTPStatus:
    """The HTTP status a gRPC status becomes at the gateway."""
    return GRPC_TO_HTTP[code]


@dataclass(frozen=True)
class FieldViolation:
    """One bad input field, from an upstream ``google.rpc.BadRequest`` detail (AIP-193)."""

    field: str
    description: str


class ProblemError(Exception):
    """A failure to answer as problem+json; raised anywhere in a request, rendered once.

    ``code`` is the gRPC status name the body carries; ``status`` defaults to the table's HTTP
    status for it. The gateway's own refusals (404, 405, 413) pass ``status`` explicitly.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        detail: str,
        *,
        status: HTTPStatus | None = None,
        headers: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
        reason: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.code = code
        self.detail = detail
        self.status = status
        self.headers: Mapping[str, str] = headers or {}
        self.field_violations = tuple(field_violations)

    @property
    def http_status(self) -> HTTPStatus:
        """The HTTP status of the response."""
        return self.status if self.status is not None else http_status_of(self.code)

    def body(self, request_id: str) -> dict[str, Any]:
        """The problem+json document."""
        status = self.http_status
        # A 500 never carries upstream text: it may hold stack traces, SQL or peer addresses.
        internal = status == HTTPStatus.INTERNAL_SERVER_ERROR
        body: dict[str, Any] = {
            # "about:blank": the HTTP status says it all (RFC 9457 4.2.1); `code` refines it.
            "type": "about:blank",
            "title": status.phrase,
            "status": int(status),
            "detail": INTERNAL_DETAIL if internal else self.detail,
            "code": self.code.name,
            "request_id": request_id,
        }
        if self.reason and not internal:
            body["reason"] = self.reason
        if self.field_violations and not internal:
            body["field_violations"] = [
                {"field": v.field, "description": v.description} for v in self.field_violations
            ]
        return body

    def response(self, request_id: str) -> web.Response:
        """The problem as an aiohttp response."""
        return web.Response(
            status=int(self.http_status),
            text=json.dumps(self.body(request_id), ensure_ascii=False),
            content_type=PROBLEM_CONTENT_TYPE,
            headers=dict(self.headers),
        )


def invalid_argument(detail: str) -> ProblemError:
    """A 400 for a request the gateway cannot turn into a valid gRPC request."""
    return ProblemError(grpc.StatusCode.INVALID_ARGUMENT, detail)
