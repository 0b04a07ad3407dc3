"""The chart's alerts: valid PromQL, a severity and runbook each, and a unit test per alert that
shows it firing when it should and staying quiet when it should not (promtool test rules)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from tests.monitoring.promtool import ALERTS, promtool

SEVERITIES = {"critical", "warning", "info"}


def alert_rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


# Series names too long for one line of CASES.
_DEAD_RELEASE = (
    'mc_consumer_dead_letters_total{consumer="release-ended-orders",cause="undecodable"}'
)
_DEAD_ERASE = (
    'mc_consumer_dead_letters_total{consumer="erase-deleted-users",cause="handler_failed"}'
)

# Per alert: input series (1-minute samples, promtool's expanding notation), then the label sets
# expected firing at an evaluation time ([] = quiet). Each alert has a firing and a quiet case.
Case = tuple[dict[str, str], str, list[dict[str, str]]]
ORDERS_LAG = "group='payment-events',topic='order-events'"
CASES: dict[str, list[Case]] = {
    "MicroCommerceServiceInstanceMissing": [
        (
            {
                'gateway_health_instances{service="payment",status="UP"}': "1 1 0x20",
                'gateway_health_instances{service="product",status="UP"}': "1x22",
            },
            "10m",
            [{"service": "payment"}],
        ),
        ({'gateway_health_instances{service="user",status="UP"}': "2x22"}, "10m", []),
    ],
    "MicroCommerceBrokerDown": [
        (
            {
                'gateway_health_broker_up{instance="gw1"}': "0x20",
                'gateway_health_broker_up{instance="gw2"}': "1x5 0x15",
            },
            "12m",
            [{}],
        ),
        (
            {
                'gateway_health_broker_up{instance="gw1"}': "0x20",
                'gateway_health_broker_up{instance="gw2"}': "1x20",
            },
            "12m",
            [],
        ),
    ],
    "MicroCommerceErrorBudgetFastBurn": [
        (
            {
                'gateway_http_requests_total{status="200"}': "0+1000x80",
                'gateway_http_requests_total{status="503"}': "0x60 100+100x20",
            },
            "75m",
            [{}],
        ),
        (
            {
                'gateway_http_requests_total{status="200"}': "0+1000x80",
                'gateway_http_requests_total{status="503"}': "0+5x80",
            },
            "75m",
            [],
        ),
    ],
    "MicroCommerceErrorBudgetSlowBurn": [
        (
            {
                'gateway_http_requests_total{status="200"}': "0+1000x60",
                'gateway_http_requests_total{status="500"}': "0+10x60",
            },
            "40m",
            [{}],
        ),
        (
            {
                'gateway_http_requests_total{status="200"}': "0+1000x60",
                'gateway_http_requests_total{status="500"}': "0+3x60",
            },
            "40m",
            [],
        ),
    ],
    "MicroCommerceLatencyBudgetFastBurn": [
        (
            {
                'gateway_http_request_duration_seconds_bucket{le="0.5"}': "0+800x40",
                "gateway_http_request_duration_seconds_count": "0+1000x40",
            },
            "30m",
            [{}],
        ),
        (
            {
                'gateway_http_request_duration_seconds_bucket{le="0.5"}': "0+995x40",
                "gateway_http_request_duration_seconds_count": "0+1000x40",
            },
            "30m",
            [],
        ),
    ],
    "MicroCommerceLatencyBudgetSlowBurn": [
        (
            {
                'gateway_http_request_duration_seconds_bucket{le="0.5"}': "0+900x40",
                "gateway_http_request_duration_seconds_count": "0+1000x40",
            },
            "30m",
            [{}],
        ),
        (
            {
                'gateway_http_request_duration_seconds_bucket{le="0.5"}': "0+970x40",
                "gateway_http_request_duration_seconds_count": "0+1000x40",
            },
            "30m",
            [],
        ),
    ],
    "MicroCommerceOutboxEventsStale": [
        (
            {
                'mc_outbox_oldest_unpublished_age_seconds{service="payment"}': "0+60x20",
                'mc_outbox_oldest_unpublished_age_seconds{service="product"}': "0x20",
            },
            "15m",
            [{"service": "payment"}],
        ),
        # A backlog that keeps being published stays young.
        ({'mc_outbox_oldest_unpublished_age_seconds{service="user"}': "30 5 40 2x20"}, "15m", []),
    ],
    "MicroCommerceConsumerLagHigh": [
        (
            {
                f"mc_kafka_consumer_lag{{{ORDERS_LAG},partition='0'}}": "0+200x25",
                f"mc_kafka_consumer_lag{{{ORDERS_LAG},partition='1'}}": "0x25",
            },
            "17m",
            [{"group": "payment-events", "topic": "order-events"}],
        ),
        # Bursts the group works off are no alert.
        ({f"mc_kafka_consumer_lag{{{ORDERS_LAG},partition='2'}}": "0 1500 20 900x20"}, "17m", []),
    ],
    "MicroCommerceEventsDeadLettered": [
        (
            {
                _DEAD_RELEASE: "0 0 1x20",
                _DEAD_ERASE: "0x20",
            },
            "10m",
            [{"consumer": "release-ended-orders", "cause": "undecodable"}],
        ),
        # Once nothing new is dead-lettered for 15 minutes, it stops.
        (
            {
                _DEAD_RELEASE: "0 1x40",
            },
            "30m",
            [],
        ),
    ],
    "MicroCommerceCheckoutFailureRatioHigh": [
        (
            {
                'mc_checkout_outcomes_total{outcome="confirmed"}': "0+10x40",
                'mc_checkout_outcomes_total{outcome="failed",reason="card_declined"}': "0+5x40",
            },
            "30m",
            [{}],
        ),
        (
            {
                'mc_checkout_outcomes_total{outcome="confirmed"}': "0+10x40",
                'mc_checkout_outcomes_total{outcome="failed",reason="card_declined"}': "0+1x40",
            },
            "30m",
            [],
        ),
    ],
    "MicroCommerceCircuitBreakerOpen": [
        (
            {
                'gateway_circuit_breaker_state{upstream="payment",state="open"}': "0 0 1x10",
                'gateway_circuit_breaker_state{upstream="product",state="open"}': "0x12",
            },
            "5m",
            [{"upstream": "payment"}],
        ),
        # Open for a moment, then half-open and closed again: a blip is no page.
        (
            {'gateway_circuit_breaker_state{upstream="user",state="open"}': "0 1 0x10"},
            "5m",
            [],
        ),
    ],
    "MicroCommerceRateLimitRejectionsSurge": [
        (
            {
                'gateway_rate_limited_total{group="auth",key="address"}': "0+600x20",
                'gateway_http_requests_total{status="429"}': "0+600x20",
                'gateway_http_requests_total{status="200"}': "0+3000x20",
            },
            "15m",
            [{}],
        ),
        (
            {
                'gateway_rate_limited_total{group="auth",key="address"}': "0+30x20",
                'gateway_http_requests_total{status="429"}': "0+30x20",
                'gateway_http_requests_total{status="200"}': "0+3000x20",
            },
            "15m",
            [],
        ),
    ],
}

_LABEL_REFERENCE = re.compile(r"\{\{\s*\$labels\.(\w+)\s*\}\}")


def _expected_alert(rule: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    annotations = {
        name: _LABEL_REFERENCE.sub(lambda match: labels.get(match.group(1), ""), text)
        for name, text in rule["annotations"].items()
    }
    return {"exp_labels": {**labels, **rule["labels"]}, "exp_annotations": annotations}


def unit_tests(rules: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The promtool unit-test file for CASES."""
    tests = []
    for alert, cases in CASES.items():
        for series, eval_time, firing in cases:
            tests.append(
                {
                    "interval": "1m",
                    "input_series": [
                        {"series": name, "values": values} for name, values in series.items()
                    ],
                    "alert_rule_test": [
                        {
                            "eval_time": eval_time,
                            "alertname": alert,
                            "exp_alerts": [
                                _expected_alert(rules[alert], labels) for labels in firing
                            ],
                        }
                    ],
                }
            )
    return {"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": tests}


def test_promtool_accepts_the_alert_rules() -> None:
    checked = promtool("check", "rules", ALERTS)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("alert", sorted(alert_rules()))
def test_each_alert_has_a_severity_and_a_runbook(alert: str) -> None:
    rule = alert_rules()[alert]

    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["annotations"]["runbook"].strip()
    assert rule["annotations"]["summary"].strip()


def test_each_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    assert set(CASES) == set(alert_rules())
    for alert, cases in CASES.items():
        assert any(firing for _, _, firing in cases), f"{alert} never fires"
        assert any(not firing for _, _, firing in cases), f"{alert} is never quiet"


def test_every_alert_fires_and_stays_quiet_as_its_unit_tests_say(tmp_path: Path) -> None:
    test_file = tmp_path / "alerts_test.yaml"
    test_file.write_text(yaml.safe_dump(unit_tests(alert_rules()), sort_keys=False))

    tested = promtool("test", "rules", test_file)

    assert tested.returncode == 0, tested.stdout + tested.stderr
