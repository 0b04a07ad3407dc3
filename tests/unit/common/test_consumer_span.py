"""A consumer handles each Kafka record inside a span that continues the producer's trace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, Tracer

from common.telemetry import consumer_span, inject_context


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)  # else the SDK makes no-op spans
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    monkeypatch.setattr("common.telemetry.tracer", lambda: tracer)
    yield exporter
    provider.shutdown()


@pytest.fixture
def producer_tracer(spans: InMemorySpanExporter) -> Tracer:
    from common import telemetry

    return telemetry.tracer()


def finished(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = [span for span in spans.get_finished_spans() if span.name == name]
    return span


def test_a_record_with_a_traceparent_header_is_handled_in_a_child_span_linked_to_it(
    spans: InMemorySpanExporter, producer_tracer: Tracer
) -> None:
    with producer_tracer.start_as_current_span("send ping") as send:
        headers = [(name, value.encode()) for name, value in inject_context().items()]

    with consumer_span("service-ping", headers, attributes={"microcommerce.service": "payment"}):
        pass

    handled = finished(spans, "service-ping process")
    sent = send.get_span_context()
    assert handled.kind is SpanKind.CONSUMER
    assert handled.context.trace_id == sent.trace_id
    assert handled.parent is not None
    assert handled.parent.span_id == sent.span_id
    assert [link.context.span_id for link in handled.links] == [sent.span_id]
    assert handled.attributes == {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": "service-ping",
        "microcommerce.service": "payment",
    }


def test_faust_style_header_dicts_and_cloudevents_envelopes_carry_the_context_too(
    spans: InMemorySpanExporter, producer_tracer: Tracer
) -> None:
    with producer_tracer.start_as_current_span("write order") as write:
        context = inject_context()

    with consumer_span("order-events", {"traceparent": context["traceparent"].encode()}):
        pass
    # No header (a producer that is not instrumented): the envelope's extension attribute.
    with consumer_span("payment-events", {}, envelope={"id": "e-1", **context}):
        pass

    for name in ("order-events process", "payment-events process"):
        handled = finished(spans, name)
        assert handled.parent is not None
        assert handled.parent.span_id == write.get_span_context().span_id


def test_a_record_without_context_starts_a_new_trace_not_a_child_of_the_loop(
    spans: InMemorySpanExporter, producer_tracer: Tracer
) -> None:
    with (
        producer_tracer.start_as_current_span("consumer loop") as loop,
        consumer_span("service-pong", None),
    ):
        pass

    handled = finished(spans, "service-pong process")
    assert handled.parent is None
    assert handled.links == ()
    assert handled.context.trace_id != loop.get_span_context().trace_id


def test_a_failure_while_handling_marks_the_span_failed_and_propagates(
    spans: InMemorySpanExporter,
) -> None:
    with pytest.raises(ValueError, match="poison"), consumer_span("user-events", []):
        raise ValueError("poison event")

    handled = finished(spans, "user-events process")
    assert handled.status.status_code is StatusCode.ERROR
    assert [event.name for event in handled.events] == ["exception"]
