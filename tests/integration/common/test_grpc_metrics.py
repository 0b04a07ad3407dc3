"""RPC metrics on a real grpc.aio server: every call counted by service, method and final code."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from aiohttp import ClientSession

from common import errors
from common.grpc_server import Service, create_server
from common.metrics import REGISTRY, start_metrics_server
from tests.support.processes import wait_for

PROBE = "microcommerce.test.v1.MetricsProbe"
Context = Any  # grpc.aio.ServicerContext is generic only in the stubs


class MetricsProbe:
    """Answers, refuses with a domain error, aborts, or crashes, as the request says."""

    async def Call(self, request: bytes, context: Context) -> bytes:
        if request == b"missing":
            raise errors.NotFound("no such thing")
        if request == b"abort":
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many")
        if request == b"crash":
            raise RuntimeError("bug")
        return request

    async def Stream(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        yield request
        raise errors.FailedPrecondition("stream ended badly")

    async def Written(self, request: bytes, context: Context) -> None:
        # The other way to stream (grpc_health's Watch does it): context.write, no yield.
        await context.write(request)
        await context.write(request)


def add_probe(servicer: MetricsProbe, server: grpc.aio.Server) -> None:
    handlers = {
        "Call": grpc.unary_unary_rpc_method_handler(servicer.Call),
        "Stream": grpc.unary_stream_rpc_method_handler(servicer.Stream),
        "Written": grpc.unary_stream_rpc_method_handler(servicer.Written),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(PROBE, handlers)])


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    built = await create_server(
        services=[Service(PROBE, MetricsProbe(), add_probe)], address="127.0.0.1:0"
    )
    await built.server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{built.port}") as channel:
        yield channel
    await built.server.stop(None)


def handled(method: str, code: str, rpc_type: str = "unary") -> float:
    labels = {"grpc_type": rpc_type, "grpc_service": PROBE, "grpc_method": method}
    value = REGISTRY.get_sample_value("grpc_server_handled_total", {**labels, "grpc_code": code})
    return value or 0.0


def timed(method: str, rpc_type: str = "unary") -> float:
    labels = {"grpc_type": rpc_type, "grpc_service": PROBE, "grpc_method": method}
    return REGISTRY.get_sample_value("grpc_server_handling_seconds_count", labels) or 0.0


async def counted(condition: Callable[[], bool]) -> None:
    """Until the server has counted the call. An abort sends its status to the client before
    the handler unwinds to the interceptor that counts it, so the client can see the code a
    moment before the metric does."""

    async def met() -> bool:
        return condition()

    await wait_for(met, within=5, interval=0.01)


async def call(channel: grpc.aio.Channel, request: bytes) -> None:
    # The code is what the test reads from the metrics, not from the call.
    with contextlib.suppress(grpc.aio.AioRpcError):
        await channel.unary_unary(f"/{PROBE}/Call", None, None)(request, timeout=5)


@pytest.mark.parametrize(
    ("request_body", "code"),
    [
        (b"fine", "OK"),
        (b"missing", "NOT_FOUND"),
        (b"abort", "RESOURCE_EXHAUSTED"),
        (b"crash", "INTERNAL"),
    ],
)
async def test_each_call_is_counted_with_the_code_the_client_got(
    channel: grpc.aio.Channel, request_body: bytes, code: str
) -> None:
    before, before_timed = handled("Call", code), timed("Call")

    await call(channel, request_body)

    await counted(lambda: handled("Call", code) > before)
    assert handled("Call", code) == before + 1
    assert timed("Call") == before_timed + 1


async def test_a_stream_that_fails_is_counted_with_its_final_code(
    channel: grpc.aio.Channel,
) -> None:
    before = handled("Stream", "FAILED_PRECONDITION", "server_stream")
    stream = channel.unary_stream(f"/{PROBE}/Stream", None, None)(b"x", timeout=5)
    with pytest.raises(grpc.aio.AioRpcError):
        async for _ in stream:
            pass

    await counted(lambda: handled("Stream", "FAILED_PRECONDITION", "server_stream") > before)
    assert handled("Stream", "FAILED_PRECONDITION", "server_stream") == before + 1


async def test_a_stream_written_with_context_write_still_streams_and_is_counted(
    channel: grpc.aio.Channel,
) -> None:
    before = handled("Written", "OK", "server_stream")

    stream = channel.unary_stream(f"/{PROBE}/Written", None, None)(b"w", timeout=5)
    received = [response async for response in stream]

    assert received == [b"w", b"w"]
    assert handled("Written", "OK", "server_stream") == before + 1


async def test_the_metrics_endpoint_serves_rpc_and_process_series(
    channel: grpc.aio.Channel,
) -> None:
    await call(channel, b"fine")
    refreshed: list[bool] = []

    async def refresh() -> None:
        refreshed.append(True)

    runner, port = await start_metrics_server("127.0.0.1", 0, before_scrape=refresh)
    try:
        async with (
            ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            assert response.status == 200
            body = await response.text()
    finally:
        await runner.cleanup()

    handled_lines = [line for line in body.splitlines() if line.startswith("grpc_server_handled")]
    assert any('grpc_method="Call"' in line and 'grpc_code="OK"' in line for line in handled_lines)
    assert "grpc_server_handling_seconds_bucket" in body
    assert "process_resident_memory_bytes" in body
    assert refreshed == [True]
