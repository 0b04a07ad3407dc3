"""The gateway's health gauges: instances per service by status, RTT per instance, broker."""

from __future__ import annotations

import pytest

from common.health_stream import Pong, now_rfc3339
from gateway.health import HealthRegistry
from gateway.metrics import GatewayMetrics


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pong(service: str, instance_id: str, address: str, ping_id: str) -> Pong:
    return Pong(
        ping_id=ping_id,
        service=service,
        instance_id=instance_id,
        address=address,
        version="0.1.0",
        status="UP",
        checks={},
        sent_at=now_rfc3339(),
    )


def test_gauges_follow_what_the_health_stream_heard() -> None:
    clock = FakeClock()
    registry = HealthRegistry(("payment", "product"), clock=clock)
    metrics = GatewayMetrics()
    registry.ping_sent("p1")
    registry.ping_delivered()
    clock.now += 0.004
    registry.pong_received(pong("payment", "a", "10.0.0.1:8081", "p1"))
    registry.pong_received(pong("payment", "b", "10.0.0.2:8081", "p1"))

    metrics.observe_health(registry.snapshot())
    value = metrics.registry.get_sample_value

    assert value("gateway_health_broker_up") == 1
    assert value("gateway_health_instances", {"service": "payment", "status": "UP"}) == 2
    assert value("gateway_health_instances", {"service": "product", "status": "UP"}) == 0
    rtt = value("gateway_health_rtt_seconds", {"service": "payment", "instance": "10.0.0.1:8081"})
    assert rtt == pytest.approx(0.004)

    clock.now += 3.0  # past down_after_s: the broker answers, the instances do not
    registry.ping_delivered()
    metrics.observe_health(registry.snapshot())

    assert value("gateway_health_instances", {"service": "payment", "status": "UP"}) == 0
    assert value("gateway_health_instances", {"service": "payment", "status": "DOWN"}) == 2

    clock.now += 3.0  # the broker is silent too: the instances' state is unknown
    metrics.observe_health(registry.snapshot())

    assert value("gateway_health_broker_up") == 0
    assert value("gateway_health_instances", {"service": "payment", "status": "UNKNOWN"}) == 2


def test_the_gateway_registry_exports_process_metrics() -> None:
    metrics = GatewayMetrics()

    assert metrics.registry.get_sample_value("process_resident_memory_bytes") is not None
