"""JSON logging: one object per line for structlog and standard-library records alike."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from common.logging import configure_logging, get_logger, reset_logging
from common.request_context import request_id_var


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    reset_logging()


def records(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines()]


def test_a_structlog_event_is_one_json_line_with_timestamp_level_event_and_service(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("payment", "INFO")

    get_logger("test").info("order_placed", order_id="o-1")

    [record] = records(capsys)
    assert record["event"] == "order_placed"
    assert record["level"] == "info"
    assert record["service"] == "payment"
    assert record["order_id"] == "o-1"
    assert record["logger"] == "test"
    timestamp = datetime.fromisoformat(record["timestamp"])
    assert timestamp.utcoffset() == UTC.utcoffset(None)
    assert "request_id" not in record


def test_a_logged_service_value_never_replaces_the_process_own_service_field(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("user", "INFO")

    get_logger("test").warning("credential_refused", service="payment")
    logging.getLogger("lib").warning("refused", extra={"service": "product"})

    structlog_record, stdlib_record = records(capsys)
    assert structlog_record["service"] == "user"
    assert structlog_record["logged_service"] == "payment"
    assert stdlib_record["service"] == "user"
    assert stdlib_record["logged_service"] == "product"


def test_standard_library_records_are_rendered_by_the_same_json_renderer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("product", "INFO")

    logging.getLogger("aiokafka").warning("lost %s of %d brokers", "one", 3)

    [record] = records(capsys)
    assert record["event"] == "lost one of 3 brokers"
    assert record["level"] == "warning"
    assert record["logger"] == "aiokafka"
    assert record["service"] == "product"
    assert "timestamp" in record


def test_the_request_id_in_the_context_is_on_structlog_and_standard_library_records(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("user", "INFO")
    token = request_id_var.set("req-42")
    try:
        get_logger().info("from_structlog")
        logging.getLogger("grpc.aio").info("from the standard library")
    finally:
        request_id_var.reset(token)
    get_logger().info("outside_a_request")

    first, second, third = records(capsys)
    assert first["request_id"] == "req-42"
    assert second["request_id"] == "req-42"
    assert "request_id" not in third


def test_configuring_twice_writes_each_record_once_with_the_latest_settings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("payment", "INFO")
    configure_logging("product", "DEBUG")

    get_logger().debug("once")
    logging.getLogger("grpc").debug("once too")

    assert [(r["event"], r["service"]) for r in records(capsys)] == [
        ("once", "product"),
        ("once too", "product"),
    ]


def test_records_below_the_level_are_dropped(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("payment", "warning")

    get_logger().info("dropped")
    logging.getLogger("faust").info("dropped too")
    get_logger().warning("kept")

    assert [r["event"] for r in records(capsys)] == ["kept"]


def test_an_exception_is_logged_with_its_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("payment", "INFO")

    try:
        raise RuntimeError("the cause")
    except RuntimeError:
        get_logger().exception("it_failed")

    [record] = records(capsys)
    assert record["level"] == "error"
    assert "RuntimeError: the cause" in record["exception"]


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("payment", "LOUD")


def test_every_line_names_the_process_instance_it_was_given(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("payment", "INFO", instance="pod-7-1a2b3c4d")

    get_logger("test").info("structlog_event")
    logging.getLogger("grpc").warning("a library's record")

    lines = records(capsys)
    assert [line["instance"] for line in lines] == ["pod-7-1a2b3c4d", "pod-7-1a2b3c4d"]
    assert all(line["service"] == "payment" for line in lines)


def test_a_process_without_an_instance_id_gets_one_of_its_own(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("migrations", "INFO")
    get_logger("test").info("first")
    configure_logging("migrations", "INFO")
    get_logger("test").info("second")

    first, second = (line["instance"] for line in records(capsys))
    assert first
    assert second
    assert first != second
