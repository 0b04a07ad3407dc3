"""Log lines carry the trace and span ids of the span they were written in."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from common.logging import configure_logging, get_logger, reset_logging


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
