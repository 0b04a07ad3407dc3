"""The chart's monitoring resources: every alert of files/alerts.yaml in the PrometheusRule, the
dashboard in a ConfigMap the Grafana sidecar picks up, both off unless asked for."""

from __future__ import annotations

import json

import yaml  # type: ignore[import-untyped]

from tests.deploy.chart import CHART, RELEASE, render
from tests.deploy.tooling import Tools

DASHBOARD_NAME = f"{RELEASE}-microcommerce-dashboard"


def test_monitoring_resources_are_off_by_default(tools: Tools) -> None:
    rendered = render(tools)

    assert rendered.kind("PrometheusRule") == []
    assert DASHBOARD_NAME not in {doc["metadata"]["name"] for doc in rendered.kind("ConfigMap")}


def test_the_prometheus_rule_carries_every_alert_with_severity_and_runbook(tools: Tools) -> None:
    rendered = render(tools, settings={"monitoring.prometheusRule.enabled": True})
    (rule,) = rendered.kind("PrometheusRule")
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    shipped = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())["groups"]

    alerts = {r["alert"] for r in rules}
    assert {r["alert"] for group in shipped for r in group["rules"]} <= alerts
    for r in rules:
        assert r["labels"]["severity"] in {"critical", "warning", "info"}, r["alert"]
        assert r["annotations"]["runbook"], r["alert"]


def test_the_dashboard_config_map_is_labelled_for_the_grafana_sidecar(tools: Tools) -> None:
    rendered = render(
        tools,
        settings={
            "monitoring.grafanaDashboard.enabled": True,
            "monitoring.grafanaDashboard.folder": "Shop",
        },
    )
    config_map = rendered.named("ConfigMap", DASHBOARD_NAME)

    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"]["grafana_folder"] == "Shop"
    dashboard = json.loads(config_map["data"]["microcommerce.json"])
    assert dashboard == json.loads((CHART / "files" / "dashboard.json").read_text())
