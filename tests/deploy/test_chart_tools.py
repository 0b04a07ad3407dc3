"""The chart through the pinned tools: helm lint, strict schema validation per Kubernetes version,
checkov over the renders and the Dockerfile."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy.chart import CHART, KUBE_VERSIONS, VALUES_FILES, render
from tests.deploy.tooling import Tools
from tests.support.processes import ROOT


@pytest.fixture(scope="module")
def render_files(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("renders")
    files = {}
    for name, values in VALUES_FILES.items():
        files[name] = directory / f"{name}.yaml"
        files[name].write_text(render(tools, values).text)
    return files


@pytest.mark.parametrize("values", sorted(VALUES_FILES))
def test_helm_lint_strict_passes(tools: Tools, values: str) -> None:
    values_file = VALUES_FILES[values]
    extra = [] if values_file is None else ["--values", str(values_file)]
    output = tools.run(tools.helm, "lint", "--strict", CHART, *extra)
    assert "0 chart(s) failed" in output


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_render_validates_strictly_against_kubernetes(
    tools: Tools, render_files: dict[str, Path], kube_version: str
) -> None:
    output = tools.run(
        tools.kubernetes_validate,
        "--strict",
        "--kubernetes-version",
        kube_version,
        *render_files.values(),
    )
    # Only the Prometheus Operator's CRDs may go unchecked (no schema is bundled for them).
    for line in output.splitlines():
        if line.startswith("WARN"):
            assert re.search(r"kind (ServiceMonitor|PrometheusRule) ", line), line


def test_strict_validation_would_catch_a_misspelt_field(tools: Tools, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n"
        "spec: {ports: [{port: 80, appProtocoll: grpc}]}\n"
    )
    with pytest.raises(AssertionError, match="appProtocoll"):
        tools.run(tools.kubernetes_validate, "--strict", broken)


def test_checkov_passes_the_renders_and_the_dockerfile(
    tools: Tools, render_files: dict[str, Path]
) -> None:
    # checkov's helm framework renders with Helm's default Kubernetes version (below the
    # chart's kubeVersion) and default values only; the renders cover every values file.
    manifests = [
        arg for name in ("default", "minimal", "production") for arg in ("-f", render_files[name])
    ]
    output = tools.run(
        tools.checkov,
        "--config-file",
        ROOT / "helm" / "checkov.yaml",
        "--framework",
        "kubernetes",
        "dockerfile",
        *manifests,
        "-f",
        ROOT / "Dockerfile",
    )
    passed = [int(n) for n in re.findall(r"Passed checks: (\d+)", output)]
    failed = [int(n) for n in re.findall(r"Failed checks: (\d+)", output)]
    # A scan that silently read nothing also "passes": insist both frameworks checked things.
    assert len(passed) == 2, output
    assert all(passed), output
    assert failed == [0, 0], output
