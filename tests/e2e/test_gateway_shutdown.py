"""SIGTERM to a real gateway process: readiness fails first, then the listener closes, and a
request already in flight still gets its complete answer.

aiohttp stops reading a connection once shutdown starts, so "in flight" means a request whose
body has arrived (here: one waiting on its upstream call); a body still uploading when the
listener closes gets no more bytes and ends with 408 after ``body_read_timeout_s``.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc

from localrun.broker import EmbeddedBroker, free_port
from tests.support.processes import FAST_KAFKA, start_process, wait_for


async def _get(url: str) -> tuple[int, dict[str, Any]] | None:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response,
        ):
            return response.status, await response.json()
    except (aiohttp.ClientError, TimeoutError):
        return None


async def _refused(port: int) -> bool:
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False


@asynccontextmanager
async def held_upstream() -> AsyncIterator[tuple[str, asyncio.Event, asyncio.Event]]:
    """A gRPC server answering any RPC with an empty message, but only once released."""
    called, release = asyncio.Event(), asyncio.Event()

    async def answer(_request: bytes, _context: object) -> bytes:
        called.set()
        await release.wait()
        return b""

    class AnyMethod(grpc.GenericRpcHandler):  # type: ignore[type-arg]  # generic in stubs only
        def service(self, _details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[bytes, bytes]:
            return grpc.unary_unary_rpc_method_handler(answer)

    server = grpc.aio.server(handlers=[AnyMethod()])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", called, release
    finally:
        release.set()
        await server.stop(grace=None)


async def test_sigterm_fails_readiness_then_stops_accepting_and_finishes_in_flight_requests(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with held_upstream() as (product, called, release):
        env = {
            **FAST_KAFKA,
            "MC_KAFKA_BOOTSTRAP": broker.bootstrap,
            "MC_DATA_DIR": str(tmp_path),
            "MC_ENVIRONMENT": "test",
            "MC_GATEWAY_PORT": str(port),
            "MC_PRODUCT_ADDRESS": product,
            "MC_UPSTREAM_TIMEOUT_S": "60",
            "MC_SHUTDOWN_DRAIN_S": "2",
            "MC_SHUTDOWN_GRACE_S": "30",
        }
        gateway = start_process("gateway", env, tmp_path, "gateway")
        try:
            await wait_for(lambda: _get(f"{base}/health/live"), within=30)
            before = await _get(f"{base}/health/ready")
            assert before is not None
            assert before[1]["checks"]["accepting"] == "UP"
            async with aiohttp.ClientSession() as http:
                in_flight = asyncio.create_task(_status(http, f"{base}/api/v1/products/p-1"))
                await asyncio.wait_for(called.wait(), timeout=30)

                gateway.popen.send_signal(signal.SIGTERM)

                async def draining() -> bool:
                    answer = await _get(f"{base}/health/ready")
                    return answer is not None and answer[1]["checks"]["accepting"] == "DOWN"

                await wait_for(draining, within=10)
                await wait_for(lambda: _refused(port), within=15)
                assert not in_flight.done()
                release.set()
                status = await asyncio.wait_for(in_flight, timeout=30)
            exit_code = await asyncio.to_thread(gateway.popen.wait, 30)
        finally:
            if gateway.popen.poll() is None:
                gateway.kill()

    assert status == 200, gateway.log()
    assert exit_code == 0, gateway.log()


async def _status(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url) as response:
        await response.read()
        return response.status
