"""Standard health, reflection and graceful shutdown of the servers create_server builds."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from common.grpc_server import GrpcServer, Service, create_server, stop_gracefully

SLOW = "microcommerce.test.v1.Slow"
SERVING: int = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: int = health_pb2.HealthCheckResponse.NOT_SERVING


async def eventually(condition: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Wait until ``condition`` holds, polling; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(0.01)


class SlowServicer:
    """Answers once the test releases it, so a call can be held in flight."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def Wait(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        self.started.set()
        await self.release.wait()
        return b"finished"


def add_slow_to_server(servicer: SlowServicer, server: grpc.aio.Server) -> None:
    handler = grpc.unary_unary_rpc_method_handler(servicer.Wait)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SLOW, {"Wait": handler})])


@pytest.fixture
def servicer() -> SlowServicer:
    return SlowServicer()


@pytest.fixture
async def server(servicer: SlowServicer) -> AsyncIterator[GrpcServer]:
    built = await create_server(
        services=[Service(SLOW, servicer, add_slow_to_server)], address="127.0.0.1:0"
    )
    await built.server.start()
    yield built
    servicer.release.set()
    await built.server.stop(None)


@pytest.fixture
async def channel(server: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


async def health_of(channel: grpc.aio.Channel, service: str) -> int:
    response = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=5
    )
    status: int = response.status
    return status


def call_slow(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryCall[bytes, bytes]:
    return channel.unary_unary(f"/{SLOW}/Wait", None, None)(b"", timeout=10)


async def test_the_server_binds_a_free_port_when_given_port_zero(server: GrpcServer) -> None:
    assert server.port > 0


async def test_health_is_serving_for_the_server_and_each_service(
    channel: grpc.aio.Channel,
) -> None:
    assert await health_of(channel, "") == SERVING
    assert await health_of(channel, SLOW) == SERVING


async def test_health_of_an_unknown_service_is_not_found(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await health_of(channel, "no.such.Service")

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_turns_not_serving_as_soon_as_graceful_shutdown_begins(
    server: GrpcServer, channel: grpc.aio.Channel
) -> None:
    stopping = asyncio.create_task(stop_gracefully(server.server, server.health, grace=1, drain=2))

    async def not_serving() -> bool:
        return await health_of(channel, "") == NOT_SERVING

    await eventually(not_serving)
    assert await health_of(channel, SLOW) == NOT_SERVING
    stopping.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await stopping


async def test_a_health_watcher_is_told_when_graceful_shutdown_begins(
    server: GrpcServer, channel: grpc.aio.Channel
) -> None:
    # gRPC clients' own health checking watches rather than polls.
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=SLOW), timeout=5
    )
    before = await watch.read()
    stopping = asyncio.create_task(stop_gracefully(server.server, server.health, grace=0.5))
    after = await watch.read()
    await stopping

    assert (before.status, after.status) == (SERVING, NOT_SERVING)


async def test_an_in_flight_call_completes_during_a_graceful_stop_while_new_calls_are_refused(
    server: GrpcServer, servicer: SlowServicer, channel: grpc.aio.Channel
) -> None:
    in_flight = call_slow(channel)
    await servicer.started.wait()
    stopping = asyncio.create_task(stop_gracefully(server.server, server.health, grace=10))

    async def refused() -> bool:
        try:
            await health_of(channel, "")
        except grpc.aio.AioRpcError as error:
            code: grpc.StatusCode = error.code()
            return code is grpc.StatusCode.UNAVAILABLE
        return False

    await eventually(refused)
    assert not stopping.done()
    servicer.release.set()

    assert await in_flight == b"finished"
    async with asyncio.timeout(5):  # far less than the 10 s grace: it ends with the last call
        await stopping


async def test_a_call_still_running_when_the_grace_period_ends_is_cancelled(
    server: GrpcServer, servicer: SlowServicer, channel: grpc.aio.Channel
) -> None:
    in_flight = call_slow(channel)
    await servicer.started.wait()

    async with asyncio.timeout(5):
        await stop_gracefully(server.server, server.health, grace=0.2)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await in_flight

    assert caught.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)


async def test_reflection_lists_our_services_with_health_and_reflection(
    channel: grpc.aio.Channel,
) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.health.v1.Health"),
    ]

    listing, health_file = [
        response async for response in stub.ServerReflectionInfo(iter(requests))
    ]

    assert {service.name for service in listing.list_services_response.service} == {
        SLOW,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    assert health_file.file_descriptor_response.file_descriptor_proto
