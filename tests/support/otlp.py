"""An OTLP trace receiver for tests: what real processes export, over gRPC and http/protobuf.

No collector package installs here (TOOLS.md), and none is needed: the OTLP trace service is
one unary RPC (``TraceService/Export``) and one HTTP route (``POST /v1/traces``), both taking
an ``ExportTraceServiceRequest``. Spans are flattened with their resource's ``service.name``
and the protocol they came by, so tests can ask which process exported what.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from localrun.broker import free_port

# opentelemetry.proto's enums, by the names the SDK uses.
SERVER = trace_pb2.Span.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SPAN_KIND_CLIENT
PRODUCER = trace_pb2.Span.SPAN_KIND_PRODUCER
CONSUMER = trace_pb2.Span.SPAN_KIND_CONSUMER
INTERNAL = trace_pb2.Span.SPAN_KIND_INTERNAL
ERROR = trace_pb2.Status.STATUS_CODE_ERROR


def _value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _attributes(pairs: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, ids in the W3C hex form."""

    protocol: str  # "grpc" or "http/protobuf": how it reached the receiver
    service: str  # its resource's service.name
    instance: str  # its resource's service.instance.id
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root
    name: str
    kind: int
    status: int
    status_message: str
    attributes: dict[str, Any]
    links: tuple[str, ...]  # span ids it links to

    @property
    def failed(self) -> bool:
        return self.status == ERROR


class SpanSink:
    """Every span received so far, in arrival order."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest, protocol: str) -> None:
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            protocol=protocol,
                            service=str(resource.get("service.name", "")),
                            instance=str(resource.get("service.instance.id", "")),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=span.kind,
                            status=span.status.code,
                            status_message=span.status.message,
                            attributes=_attributes(span.attributes),
                            links=tuple(link.span_id.hex() for link in span.links),
                        )
                    )

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.trace_id == trace_id]


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: SpanSink) -> None:
        self._sink = sink

    async def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._sink.add(request, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


@dataclass(frozen=True)
class Receiver:
    """The sink and the endpoints (``OTEL_EXPORTER_OTLP_ENDPOINT`` values) that feed it."""

    sink: SpanSink
    grpc_endpoint: str
    http_endpoint: str


@asynccontextmanager
async def otlp_receiver() -> AsyncIterator[Receiver]:
    """An OTLP/gRPC and an OTLP/HTTP (protobuf) receiver on free loopback ports, one sink."""
    sink = SpanSink()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        _TraceService(sink), server
    )
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()

    async def export(request: web.Request) -> web.Response:
        message = trace_service_pb2.ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        sink.add(message, "http/protobuf")
        answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=answer, content_type="application/x-protobuf")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", export)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    http_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    try:
        yield Receiver(sink, f"http://127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}")
    finally:
        await runner.cleanup()
        await server.stop(grace=None)
