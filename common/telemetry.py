"""OpenTelemetry tracing for every process: configured by the standard OTEL_* variables.

``configure_tracing(name)`` is called once at the start of each process (gateway, payment,
product, user). It installs the SDK's tracer provider and the maintained instrumentations
(aiohttp server, grpc.aio server and client, asyncpg, redis, aiokafka); our own spans (saga
steps, outbox publishes, units of work) come from ``tracer()``, and every Kafka consumer
handles each record inside ``consumer_span(topic, headers)``.

- ``OTEL_SDK_DISABLED=true``: nothing is installed (the API's no-op tracer remains).
- No ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (or
  ``OTEL_TRACES_EXPORTER=none``): nothing is exported, so the library instrumentations are not
  installed either: their spans would be made and dropped, and on the gateway they cost about
  40 % of its CPU per request. Our own spans are still made (their ids are in the log lines),
  and the W3C context still travels: the gateway and the gRPC boundary continue an incoming
  ``traceparent`` (``continue_trace``), gRPC clients send the current one
  (``client_interceptors``), Kafka records carry it in their headers (``kafka_send_headers``).
- ``OTEL_EXPORTER_OTLP_PROTOCOL`` (or ``..._TRACES_PROTOCOL``): ``grpc`` or ``http/protobuf``
  (the specification's default).
- ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` and ``OTEL_RESOURCE_ATTRIBUTES`` are
  read by the SDK itself.
- ``service.name`` is always the process's own name, so processes sharing one environment
  (``make run``) stay apart; an ``OTEL_SERVICE_NAME`` set there names the deployment instead,
  as ``service.namespace``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import (
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    SERVICE_NAMESPACE,
    Resource,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACER_NAME = "microcommerce"
_configured: list[str] = []  # the name this process configured tracing under, once
_instrumented: set[str] = set()  # the libraries this process instrumented


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


def tracing_disabled(environ: Mapping[str, str] = os.environ) -> bool:
    """True when ``OTEL_SDK_DISABLED`` turns the SDK off."""
    return _truthy(environ.get("OTEL_SDK_DISABLED"))


def _protocol(environ: Mapping[str, str]) -> str:
    return (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()


def span_exporter(environ: Mapping[str, str] = os.environ) -> SpanExporter | None:
    """The OTLP exporter the variables ask for, or None when they name no endpoint."""
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return None
    if not (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    ):
        return None
    protocol = _protocol(environ)
    # The exporters read the endpoint, headers, timeout and TLS settings from the same
    # variables themselves; imported here so a process without an endpoint loads neither.
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        return HttpExporter()
    raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL {protocol!r}: use grpc or http/protobuf")


def resource_for(
    service: str, environ: Mapping[str, str] = os.environ, *, instance: str | None = None
) -> Resource:
    """The process's resource: OTEL_RESOURCE_ATTRIBUTES, then our own ``service.name`` (and
    ``service.instance.id``, the id its log lines and health-stream answers carry)."""
    attributes: dict[str, str] = {}
    shared_name = environ.get("OTEL_SERVICE_NAME", "").strip()
    if shared_name and shared_name != service:
        attributes[SERVICE_NAMESPACE] = shared_name
    # Resource.create lets OTEL_SERVICE_NAME override service.name; merging ours after it is
    # what keeps four processes in one environment distinguishable.
    ours = {SERVICE_NAME: service}
    if instance:
        ours[SERVICE_INSTANCE_ID] = instance
    return Resource.create(attributes).merge(Resource(ours))


# What each process uses, so each instruments (and imports) only its own libraries: a service
# has no use for the redis or aiohttp-server instrumentations (a redis import alone is ~60
# modules held in every service's memory), the gateway none for asyncpg.
GATEWAY_LIBRARIES = frozenset(("aiohttp_server", "grpc_client", "redis", "aiokafka"))
SERVICE_LIBRARIES = frozenset(("grpc_server", "grpc_client", "asyncpg", "aiokafka"))
ALL_LIBRARIES = GATEWAY_LIBRARIES | SERVICE_LIBRARIES


def configure_tracing(
    service: str, libraries: frozenset[str] = ALL_LIBRARIES, *, instance: str | None = None
) -> None:
    """Install tracing for this process under ``service`` (idempotent for one process), with
    the instrumentations of ``libraries`` (names from ``ALL_LIBRARIES``)."""
    if tracing_disabled() or _configured:
        return
    _configured.append(service)
    provider = TracerProvider(resource=resource_for(service, instance=instance))
    exporter = span_exporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if exporter is not None:
        # Without an exporter the instrumentations' spans would go nowhere: what they would
        # still give (ids in log lines, propagation) is done far more cheaply by
        # continue_trace and client_interceptors.
        _instrument_libraries(libraries)


def instrumented(library: str) -> bool:
    """Whether this process installed the instrumentation of ``library`` (a name of
    ``ALL_LIBRARIES``): then it propagates the trace context itself, and ours must not."""
    return library in _instrumented


def _instrument_libraries(libraries: frozenset[str]) -> None:
    from opentelemetry.instrumentation.grpc import filters

    unknown = libraries - ALL_LIBRARIES
    if unknown:
        raise ValueError(f"no instrumentation for {sorted(unknown)}")
    # Health and reflection calls are probes, not work: untraced. It also keeps the
    # instrumentation's streaming interceptor off the long-lived health Watch streams, which
    # crashed the process when the server stopped under them.
    not_probes = filters.negate(
        filters.any_of(filters.health_check(), filters.service_prefix("grpc.reflection"))
    )
    for name in sorted(libraries):
        instrumentor = _INSTRUMENTORS[name](not_probes)
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()
        _instrumented.add(name)


def _aiohttp_server(_filter: Any) -> Any:
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

    return AioHttpServerInstrumentor()


def _grpc_server(filter_: Any) -> Any:
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorServer

    return GrpcAioInstrumentorServer(filter_=filter_)  # type: ignore[no-untyped-call]


def _grpc_client(filter_: Any) -> Any:
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient

    return GrpcAioInstrumentorClient(filter_=filter_)  # type: ignore[no-untyped-call]


def _asyncpg(_filter: Any) -> Any:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    return AsyncPGInstrumentor()  # type: ignore[no-untyped-call]


def _redis(_filter: Any) -> Any:
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    return RedisInstrumentor()


def _aiokafka(_filter: Any) -> Any:
    from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor

    return AIOKafkaInstrumentor()


# Each patches its library's entry points (web.Application, grpc.aio.server and channels,
# asyncpg.connect, redis commands, aiokafka send/getone), so it runs before any of them is used;
# imported only when chosen. asyncpg, not SQLAlchemy: that instrumentation does not support
# SQLAlchemy 2.1.
_INSTRUMENTORS: dict[str, Callable[[Any], Any]] = {
    "aiohttp_server": _aiohttp_server,
    "grpc_server": _grpc_server,
    "grpc_client": _grpc_client,
    "asyncpg": _asyncpg,
    "redis": _redis,
    "aiokafka": _aiokafka,
}


def shutdown_tracing() -> None:
    """Flush spans still queued for export (a process's last step)."""
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if callable(shutdown):
        shutdown()


def tracer() -> trace.Tracer:
    """Our own spans' tracer (the global provider's, so tests may swap it)."""
    return trace.get_tracer(TRACER_NAME)


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[Span]:
    """A span of ours around a block; an exception marks it as an error and propagates."""
    with tracer().start_as_current_span(name, attributes=attributes) as current:
        yield current


def mark_error(current: Span, description: str) -> None:
    """Mark ``current`` failed for a reason that is an answer, not an exception (a decline)."""
    current.set_status(Status(StatusCode.ERROR, description))


def mark_current_error(description: str) -> None:
    """Mark the current span failed for a reason that is an answer, not an exception."""
    mark_error(trace.get_current_span(), description)


def mark_failed(current: Span, error: BaseException) -> None:
    """Record ``error`` on ``current`` and mark it failed."""
    current.record_exception(error)
    current.set_status(Status(StatusCode.ERROR, type(error).__name__))


def kafka_send_headers() -> list[tuple[str, bytes]]:
    """Record headers for an ``AIOKafkaProducer.send`` carrying the current trace context.

    Empty (but a list the instrumentation can append to) when the aiokafka instrumentation
    is active: its send span injects its own ``traceparent``, and it appends, so ours would
    be a second one.
    """
    # Never imported means never instrumented (and importing it would load it for nothing).
    module = sys.modules.get("opentelemetry.instrumentation.aiokafka")
    if module is not None and module.AIOKafkaInstrumentor().is_instrumented_by_opentelemetry:
        return []
    return [(name, value.encode()) for name, value in inject_context().items()]


def inject_context(carrier: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """The current context as W3C headers (``traceparent``, ``tracestate``)."""
    headers: dict[str, str] = dict(carrier or {})
    propagate.inject(headers)
    return headers


def extract_context(headers: Mapping[str, str]) -> Context:
    """The context W3C headers carry (an empty one when they carry none)."""
    return propagate.extract(dict(headers))


_W3C = TraceContextTextMapPropagator()


def continue_trace(traceparent: str | None, tracestate: str | None = None) -> object | None:
    """Make the caller's W3C context current, unless a span already is (an instrumentation's
    server span): without instrumentations, this is what puts the caller's trace id in the
    log lines of a request and sends it on. Returns the token for ``end_trace``, or None when
    nothing was attached (no or malformed ``traceparent``: dropped, as W3C asks)."""
    if not traceparent or trace.get_current_span().get_span_context().is_valid:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    parent = _W3C.extract(carrier)
    if not trace.get_current_span(parent).get_span_context().is_valid:
        return None
    return otel_context.attach(parent)


def end_trace(token: object | None) -> None:
    """Undo ``continue_trace`` (a no-op for its None)."""
    if token is not None:
        otel_context.detach(token)  # type: ignore[arg-type]  # attach's own token


class _TraceContextClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Sends the current span's ``traceparent`` (and ``tracestate``) with each unary call, as
    the gRPC client instrumentation would, for processes that do not install it."""

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        headers = inject_context()
        if headers:
            metadata = [*(client_call_details.metadata or ()), *headers.items()]
            client_call_details = client_call_details._replace(metadata=metadata)
        return await continuation(client_call_details, request)


def client_interceptors() -> list[Any]:
    """Interceptors for a gRPC channel of ours: the trace context, unless the gRPC client
    instrumentation (installed with an exporter) already sends it."""
    if instrumented("grpc_client"):
        return []
    return [_TraceContextClientInterceptor()]


# Record headers as the clients hand them over: aiokafka's (name, bytes) pairs, Faust's dict.
KafkaHeaders = Mapping[str, bytes | str] | Iterable[tuple[str, bytes | str]]

# The W3C headers (also the CloudEvents distributed-tracing extension's attribute names).
_TRACE_FIELDS = ("traceparent", "tracestate")


def _trace_carrier(
    headers: KafkaHeaders | None, envelope: Mapping[str, Any] | None
) -> dict[str, str]:
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
    carrier: dict[str, str] = {}
    for name, value in pairs:
        if name.lower() in _TRACE_FIELDS:
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            carrier[name.lower()] = text
    if "traceparent" not in carrier and envelope is not None:
        # A record without the header (a producer that is not instrumented, a replay tool)
        # may still carry the context in its CloudEvents envelope.
        carrier = {name: str(envelope[name]) for name in _TRACE_FIELDS if envelope.get(name)}
    return carrier


@contextmanager
def consumer_span(
    topic: str,
    headers: KafkaHeaders | None,
    *,
    envelope: Mapping[str, Any] | None = None,
    attributes: Mapping[str, str | int] | None = None,
) -> Iterator[Span]:
    """Handle one Kafka record inside a CONSUMER span that continues its producer's trace.

    The context comes from the record's ``traceparent`` header (or, failing that, from the
    CloudEvents ``traceparent`` attribute of ``envelope``). The span is a child of the
    producer's span and also links to it, as the messaging conventions ask, so back-ends that
    show either see where the record came from. A record without context starts a new trace,
    never a child of whatever span the consuming loop happens to run in. An exception marks
    the span failed and propagates.
    """
    parent = extract_context(_trace_carrier(headers, envelope))
    producer = trace.get_current_span(parent).get_span_context()
    with tracer().start_as_current_span(
        f"{topic} process",
        context=parent,  # an empty context when the record carries none: a new root
        kind=SpanKind.CONSUMER,
        links=[Link(producer)] if producer.is_valid else None,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": str(topic),
            **(attributes or {}),
        },
    ) as current:
        yield current
