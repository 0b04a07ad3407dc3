"""The health registry's verdicts, judged against a fake clock."""

from __future__ import annotations

import pytest

from common.health_stream import Pong, now_rfc3339
from gateway.health import HealthRegistry

SERVICES = ("payment", "product", "user")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def pong(
    service: str, instance_id: str, address: str, *, ping_id: str = "p", status: str = "UP"
) -> Pong:
    return Pong(
        ping_id=ping_id,
        service=service,
        instance_id=instance_id,
        address=address,
        version="0.1.0",
        status=status,
        checks={"database": status},
        sent_at=now_rfc3339(),
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def registry(clock: FakeClock) -> HealthRegistry:
    return HealthRegistry(SERVICES, down_after_s=2.5, broker_down_after_s=2.0, clock=clock)


def hear_from_everyone(registry: HealthRegistry) -> None:
    registry.ping_delivered()
    for port, service in enumerate(SERVICES, start=8081):
        registry.pong_received(pong(service, f"{service}-1", f"127.0.0.1:{port}"))


def test_is_up_when_broker_and_every_service_answer(registry: HealthRegistry) -> None:
    hear_from_everyone(registry)

    body = registry.snapshot()

    assert body["status"] == "UP"
    assert body["broker"] == {"status": "UP"}
    assert {s: body["services"][s]["status"] for s in SERVICES} == dict.fromkeys(SERVICES, "UP")


def test_a_silent_service_is_down_and_the_whole_degraded(
    registry: HealthRegistry, clock: FakeClock
) -> None:
    hear_from_everyone(registry)
    clock.advance(2.0)
    registry.ping_delivered()
    registry.pong_received(pong("payment", "payment-1", "127.0.0.1:8081"))
    registry.pong_received(pong("user", "user-1", "127.0.0.1:8083"))
    clock.advance(1.0)

    body = registry.snapshot()

    assert body["services"]["product"]["status"] == "DOWN"
    assert body["services"]["product"]["instances"][0]["status"] == "DOWN"
    assert body["status"] == "DEGRADED"


def test_is_down_when_no_service_answers(registry: HealthRegistry, clock: FakeClock) -> None:
    hear_from_everyone(registry)
    clock.advance(2.6)
    registry.ping_delivered()

    assert registry.snapshot()["status"] == "DOWN"


def test_an_unreachable_broker_makes_services_unknown_not_down(
    registry: HealthRegistry, clock: FakeClock
) -> None:
    hear_from_everyone(registry)
    clock.advance(3.5)

    body = registry.snapshot()

    assert body["broker"] == {"status": "DOWN"}
    assert body["status"] == "DEGRADED"
    assert {s: body["services"][s]["status"] for s in SERVICES} == dict.fromkeys(
        SERVICES, "UNKNOWN"
    )


def test_an_instance_reporting_a_failed_check_is_down(registry: HealthRegistry) -> None:
    hear_from_everyone(registry)
    registry.pong_received(pong("user", "user-1", "127.0.0.1:8083", status="DOWN"))

    body = registry.snapshot()

    assert body["services"]["user"]["status"] == "DOWN"
    assert body["services"]["user"]["instances"][0]["checks"] == {"database": "DOWN"}


def test_two_instances_of_a_service_are_listed_separately(registry: HealthRegistry) -> None:
    hear_from_everyone(registry)
    registry.pong_received(pong("product", "product-2", "127.0.0.1:9082"))

    instances = registry.snapshot()["services"]["product"]["instances"]

    assert [i["id"] for i in instances] == ["product-1", "product-2"]


def test_a_restarted_instance_replaces_its_predecessor_at_the_same_address(
    registry: HealthRegistry,
) -> None:
    hear_from_everyone(registry)
    registry.pong_received(pong("product", "product-restarted", "127.0.0.1:8082"))

    instances = registry.snapshot()["services"]["product"]["instances"]

    assert [i["id"] for i in instances] == ["product-restarted"]


def test_round_trip_time_is_measured_from_our_own_ping(
    registry: HealthRegistry, clock: FakeClock
) -> None:
    registry.ping_sent("ping-42")
    clock.advance(0.012)
    registry.pong_received(pong("user", "user-1", "127.0.0.1:8083", ping_id="ping-42"))

    assert registry.snapshot()["services"]["user"]["rtt_ms"] == pytest.approx(12.0)


def test_departed_instances_are_forgotten_after_a_while(
    registry: HealthRegistry, clock: FakeClock
) -> None:
    hear_from_everyone(registry)
    clock.advance(61)
    registry.ping_delivered()

    body = registry.snapshot()

    assert body["services"]["payment"]["instances"] == []
    assert body["services"]["payment"]["last_seen"] is None


@pytest.mark.parametrize("silence_s", [0.5, 1.9, 2.1, 2.6, 10.0])
def test_when_everything_falls_silent_at_once_services_never_read_down(
    registry: HealthRegistry, clock: FakeClock, silence_s: float
) -> None:
    # A frozen broker stops pongs and acknowledgements together; that must read as a broker
    # problem (services UNKNOWN), never as every service DOWN.
    hear_from_everyone(registry)
    clock.advance(silence_s)

    assert registry.snapshot()["status"] in {"UP", "DEGRADED"}


def test_refuses_thresholds_that_would_blame_services_for_a_broker_outage() -> None:
    with pytest.raises(ValueError, match="broker"):
        HealthRegistry(SERVICES, down_after_s=2.0, broker_down_after_s=3.0)
