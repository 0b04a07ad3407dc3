"""What the channels are told: retries for idempotent RPCs only, round robin, live instances."""

from __future__ import annotations

import json

import pytest

from common.health_stream import Pong, now_rfc3339
from gateway.health import HealthRegistry
from gateway.metrics import GatewayMetrics
from gateway.routes import build_route_table
from gateway.settings import GatewaySettings
from gateway.upstreams import Upstreams, idempotent_methods, service_config, split_target
from tests.support.widget_service import WIDGET_SERVICE

PRODUCT = "microcommerce.product.v1.ProductService"


def test_only_get_routes_and_rpcs_marked_idempotent_are_retried() -> None:
    table = build_route_table([WIDGET_SERVICE])

    methods = idempotent_methods(table.routes, ["/microcommerce.testing.v1.WidgetService/Delete"])

    names = {method for _, method in methods}
    assert {"GetWidget", "ListWidgets", "Delete"} <= names
    assert "CreateWidget" not in names
    assert "OrderWidgets" not in names


def test_the_service_config_retries_unavailable_with_backoff_and_balances_round_robin() -> None:
    config = json.loads(service_config([("pkg.S", "Get")], max_attempts=3))

    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    [method] = config["methodConfig"]
    assert method["name"] == [{"service": "pkg.S", "method": "Get"}]
    policy = method["retryPolicy"]
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert policy["maxAttempts"] == 3
    assert policy["backoffMultiplier"] > 1


def test_one_attempt_means_no_retry_policy_at_all() -> None:
    assert "methodConfig" not in json.loads(service_config([("pkg.S", "Get")], max_attempts=1))


@pytest.mark.parametrize(
    ("target", "addresses"),
    [
        ("a:1", ("a:1",)),
        ("10.0.0.1:1, 10.0.0.2:1", ("10.0.0.1:1", "10.0.0.2:1")),
        ("dns:///product.svc:8082", ("dns:///product.svc:8082",)),
    ],
)
def test_a_comma_separated_setting_names_several_instances(
    target: str, addresses: tuple[str, ...]
) -> None:
    assert split_target(target) == addresses


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def registry_hearing_product_down(clock: Clock) -> HealthRegistry:
    registry = HealthRegistry(["product"], down_after_s=2.5, broker_down_after_s=2.0, clock=clock)
    registry.pong_received(
        Pong(
            ping_id="p",
            service="product",
            instance_id="i-1",
            address="127.0.0.1:1",
            version="1",
            status="UP",
            checks={},
            sent_at=now_rfc3339(),
        )
    )
    clock.now += 3.0  # silent past down_after_s...
    return registry


def upstreams_with(registry: HealthRegistry, clock: Clock) -> Upstreams:
    return Upstreams(
        {PRODUCT: "127.0.0.1:1"},
        timeout=5,
        metrics=GatewayMetrics(),
        settings=GatewaySettings(),
        health=registry,
        clock=clock,
    )


def test_a_service_the_health_stream_hears_down_has_its_breaker_open_while_the_broker_is_up() -> (
    None
):
    clock = Clock()
    registry = registry_hearing_product_down(clock)
    registry.ping_delivered()  # ...while the broker answers

    assert upstreams_with(registry, clock).breaker_states() == {"product": "open"}


def test_a_silent_service_says_nothing_while_the_broker_is_down() -> None:
    clock = Clock()
    registry = registry_hearing_product_down(clock)  # the broker was last heard 3 s ago

    assert registry.service_status("product") == "UNKNOWN"
    assert upstreams_with(registry, clock).breaker_states() == {"product": "closed"}


def test_a_service_never_heard_from_is_judged_by_its_calls() -> None:
    clock = Clock()
    registry = HealthRegistry(["product"], clock=clock)
    registry.ping_delivered()

    assert registry.service_status("product") == "DOWN"
    assert upstreams_with(registry, clock).breaker_states() == {"product": "closed"}
