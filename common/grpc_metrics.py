"""The gRPC server interceptor that counts and times every RPC by service, method and code."""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc

from common.grpc_types import RpcMethodHandler as _Handler
from common.grpc_types import ServerInterceptor as _ServerInterceptor
from common.grpc_types import ServicerContext as _Context
from common.metrics import GRPC_HANDLED, GRPC_HANDLING_SECONDS, GRPC_STARTED


def split_method(full_method: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` as (``pkg.Service``, ``Method``)."""
    _, _, rest = full_method.partition("/")
    service, _, method = rest.partition("/")
    return service or "unknown", method or "unknown"


def _rpc_type(handler: _Handler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


def _code_of(context: _Context, error: BaseException | None) -> str:
    # An abort, ours or the boundary's, has set the code on the context before raising.
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
    return "OK" if error is None else "UNKNOWN"


class ServerMetricsInterceptor(_ServerInterceptor):
    """Counts and times every RPC with its final status code (must be the outermost)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        handler: _Handler | None = await continuation(handler_call_details)
        if handler is None:
            return handler  # type: ignore[return-value]  # grpc-stubs omit the None case
        service, method = split_method(handler_call_details.method)
        labels = (_rpc_type(handler), service, method)
        serializers = (handler.request_deserializer, handler.response_serializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_call(handler.unary_unary, labels), *serializers
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_call(handler.stream_unary, labels), *serializers
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, labels), *serializers
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_stream(handler.stream_stream, labels), *serializers
            )
        return handler

    @staticmethod
    @asynccontextmanager
    async def _observed(context: _Context, labels: tuple[str, str, str]) -> AsyncIterator[None]:
        GRPC_STARTED.labels(*labels).inc()
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            yield
        except BaseException as raised:
            error = raised
            raise
        finally:
            GRPC_HANDLING_SECONDS.labels(*labels).observe(time.perf_counter() - start)
            GRPC_HANDLED.labels(*labels, _code_of(context, error)).inc()

    def _wrap_call(
        self, behavior: Callable[..., Any], labels: tuple[str, str, str]
    ) -> Callable[..., Any]:
        async def call(request: Any, context: _Context) -> Any:
            async with self._observed(context, labels):
                return await behavior(request, context)

        return call

    def _wrap_stream(
        self, behavior: Callable[..., Any], labels: tuple[str, str, str]
    ) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(behavior):
            # Writes its responses with context.write(): it must stay a coroutine, since gRPC
            # treats a handler that is a generator as the one producing the responses.
            async def writer(request: Any, context: _Context) -> None:
                async with self._observed(context, labels):
                    await behavior(request, context)

            return writer

        async def stream(request: Any, context: _Context) -> AsyncIterator[Any]:
            async with self._observed(context, labels):
                async for response in behavior(request, context):
                    yield response

        return stream
