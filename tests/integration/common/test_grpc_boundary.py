"""The boundary interceptor on a real grpc.aio server: request ids in, domain errors out."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from common import errors
from common.errors import DomainError
from common.grpc_server import Service, create_server
from common.logging import configure_logging, reset_logging
from common.request_context import REQUEST_ID_METADATA_KEY, current_request_id

PROBE = "microcommerce.test.v1.Probe"
DOMAIN_ERRORS: dict[str, type[DomainError]] = {
    name: obj
    for name, obj in vars(errors).items()
    if isinstance(obj, type) and issubclass(obj, DomainError) and obj is not DomainError
}


class ProbeServicer:
    """A servicer without protos: bytes in, bytes out, and each failure on request."""

    async def Raise(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        name = request.decode()
        if name == "NotImplementedError":
            raise NotImplementedError("later")
        if name == "Field":
            raise errors.InvalidArgument("email is not valid", field="email")
        if name in DOMAIN_ERRORS:
            raise DOMAIN_ERRORS[name](f"{name} happened")
        raise RuntimeError("secret detail: password=hunter2 at /srv/app.py")

    async def EchoRequestId(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        return (current_request_id() or "").encode()

    async def Abort(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "chosen by the servicer")

    def Unimplemented(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        # What grpcio-tools generates for an RPC the servicer does not override.
        context.set_code(grpc.StatusCode.UNIMPLEMENTED)
        context.set_details("Method not implemented!")
        raise NotImplementedError("Method not implemented!")

    async def StreamThenFail(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        yield (current_request_id() or "").encode()
        raise errors.NotFound("no more")


def add_probe_to_server(servicer: ProbeServicer, server: grpc.aio.Server) -> None:
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(getattr(servicer, name))
        for name in ("Raise", "EchoRequestId", "Abort", "Unimplemented")
    }
    handlers["StreamThenFail"] = grpc.unary_stream_rpc_method_handler(servicer.StreamThenFail)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(PROBE, handlers)])


@pytest.fixture
def logs() -> Iterator[None]:
    configure_logging("probe", "INFO")
    yield
    reset_logging()


@pytest.fixture
async def channel(logs: None) -> AsyncIterator[grpc.aio.Channel]:
    built = await create_server(
        services=[Service(PROBE, ProbeServicer(), add_probe_to_server)], address="127.0.0.1:0"
    )
    await built.server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{built.port}") as channel:
        yield channel
    await built.server.stop(None)


async def call(
    channel: grpc.aio.Channel, method: str, request: bytes = b"", request_id: str | None = None
) -> bytes:
    metadata = () if request_id is None else ((REQUEST_ID_METADATA_KEY, request_id),)
    response: bytes = await channel.unary_unary(f"/{PROBE}/{method}", None, None)(
        request, metadata=metadata, timeout=5
    )
    return response


async def failure(
    channel: grpc.aio.Channel, method: str, request: bytes = b""
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(channel, method, request, request_id="req-failing")
    return caught.value


async def test_the_callers_request_id_is_in_the_context_of_the_servicer(
    channel: grpc.aio.Channel,
) -> None:
    assert await call(channel, "EchoRequestId", request_id="req-123") == b"req-123"


async def test_a_call_without_request_id_gets_a_fresh_one_per_call(
    channel: grpc.aio.Channel,
) -> None:
    first = await call(channel, "EchoRequestId")
    second = await call(channel, "EchoRequestId")

    assert first
    assert second
    assert first != second


@pytest.mark.parametrize("name", sorted(DOMAIN_ERRORS))
async def test_a_domain_error_becomes_its_status_with_its_message(
    channel: grpc.aio.Channel, name: str
) -> None:
    error = await failure(channel, "Raise", name.encode())

    assert error.code() == grpc.StatusCode[DOMAIN_ERRORS[name].status_name]
    assert error.details() == f"{name} happened"


async def test_a_domain_error_on_a_field_carries_a_bad_request_detail(
    channel: grpc.aio.Channel,
) -> None:
    error = await failure(channel, "Raise", b"Field")

    # A grpc.aio.Metadata at run time; grpc-stubs declare the synchronous API's tuple.
    trailing: Any = error.trailing_metadata()
    status = status_pb2.Status.FromString(trailing["grpc-status-details-bin"])
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("email", "email is not valid")
    ]


async def test_not_implemented_becomes_unimplemented(channel: grpc.aio.Channel) -> None:
    error = await failure(channel, "Raise", b"NotImplementedError")

    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    assert error.details() == f"/{PROBE}/Raise is not implemented"


async def test_a_generated_not_implemented_stub_answers_unimplemented(
    channel: grpc.aio.Channel,
) -> None:
    error = await failure(channel, "Unimplemented")

    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "NotImplementedError" not in (error.details() or "")


async def test_an_unexpected_exception_is_internal_and_its_text_stays_in_the_log(
    channel: grpc.aio.Channel, capsys: pytest.CaptureFixture[str]
) -> None:
    error = await failure(channel, "Raise", b"RuntimeError")

    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "internal error (request id req-failing)"
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    [logged] = [line for line in lines if line["event"] == "rpc_failed"]
    assert logged["request_id"] == "req-failing"
    assert logged["rpc"] == f"/{PROBE}/Raise"
    assert logged["level"] == "error"
    assert logged["service"] == "probe"
    assert "secret detail" in logged["exception"]


async def test_an_abort_by_the_servicer_passes_through_untouched(
    channel: grpc.aio.Channel, capsys: pytest.CaptureFixture[str]
) -> None:
    error = await failure(channel, "Abort")

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == "chosen by the servicer"
    assert "rpc_failed" not in capsys.readouterr().err


async def test_a_server_stream_keeps_its_request_id_and_maps_a_late_domain_error(
    channel: grpc.aio.Channel,
) -> None:
    stream = channel.unary_stream(f"/{PROBE}/StreamThenFail", None, None)(
        b"", metadata=((REQUEST_ID_METADATA_KEY, "req-stream"),), timeout=5
    )
    first = await stream.read()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()

    assert first == b"req-stream"
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "no more"


async def test_an_unknown_method_is_unimplemented(channel: grpc.aio.Channel) -> None:
    error = await failure(channel, "Missing")

    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
