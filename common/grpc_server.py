"""gRPC server bootstrap: the service-boundary interceptor, health, reflection, graceful stop."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, NoReturn, TypeVar

import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2, health_pb2_grpc

# The library's public name for its asyncio servicer; mypy sees the untyped module as bare.
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from common.errors import DomainError
from common.grpc_metrics import ServerMetricsInterceptor
from common.grpc_types import RpcMethodHandler as _Handler
from common.grpc_types import ServerInterceptor as _ServerInterceptor
from common.grpc_types import ServicerContext
from common.logging import get_logger
from common.reasons import ERROR_DOMAIN
from common.request_context import REQUEST_ID_METADATA_KEY, accept_request_id, request_id_var
from common.telemetry import continue_trace
from common.validation import ValidationInterceptor

_log = get_logger(__name__)

_Behavior = Callable[..., Any]
S = TypeVar("S")

# SO_REUSEPORT (gRPC's default on Linux) lets a second process bind a port already in use and
# silently share its traffic; a clash should be an error at start-up instead.
DEFAULT_SERVER_OPTIONS: tuple[tuple[str, Any], ...] = (("grpc.so_reuseport", 0),)


def status_code_of(error: DomainError) -> grpc.StatusCode:
    """The gRPC status a domain error becomes at the boundary."""
    return grpc.StatusCode[error.status_name]


def _invocation_request_id(details: grpc.HandlerCallDetails) -> str:
    for key, value in details.invocation_metadata or ():
        if key == REQUEST_ID_METADATA_KEY:
            return accept_request_id(value if isinstance(value, str) else None)
    return accept_request_id(None)


class _Call(NamedTuple):
    """What the boundary takes from a call's metadata."""

    request_id: str
    traceparent: str | None
    tracestate: str | None


def _invocation_trace(details: grpc.HandlerCallDetails) -> tuple[str | None, str | None]:
    """The caller's W3C ``traceparent`` and ``tracestate`` metadata, if any."""
    traceparent = tracestate = None
    for key, value in details.invocation_metadata or ():
        if key == "traceparent" and isinstance(value, str):
            traceparent = value
        elif key == "tracestate" and isinstance(value, str):
            tracestate = value
    return traceparent, tracestate


def _status_details(
    code: grpc.StatusCode, error: DomainError
) -> tuple[tuple[str, str | bytes], ...]:
    # AIP-193 details: a field name (BadRequest) lets a client point at the offending input, a
    # reason (ErrorInfo) tells causes of one status apart, RetryInfo says when to try again.
    # Without any of them the status code and message say everything.
    details: list[any_pb2.Any] = []
    if field_violations := error.field_violations():
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=violation.field, description=violation.description
                )
                for violation in field_violations
            ]
        )
        details.append(_packed(bad_request))
    if error.reason is not None:
        details.append(
            _packed(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN))
        )
    if error.retry_after_s is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(int(max(error.retry_after_s, 0) * 1e9))
        details.append(_packed(retry))
    if not details:
        return ()
    status = status_pb2.Status(code=code.value[0], message=error.message, details=details)
    # grpcio-status packs it under the standard key (grpc-status-details-bin).
    trailing: tuple[tuple[str, str | bytes], ...] = rpc_status.to_status(status).trailing_metadata
    return trailing


