"""The chart rendered with `helm template`, as parsed documents with small query helpers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from tests.deploy.tooling import Tools
from tests.support.processes import ROOT

CHART = ROOT / "helm" / "microcommerce"
VALUES_FILES = {
    "default": None,
    "minimal": ROOT / "helm" / "values-minimal.yaml",
    "production": ROOT / "helm" / "values-production.yaml",
    "dev": ROOT / "helm" / "values-dev.yaml",
}
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion: native gRPC probes are GA
# from 1.27) and the newest kubernetes-validate knows.
KUBE_VERSIONS = ("1.27.0", "1.37.0")
NAMESPACE = "shop"
RELEASE = "mc"

Doc = dict[str, Any]


@dataclass(frozen=True)
class Render:
    docs: list[Doc]
    text: str

    def kind(self, kind: str) -> list[Doc]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def named(self, kind: str, name: str) -> Doc:
        found = [doc for doc in self.kind(kind) if doc["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
        return found[0]

    def workloads(self) -> list[Doc]:
        """Deployments and Jobs: everything that runs a pod."""
        return self.kind("Deployment") + self.kind("Job")

    def deployment_of(self, component: str) -> Doc:
        return self.named("Deployment", f"{RELEASE}-microcommerce-{component}")


def render(
    tools: Tools,
    values_file: Path | None = None,
    *,
    settings: Mapping[str, str | bool | int | float] | None = None,
    kube_version: str = KUBE_VERSIONS[0],
) -> Render:
    argv: list[str | Path] = [
        tools.helm,
        "template",
        RELEASE,
        CHART,
        "--namespace",
        NAMESPACE,
        "--kube-version",
        kube_version,
    ]
    if values_file is not None:
        argv += ["--values", values_file]
    for key, value in (settings or {}).items():
        if isinstance(value, bool):
            argv += ["--set", f"{key}={str(value).lower()}"]
        elif isinstance(value, int | float):
            # As JSON: --set would pass 0.25 as a string, and the schema wants a number.
            argv += ["--set-json", f"{key}={value}"]
        else:
            argv += ["--set-string", f"{key}={value}"]
    text = tools.run(*argv)
    docs = [doc for doc in yaml.safe_load_all(text) if doc]
    return Render(docs, text)


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Doc) -> Iterator[Doc]:
    spec = pod_spec(workload)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def component_of(labels: Mapping[str, str]) -> str:
    return labels["app.kubernetes.io/component"]


def env_of(container: Doc) -> dict[str, Doc]:
    return {entry["name"]: entry for entry in container.get("env", [])}
