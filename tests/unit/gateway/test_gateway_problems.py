"""The one gRPC status → HTTP table and the problem+json body (CONTRACT.md, RFC 9457)."""

from __future__ import annotations

import json
from http import HTTPStatus

import grpc
import pytest

from gateway.problems import (
    GRPC_TO_HTTP,
    INTERNAL_DETAIL,
    FieldViolation,
    ProblemError,
    invalid_argument,
)

# CONTRACT.md "REST conventions", written out independently of the table under test.
CONTRACT = {
    "OK": 200,
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def test_every_grpc_status_code_has_an_http_status() -> None:
    assert set(GRPC_TO_HTTP) == set(grpc.StatusCode)


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda c: c.name)
def test_each_status_code_maps_as_the_contract_says(code: grpc.StatusCode) -> None:
    assert GRPC_TO_HTTP[code] == CONTRACT.get(code.name, 500)


def test_a_problem_body_has_the_rfc_9457_members_the_grpc_code_and_the_request_id() -> None:
    problem = ProblemError(grpc.StatusCode.NOT_FOUND, "No widget w-1.")

    body = problem.body("req-1")

    assert body == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "No widget w-1.",
        "code": "NOT_FOUND",
        "request_id": "req-1",
    }


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS]
)
def test_a_500_never_carries_the_upstream_detail(code: grpc.StatusCode) -> None:
    problem = ProblemError(
        code,
        'Traceback (most recent call last): File "/srv/x.py" ... SELECT * FROM users',
        field_violations=[FieldViolation("password", "was hunter2")],
    )

    body = problem.body("req-1")

    assert body["status"] == 500
    assert body["detail"] == INTERNAL_DETAIL
    assert "field_violations" not in body


def test_an_explicit_http_status_overrides_the_table_for_the_gateways_own_refusals() -> None:
    problem = ProblemError(
        grpc.StatusCode.UNIMPLEMENTED,
        "GET is not allowed here.",
        status=HTTPStatus.METHOD_NOT_ALLOWED,
        headers={"Allow": "POST"},
    )

    response = problem.response("req-1")

    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    assert response.content_type == "application/problem+json"
    assert response.text is not None
    assert json.loads(response.text)["code"] == "UNIMPLEMENTED"


def test_field_violations_from_upstream_are_listed_for_client_errors() -> None:
    problem = ProblemError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "email is not valid",
        field_violations=[FieldViolation("email", "is not valid")],
    )

    assert problem.body("r")["field_violations"] == [
        {"field": "email", "description": "is not valid"}
    ]


# Found by `make mutants`: the reason and the headers reach the client; a 500 keeps its reason.


async def test_a_reason_and_headers_reach_the_response_except_on_a_500() -> None:
    declined = ProblemError(
        grpc.StatusCode.FAILED_PRECONDITION,
        "the card was declined",
        status=HTTPStatus.PAYMENT_REQUIRED,
        reason="PAYMENT_DECLINED",
        headers={"Retry-After": "3"},
    )
    internal = ProblemError(grpc.StatusCode.INTERNAL, "boom", reason="SOMETHING")

    response = declined.response("r-1")

    assert response.status == 402
    assert response.content_type == "application/problem+json"
    assert response.headers["Retry-After"] == "3"
    assert response.text is not None
    assert json.loads(response.text)["reason"] == "PAYMENT_DECLINED"
    assert json.loads(response.text)["request_id"] == "r-1"
    assert str(declined) == "the card was declined"
    assert "reason" not in internal.body("r-2")


def test_a_request_the_gateway_cannot_translate_is_a_400_saying_why() -> None:
    problem = invalid_argument("grpc-timeout must be like 2S or 500m.")

    body = problem.body("req-1")

    assert problem.http_status == HTTPStatus.BAD_REQUEST
    assert (body["status"], body["code"]) == (400, "INVALID_ARGUMENT")
    assert body["detail"] == "grpc-timeout must be like 2S or 500m."
