"""Running promtool (Debian's prometheus package, installed by `make monitoring-test`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART_FILES = ROOT / "helm" / "microcommerce" / "files"
ALERTS = CHART_FILES / "alerts.yaml"
DASHBOARD = CHART_FILES / "dashboard.json"


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run promtool; a missing promtool fails the test (the Makefile installs it)."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found: run `make monitoring-test` (installs Debian's prometheus)")
    return subprocess.run(
        [binary, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )
