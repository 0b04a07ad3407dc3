"""The runtime (common/, gateway/, the services) never depends on the local-run tooling."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What a deployed image runs; localrun/ is only for `make run`, `make seed` and the tests.
RUNTIME_PACKAGES = ("common", "gateway", "payment_svc", "product_svc", "user_svc")


def localrun_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return [name for name in found if name.split(".")[0] == "localrun"]


@pytest.mark.parametrize("package", RUNTIME_PACKAGES)
def test_runtime_code_imports_nothing_from_localrun(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): names
        for path in sorted((ROOT / package).rglob("*.py"))
        if (names := localrun_imports(path))
    }

    assert offenders == {}


def test_the_boundary_check_would_catch_an_import(tmp_path: Path) -> None:
    module = tmp_path / "main.py"
    module.write_text("import localrun.seed\nfrom localrun.broker import free_port\n")

    assert localrun_imports(module) == ["localrun.seed", "localrun.broker"]