def _packed(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class BoundaryInterceptor(_ServerInterceptor):
    """The service boundary: request id in, errors out, for every RPC of the server.

    Per call it takes ``x-request-id`` from the metadata (or makes one), puts it in
    ``request_id_var`` and structlog's contextvars, and turns what the servicer raises into a
    status: a ``DomainError`` into its own code and message, ``NotImplementedError`` (the
    generated base classes raise it) into UNIMPLEMENTED, anything else into INTERNAL with a
    generic message while the exception is logged. ``context.abort`` from the servicer passes
    through untouched. Servicers therefore hold no try/except of their own for these.

    Servicer methods are expected to be ``async``; a plain function (the generated
    "not implemented" stubs) is called on the event loop, not in a thread.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        handler: _Handler | None = await continuation(handler_call_details)
        if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED itself
            return handler  # type: ignore[return-value]  # grpc-stubs omit the None case
        method = handler_call_details.method
        call = _Call(
            _invocation_request_id(handler_call_details), *_invocation_trace(handler_call_details)
        )
        wrap = self._wrap_streaming if handler.response_streaming else self._wrap_unary
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                wrap(handler.unary_unary, method, call),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                wrap(handler.unary_stream, method, call),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                wrap(handler.stream_unary, method, call),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                wrap(handler.stream_stream, method, call),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return handler

    def _wrap_unary(self, behavior: _Behavior, method: str, call: _Call) -> _Behavior:
        async def unary(request: Any, context: ServicerContext) -> Any:
            async with self._boundary(context, method, call):
                result = behavior(request, context)
                return await result if inspect.isawaitable(result) else result

        return unary

    def _wrap_streaming(self, behavior: _Behavior, method: str, call: _Call) -> _Behavior:
        if inspect.iscoroutinefunction(behavior):
            # Writes its responses with context.write(); gRPC awaits it.
            async def writer(request: Any, context: ServicerContext) -> None:
                async with self._boundary(context, method, call):
                    await behavior(request, context)

            return writer

        async def generator(request: Any, context: ServicerContext) -> AsyncIterator[Any]:
            async with self._boundary(context, method, call):
                responses = behavior(request, context)
                if inspect.isasyncgen(responses):
                    async for response in responses:
                        yield response
                elif responses is not None:
                    for response in responses:
                        yield response

        return generator

    @asynccontextmanager
    async def _boundary(
        self, context: ServicerContext, method: str, call: _Call
    ) -> AsyncIterator[None]:
        # Set without resetting: every RPC runs in its own asyncio task with its own copy of
        # the context, and a reset from a response generator finalised elsewhere would fail.
        request_id = call.request_id
        request_id_var.set(request_id)
        # Without the gRPC server instrumentation (no exporter), the caller's trace still
        # reaches our spans and log lines; with it, its span is current and this does nothing.
        continue_trace(call.traceparent, call.tracestate)
        structlog.contextvars.bind_contextvars(request_id=request_id, rpc=method)
        try:
            yield
        except grpc.aio.AbortError:
            raise  # the servicer chose its status itself
        except DomainError as error:
            await self._abort_domain_error(context, error)
        except NotImplementedError:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented")
        except Exception:
            # The text may hold internals (SQL, paths, peers): logged here, never sent.
            _log.exception("rpc_failed")
            await context.abort(
                grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})"
            )

    async def _abort_domain_error(self, context: ServicerContext, error: DomainError) -> NoReturn:
        try:
            code = status_code_of(error)
        except KeyError:
            _log.exception("domain_error_without_status", status_name=error.status_name)
            code = grpc.StatusCode.INTERNAL
        _log.info("rpc_rejected", code=code.name, reason=error.message)
        await context.abort(code, error.message, _status_details(code, error))


@dataclass(frozen=True)
class Service(Generic[S]):
    """One of our gRPC services: its full proto name, servicer and generated ``add_*`` function."""

    name: str  # e.g. "microcommerce.payment.v1.PaymentService"
    servicer: S
    add_to_server: Callable[[S, grpc.aio.Server], None]


class GrpcServer(NamedTuple):
    """A bound, not yet started server, the port it got and its health servicer."""

    server: grpc.aio.Server
    port: int
    health: Any  # grpc_health.v1.health.aio.HealthServicer; grpcio-health-checking is untyped


async def create_server(
    *,
    services: Sequence[Service[Any]],
    address: str,
    interceptors: Sequence[_ServerInterceptor] = (),
    options: Iterable[tuple[str, Any]] = DEFAULT_SERVER_OPTIONS,
) -> GrpcServer:
    """Build a server with our services, standard health and reflection, bound to ``address``.

    ``address`` is ``host:port``; port 0 picks a free port, returned in the result. Health
    reports SERVING for the server ("") and each service. ``interceptors`` run inside the
    boundary interceptor: what their wrapped behaviours raise is mapped like a servicer's
    errors (so raise there, not in ``intercept_service``). Every unary request is then checked
    against the ``buf.validate`` rules of its message (``common.validation``). The caller
    starts the server (``await result.server.start()``) and stops it with ``stop_gracefully``.
    """
    server = grpc.aio.server(
        # Metrics outermost: they see the status the boundary turned every error into.
        # Validation innermost: the caller is admitted (access) before its input is judged.
        interceptors=[
            ServerMetricsInterceptor(),
            BoundaryInterceptor(),
            *interceptors,
            ValidationInterceptor(),
        ],
        options=list(options),
    )
    for service in services:
        service.add_to_server(service.servicer, server)

    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for name in (grpc_health.OVERALL_HEALTH, *(service.name for service in services)):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)

    reflection.enable_server_reflection(
        [
            *(service.name for service in services),
            grpc_health.SERVICE_NAME,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    port = server.add_insecure_port(address)
    return GrpcServer(server=server, port=port, health=health)


async def stop_gracefully(
    server: grpc.aio.Server, health: Any, grace: float, *, drain: float = 0.0
) -> None:
    """Report NOT_SERVING everywhere, then stop, letting in-flight calls finish within ``grace``.

    ``drain`` keeps serving for that many seconds after health turns NOT_SERVING, so probes and
    load balancers stop sending new calls before the listener closes (Kubernetes: about one
    readiness period).
    """
    await health.enter_graceful_shutdown()
    if drain > 0:
        await asyncio.sleep(drain)
    await server.stop(grace)
