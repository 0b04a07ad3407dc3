"""The Grafana dashboard: every panel query valid PromQL (compiled by promtool as a recording
rule), and every metric the dashboard and the alerts read exported by our code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from common.metrics import REGISTRY
from gateway.metrics import GatewayMetrics
from tests.monitoring.promql_names import exported_names, metric_names
from tests.monitoring.promtool import ALERTS, DASHBOARD, promtool

# Series Prometheus makes itself rather than scraping them from us.
PROMETHEUS_OWN = frozenset({"up"})


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def alert_queries() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def test_the_dashboard_has_a_query_in_every_data_panel() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    data_panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]

    assert data_panels
    assert all(panel.get("targets") for panel in data_panels)
    titles = [panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"]
    assert titles[0] == "Overview"
    assert {"payment_svc: RED per RPC", "product_svc: RED per RPC", "user_svc: RED per RPC"} <= set(
        titles
    )


def test_promtool_compiles_every_dashboard_query(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{index}", "expr": expr}
                    for index, expr in enumerate(dashboard_queries())
                ],
            }
        ]
    }
    rule_file = tmp_path / "dashboard_rules.yaml"
    rule_file.write_text(yaml.safe_dump(rules))

    checked = promtool("check", "rules", rule_file)

    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    ("source", "queries"), [("dashboard", dashboard_queries), ("alerts", alert_queries)]
)
def test_every_metric_read_is_exported_by_our_registries(source: str, queries: Any) -> None:
    exported = exported_names(REGISTRY, GatewayMetrics().registry) | PROMETHEUS_OWN
    read = set().union(*(metric_names(expr) for expr in queries()))

    assert read, f"no metric found in the {source}"
    assert read - exported == set(), f"the {source} reads metrics nobody exports"


def test_metric_names_ignore_labels_functions_and_strings() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (route, le) (rate(a_bucket{x=~"b.*"}[5m])))'
        " / on (route) max without (y) (c_total offset 1h)"
    )

    assert metric_names(expr) == {"a_bucket", "c_total"}
