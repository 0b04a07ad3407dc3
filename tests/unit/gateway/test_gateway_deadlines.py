"""A client may shorten a request's deadline, never lengthen it."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.deadlines import client_timeout, request_timeout
from gateway.problems import ProblemError


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Request-Timeout": "2s"}, 2.0),
        ({"Request-Timeout": "500ms"}, 0.5),
        ({"Request-Timeout": "1.5"}, 1.5),
        ({"grpc-timeout": "250m"}, 0.25),
        ({"grpc-timeout": "3S"}, 3.0),
        ({}, None),
    ],
)
def test_the_client_deadline_headers_are_read(headers: dict[str, str], seconds: float) -> None:
    assert client_timeout(make_mocked_request("GET", "/", headers=headers)) == seconds


@pytest.mark.parametrize(
    "headers", [{"Request-Timeout": "soon"}, {"Request-Timeout": "-1s"}, {"grpc-timeout": "5x"}]
)
def test_an_unreadable_deadline_header_is_a_400_naming_it(headers: dict[str, str]) -> None:
    with pytest.raises(ProblemError) as raised:
        client_timeout(make_mocked_request("GET", "/", headers=headers))

    assert raised.value.http_status == 400
    assert next(iter(headers)) in raised.value.detail


def test_a_client_deadline_only_ever_shortens_the_configured_one() -> None:
    shorter = make_mocked_request("GET", "/", headers={"Request-Timeout": "1s"})
    longer = make_mocked_request("GET", "/", headers={"Request-Timeout": "60s"})

    assert request_timeout(shorter, 5.0) == 1.0
    assert request_timeout(longer, 5.0) == 5.0
