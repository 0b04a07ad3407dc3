"""Which start-up errors become one line, and which keep their traceback (bugs)."""

from __future__ import annotations

import errno

from common.startup import explain

PORTS = {8080: "MC_GATEWAY_PORT", 9464: "MC_METRICS_PORT"}


def test_aiohttp_bind_failure_names_the_port_and_its_setting() -> None:
    error = OSError(
        errno.EADDRINUSE,
        "error while attempting to bind on address ('127.0.0.1', 9464): address already in use",
    )

    line = explain("gateway", error, ports=PORTS)

    assert line is not None
    assert line.startswith("gateway: cannot start: port 9464 is already in use")
    assert line.endswith("set MC_METRICS_PORT")


def test_grpc_bind_failure_names_the_port_and_its_setting() -> None:
    error = RuntimeError("Failed to bind to address 127.0.0.1:8080; set GRPC_VERBOSITY=debug")

    line = explain("user", error, ports=PORTS)

    assert line is not None
    assert "port 8080 is already in use" in line
    assert "MC_GATEWAY_PORT" in line


def test_a_cause_deep_in_the_chain_is_found() -> None:
    try:
        try:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed")
        except ConnectionRefusedError as refused:
            raise RuntimeError("engine failed") from refused
    except RuntimeError as wrapped:
        line = explain("payment", wrapped, ports=PORTS, database_setting="MC_PAYMENT_DATABASE_URL")

    assert line is not None
    assert line.startswith("payment: cannot start: the database is unreachable")
    assert line.endswith("check MC_PAYMENT_DATABASE_URL")


def test_an_error_that_is_not_a_start_up_problem_is_left_to_its_traceback() -> None:
    assert explain("product", KeyError("bug"), ports=PORTS, database_setting="X") is None
    assert explain("gateway", ConnectionRefusedError(), ports=PORTS) is None  # no database
