"""Each RPC admits the callers its proto declares, checked in the service from the bearer token."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.access import AccessInterceptor, require_principal
from common.errors import Unauthenticated
from common.grpc_server import Service, create_server
from common.tokens import Principal, TokenVerifier
from microcommerce.testing.v1 import widgets_pb2, widgets_pb2_grpc
from tests.support.tokens import KEYS, SIGNER, admin_token, customer_token, service_token
from tests.support.widget_service import WIDGET_SERVICE, WidgetServicer


@dataclass
class Served:
    servicer: WidgetServicer
    stub: widgets_pb2_grpc.WidgetServiceAsyncStub
    channel: grpc.aio.Channel


# A method served by a handler the descriptor pool does not know: it declares no access at all.
UNDECLARED = "/microcommerce.nowhere.v1.Hidden/Peek"


async def _peek(request: bytes, context: object) -> bytes:
    return b"secret"


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    servicer = WidgetServicer()
    running = await create_server(
        services=[
            Service(
                WIDGET_SERVICE.full_name,
                servicer,
                widgets_pb2_grpc.add_WidgetServiceServicer_to_server,
            )
        ],
        address="127.0.0.1:0",
        interceptors=[AccessInterceptor(TokenVerifier(KEYS))],
    )
    running.server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "microcommerce.nowhere.v1.Hidden",
                {"Peek": grpc.unary_unary_rpc_method_handler(_peek)},
            ),
        )
    )
    await running.server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield Served(servicer, widgets_pb2_grpc.WidgetServiceStub(channel), channel)
    servicer.release.set()
    await running.server.stop(None)


def _auth(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def _expired() -> str:
    return SIGNER.mint("user-1", ["customer"], now=datetime.now(UTC) - timedelta(hours=2))


async def _code_of(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_a_public_rpc_serves_anonymous_callers(served: Served) -> None:
    await served.stub.GetWidget(widgets_pb2.GetWidgetRequest(id="w-1"))

    assert served.servicer.last("GetWidget").principal is None


async def test_a_public_rpc_knows_its_caller_when_a_valid_token_comes_along(
    served: Served,
) -> None:
    await served.stub.GetWidget(
        widgets_pb2.GetWidgetRequest(id="w-1"), metadata=_auth(customer_token("user-9"))
    )

    principal = served.servicer.last("GetWidget").principal
    assert principal is not None
    assert principal.subject == "user-9"


async def test_a_public_rpc_serves_a_bad_tokens_bearer_anonymously(served: Served) -> None:
    await served.stub.GetWidget(widgets_pb2.GetWidgetRequest(id="w-1"), metadata=_auth("junk"))

    assert served.servicer.last("GetWidget").principal is None


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        ("junk", grpc.StatusCode.UNAUTHENTICATED),
        ("expired", grpc.StatusCode.UNAUTHENTICATED),
        ("customer", grpc.StatusCode.OK),
        ("admin", grpc.StatusCode.OK),
    ],
)
async def test_a_user_rpc_needs_a_valid_token(
    served: Served, token: str | None, expected: grpc.StatusCode
) -> None:
    metadata = () if token is None else _auth(_token(token))

    code = await _code_of(
        served.stub.CancelWidget(widgets_pb2.CancelWidgetRequest(id="w-1"), metadata=metadata)
    )

    assert code == expected


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        ("expired", grpc.StatusCode.UNAUTHENTICATED),
        ("customer", grpc.StatusCode.PERMISSION_DENIED),
        ("service", grpc.StatusCode.PERMISSION_DENIED),
        ("admin", grpc.StatusCode.OK),
    ],
)
async def test_an_admin_rpc_needs_the_admin_role(
    served: Served, token: str | None, expected: grpc.StatusCode
) -> None:
    metadata = () if token is None else _auth(_token(token))
    request = widgets_pb2.CreateWidgetRequest(widget=widgets_pb2.Widget(name="w"))

    code = await _code_of(served.stub.CreateWidget(request, metadata=metadata))

    assert code == expected


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        ("customer", grpc.StatusCode.PERMISSION_DENIED),
        ("admin", grpc.StatusCode.PERMISSION_DENIED),
        ("service", grpc.StatusCode.OK),
    ],
)
async def test_a_service_rpc_admits_only_service_tokens(
    served: Served, token: str | None, expected: grpc.StatusCode
) -> None:
    metadata = () if token is None else _auth(_token(token))

    code = await _code_of(
        served.stub.ReindexWidgets(widgets_pb2.ReindexWidgetsRequest(), metadata=metadata)
    )

    assert code == expected


async def test_a_refused_call_never_reaches_the_servicer(served: Served) -> None:
    await _code_of(served.stub.ReindexWidgets(widgets_pb2.ReindexWidgetsRequest()))

    assert [call.method for call in served.servicer.calls] == []


def _token(kind: str) -> str:
    return {
        "junk": "junk",
        "expired": _expired(),
        "customer": customer_token(),
        "admin": admin_token(),
        "service": service_token(),
    }[kind]


# Found by `make mutants`: the two ends of the access table, infrastructure and the undeclared.


async def test_the_standard_health_check_needs_no_token(served: Served) -> None:
    health = health_pb2_grpc.HealthStub(served.channel)

    answer = await health.Check(health_pb2.HealthCheckRequest())

    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_method_declaring_no_access_is_refused_even_to_an_admin(served: Served) -> None:
    peek = served.channel.unary_unary(
        UNDECLARED, request_serializer=None, response_deserializer=None
    )

    code = await _code_of(peek(b"", metadata=_auth(admin_token())))

    assert code is grpc.StatusCode.PERMISSION_DENIED


# Found by `make mutants`: what a servicer that needs its caller gets from require_principal().

CANCEL_WIDGET = "/microcommerce.testing.v1.WidgetService/CancelWidget"


@dataclass
class _Details:
    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


async def test_a_servicer_gets_the_admitted_caller_from_require_principal() -> None:
    seen: list[Principal] = []

    async def cancel(request: bytes, context: object) -> bytes:
        seen.append(require_principal())
        return b""

    async def continuation(details: object) -> grpc.RpcMethodHandler[bytes, bytes]:
        return grpc.unary_unary_rpc_method_handler(cancel)

    interceptor = AccessInterceptor(TokenVerifier(KEYS))
    details = _Details(CANCEL_WIDGET, _auth(customer_token("user-9")))
    handler = await interceptor.intercept_service(continuation, details)  # type: ignore[arg-type]

    admitted = handler.unary_unary
    assert admitted is not None
    no_context: Any = None  # the servicer above never looks at it
    # A task of its own, as each RPC has: the caller stays in that call's context.
    await asyncio.create_task(admitted(b"", no_context))

    assert [principal.subject for principal in seen] == ["user-9"]


def test_require_principal_refuses_a_call_that_carried_no_token() -> None:
    with pytest.raises(Unauthenticated):
        contextvars.copy_context().run(require_principal)
