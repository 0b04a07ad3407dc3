"""Types shared by the gateway integration tests and their fixtures."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, TypeVar

from aiohttp import web
from aiohttp.test_utils import TestClient
from google.protobuf.message import Message

from tests.support.widget_service import WidgetServer

Client = TestClient[web.Request, web.Application]
M = TypeVar("M", bound=Message)


class GatewayFactory(Protocol):
    """Starts a gateway; keyword arguments other than these are GatewaySettings fields."""

    async def __call__(
        self,
        *,
        address: str | None = None,
        extra_routes: Iterable[web.RouteDef] = (),
        token: str | None = None,
        anonymous: bool = False,
        **settings: Any,
    ) -> Client: ...


def received(server: WidgetServer, method: str, kind: type[M]) -> M:
    """The request message the servicer last got for ``method``."""
    request = server.servicer.last(method).request
    assert isinstance(request, kind)
    return request


async def problem_of(response: Any) -> dict[str, Any]:
    """The problem body, after checking the media type and the members every problem has."""
    assert response.content_type == "application/problem+json"
    body: dict[str, Any] = await response.json()
    assert body["status"] == response.status
    assert body["type"] == "about:blank"
    assert body["request_id"] == response.headers["X-Request-Id"]
    assert {"title", "detail", "code"} <= set(body)
    return body
