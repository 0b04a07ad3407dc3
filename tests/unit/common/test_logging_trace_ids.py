"""Log lines carry the trace and span ids of the span they were written in."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from common.logging import configure_logging, get_logger, reset_logging
from common.telemetry import continue_trace, end_trace, inject_context


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    reset_logging()


def test_inside_a_span_a_line_has_its_ids_and_outside_none(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)  # else the SDK makes no-op spans
    configure_logging("payment", "INFO")
    tracer = TracerProvider().get_tracer("test")

    with tracer.start_as_current_span("checkout") as span:
        get_logger("test").info("inside")
    get_logger("test").info("outside")

    inside, outside = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    context = span.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert "trace_id" not in outside
    assert "span_id" not in outside


CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def test_without_instrumentation_a_line_carries_the_callers_trace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("gateway", "INFO")

    token = continue_trace(f"00-{CALLER_TRACE}-{CALLER_SPAN}-01", "mc=1")
    try:
        get_logger("test").info("inside")
        sent_on = inject_context()  # what a gRPC call or a Kafka record made here carries
    finally:
        end_trace(token)
    get_logger("test").info("after")

    inside, after = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert (inside["trace_id"], inside["span_id"]) == (CALLER_TRACE, CALLER_SPAN)
    assert sent_on["traceparent"] == f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    assert sent_on["tracestate"] == "mc=1"
    assert "trace_id" not in after


@pytest.mark.parametrize(
    "traceparent",
    [None, "", "garbage", f"00-{'0' * 32}-{CALLER_SPAN}-01", f"00-{CALLER_TRACE}-{'0' * 16}-01"],
)
def test_a_missing_or_malformed_traceparent_is_dropped(traceparent: str | None) -> None:
    assert continue_trace(traceparent) is None
    assert not trace.get_current_span().get_span_context().is_valid


def test_an_instrumentations_span_is_left_current(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)  # else the SDK makes no-op spans
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("server") as server:
        assert continue_trace(f"00-{CALLER_TRACE}-{CALLER_SPAN}-01") is None
        assert trace.get_current_span() is server
