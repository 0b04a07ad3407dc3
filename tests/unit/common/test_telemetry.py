"""Tracing configuration from the OTEL_* variables (common.telemetry)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpExporter,
)

from common.telemetry import resource_for, span_exporter, tracing_disabled


def test_without_an_endpoint_nothing_is_exported() -> None:
    assert span_exporter({}) is None
    assert span_exporter({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) is None


def test_an_endpoint_exports_over_the_protocol_named() -> None:
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}
    assert isinstance(span_exporter(endpoint), HttpExporter)  # the specification's default
    grpc = span_exporter({**endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert isinstance(grpc, GrpcExporter)
    traces_only = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces"}
    assert isinstance(span_exporter(traces_only), HttpExporter)


def test_traces_exporter_none_turns_export_off() -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_TRACES_EXPORTER": "none"}
    assert span_exporter(environ) is None


def test_an_unknown_protocol_is_refused() -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "x", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
    with pytest.raises(ValueError, match="http/json"):
        span_exporter(environ)


def test_each_process_keeps_its_own_service_name_in_a_shared_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Resource.create reads the real environment, as the processes do.
    monkeypatch.setenv("OTEL_SERVICE_NAME", "microcommerce")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test,team=shop")
    payment = resource_for("payment").attributes
    gateway = resource_for("gateway").attributes
    assert payment["service.name"] == "payment"
    assert gateway["service.name"] == "gateway"
    assert payment["service.namespace"] == "microcommerce"
    assert payment["deployment.environment"] == "test"
    assert payment["team"] == "shop"


def test_the_resource_names_the_process_instance_its_log_lines_name() -> None:
    resource = resource_for("product", {}, instance="pod-3-0badf00d")

    assert resource.attributes["service.instance.id"] == "pod-3-0badf00d"


def test_the_sdk_can_be_switched_off() -> None:
    assert tracing_disabled({"OTEL_SDK_DISABLED": "true"})
    assert not tracing_disabled({})


def _instrumented_after_configure(extra_env: dict[str, str]) -> dict[str, bool]:
    # A process of its own: configure_tracing sets process-wide state (the tracer provider,
    # the libraries' patches) once.
    script = (
        "import json, sys\n"
        "from common.telemetry import GATEWAY_LIBRARIES, configure_tracing, instrumented\n"
        "configure_tracing('gateway', GATEWAY_LIBRARIES)\n"
        "print(json.dumps({name: instrumented(name) for name in sorted(GATEWAY_LIBRARIES)}))\n"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**environ, **extra_env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    answer: dict[str, bool] = json.loads(result.stdout.splitlines()[-1])
    return answer


def test_without_an_exporter_no_library_is_instrumented() -> None:
    assert not any(_instrumented_after_configure({}).values())


def test_with_an_exporter_every_library_of_the_process_is_instrumented() -> None:
    exporting = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}
    assert all(_instrumented_after_configure(exporting).values())
