"""The Tiltfile, executed with stub Tilt builtins: it names real files and the chart's workloads."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.chart import RELEASE, VALUES_FILES, render
from tests.deploy.chart_facts import COMPONENTS
from tests.deploy.tooling import Tools
from tests.support.processes import ROOT

TILTFILE = ROOT / "Tiltfile"
CHECKER = Path(__file__).with_name("tiltfile_check.py")


def evaluate(tools: Tools, tiltfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools.python), str(CHECKER), str(tiltfile)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def calls(tools: Tools) -> list[dict[str, Any]]:
    result = evaluate(tools, TILTFILE)
    assert result.returncode == 0, result.stderr
    parsed: list[dict[str, Any]] = json.loads(result.stdout)
    return parsed


def of(calls: list[dict[str, Any]], builtin: str) -> list[dict[str, Any]]:
    return [call for call in calls if call["builtin"] == builtin]


@pytest.mark.parametrize(
    ("original", "broken"),
    [
        ("k8s_resource(\n", "k8s_resorce(\n"),  # an undefined name
        ("new_name=component", "new_nme=component"),  # a misspelt argument
        ("SOURCES + ['gen']]", "SOURCES + ['gen']"),  # a syntax error
    ],
)
def test_a_broken_tiltfile_fails_the_check(
    tools: Tools, tmp_path: Path, original: str, broken: str
) -> None:
    text = TILTFILE.read_text()
    assert original in text
    copy = tmp_path / "Tiltfile"
    copy.write_text(text.replace(original, broken, 1))

    assert evaluate(tools, copy).returncode != 0


def test_the_image_is_built_from_the_dockerfile_and_live_updated(
    calls: list[dict[str, Any]],
) -> None:
    (base,) = of(calls, "docker_build")
    assert (ROOT / base["dockerfile"]).is_file()
    (dev,) = of(calls, "docker_build_with_restart")
    assert dev["dockerfile_contents"].startswith(f"FROM {base['ref']}\n")
    assert dev["entrypoint"] == ["/app/.venv/bin/python", "-m", "common.entrypoint"]
    synced = {step["local"]: step["remote"] for step in dev["live_update"]}
    for package in ("common", "gateway", "payment_svc", "product_svc", "user_svc", "gen"):
        assert synced[package] == f"/app/{package}"
        assert (ROOT / package).is_dir()


def test_a_proto_change_regenerates_gen_with_make_proto(calls: list[dict[str, Any]]) -> None:
    (proto,) = [c for c in of(calls, "local_resource") if c["deps"] == ["protos"]]
    assert proto["cmd"] == "make proto"


def test_the_chart_is_deployed_with_the_dev_values_and_the_gateway_forwarded(
    tools: Tools, calls: list[dict[str, Any]]
) -> None:
    (helm,) = of(calls, "helm")
    assert (ROOT / helm["chart"] / "Chart.yaml").is_file()
    assert [ROOT / v for v in helm["values"]] == [VALUES_FILES["dev"]]
    assert helm["name"] == RELEASE
    deployments = {
        d["metadata"]["name"] for d in render(tools, VALUES_FILES["dev"]).kind("Deployment")
    }
    resources = {c["workload"]: c for c in of(calls, "k8s_resource")}
    for component in COMPONENTS:
        assert f"{RELEASE}-microcommerce-{component}" in deployments
        assert f"{RELEASE}-microcommerce-{component}" in resources
    assert resources[f"{RELEASE}-microcommerce-gateway"]["port_forwards"] == ["8080:8080"]


def test_the_dev_dependencies_are_deployed_and_valid(
    tools: Tools, calls: list[dict[str, Any]]
) -> None:
    yamls = [c["yaml"] for c in of(calls, "k8s_yaml") if isinstance(c["yaml"], str)]
    assert yamls == ["helm/dev-deps.yaml"]
    tools.run(tools.kubernetes_validate, "--strict", ROOT / yamls[0])
    named = {c["workload"] for c in of(calls, "k8s_resource")}
    assert {"dev-kafka", "dev-postgres"} <= named
