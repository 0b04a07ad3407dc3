"""The gateway's access log: one line per request, the route template and never a credential."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from common.logging import configure_logging, reset_logging
from tests.support.gateway_testing import Client, GatewayFactory
from tests.support.tokens import admin_token
from tests.support.widget_service import WidgetServer


@pytest.fixture
def logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    configure_logging("gateway", "INFO")
    yield capsys
    reset_logging()


def access_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    return [line for line in lines if line.get("logger") == "gateway.access"]


async def test_each_request_logs_method_route_template_status_duration_and_user(
    make_gateway: GatewayFactory, widget_server: WidgetServer, logs: pytest.CaptureFixture[str]
) -> None:
    token = admin_token()
    gateway = await make_gateway(token=token)

    response = await gateway.get("/v1/widgets/w-secret-1")

    assert response.status == 200
    [line] = access_lines(logs)
    assert line["method"] == "GET"
    assert line["route"] == "/v1/widgets/{v0}"  # the gateway names path variables itself
    assert line["status"] == 200
    assert line["duration_ms"] >= 0
    assert line["user_id"]
    assert line["service"] == "gateway"
    assert line["request_id"] == response.headers["X-Request-Id"]
    rendered = json.dumps(line)
    assert token not in rendered
    assert "w-secret-1" not in rendered


async def test_an_unmatched_path_logs_its_error_status_without_the_path(
    gateway: Client, logs: pytest.CaptureFixture[str]
) -> None:
    response = await gateway.get("/no/such/thing")

    assert response.status == 404
    [line] = access_lines(logs)
    assert line["status"] == 404
    assert line["route"] == "unmatched"
    assert line["user_id"] is None
