"""The layers of ARCHITECTURE.md hold: same shape in every service, a domain free of plumbing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("payment_svc", "product_svc", "user_svc")
SERVICE_FILES = ("domain.py", "store.py", "service.py", "grpc_api.py", "settings.py", "main.py")
PLUMBING = ("grpc", "sqlalchemy", "faust", "aiohttp", "aiokafka", "google", "microcommerce")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_the_same_inner_layout(service: str) -> None:
    missing = [f for f in SERVICE_FILES if not (ROOT / service / f).is_file()]

    assert missing == []


@pytest.mark.parametrize("service", SERVICES)
def test_domain_knows_nothing_of_grpc_sql_kafka_or_http(service: str) -> None:
    imports = imported_modules(ROOT / service / "domain.py")

    leaks = sorted(m for m in imports if m.split(".")[0] in PLUMBING)
    assert leaks == []


def test_the_layer_check_would_catch_a_leak(tmp_path: Path) -> None:
    leaky = tmp_path / "domain.py"
    leaky.write_text("from sqlalchemy import select\nimport grpc\n")

    assert {"sqlalchemy", "grpc"} <= imported_modules(leaky)
