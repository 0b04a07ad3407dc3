"""The service template holds: the same modules in every service, each layer importing its own."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("payment_svc", "product_svc", "user_svc")
# The template (README, "The service template"): every service has exactly these.
TEMPLATE = (
    "__init__.py",
    "__main__.py",
    "domain.py",
    "store.py",
    "service.py",
    "grpc_api.py",
    "messages.py",
    "settings.py",
    "main.py",
    "migrations",
)
# Modules a service may have beyond the template, by name: each is one port or adapter.
EXTRA_MODULES = {
    # analytics/: the sales read model (CQRS), a package of its own layers beside the template.
    # screening.py: the fraud rules, pure domain logic kept apart from the order's states.
    "payment_svc": {
        "ports.py",
        "provider.py",
        "saga.py",
        "inventory_client.py",
        "analytics",
        "screening.py",
    },
    # catalog_cache.py: the shared Redis cache of catalog reads (issue 15).
    "product_svc": {"catalog_cache.py"},
    # The signing key ring: its rules and file ring, the ring in the database, its encryption.
    "user_svc": {"keys.py", "shared_keys.py", "key_encryption.py", "passwords.py"},
}
# The service's own event consumers, when it has some (run by the shared runner).
OPTIONAL_MODULES = {"events.py"}
PLUMBING = ("grpc", "sqlalchemy", "faust", "aiohttp", "aiokafka", "google", "microcommerce")
# The kernel's plain parts, the only ones of common/ a domain may import: each imports nothing
# but the standard library and the others (checked below), so no plumbing comes in through them.
PLAIN_KERNEL = (
    "common.clock",
    "common.errors",
    "common.money",
    "common.reasons",
    "common.roles",
    "common.transitions",
)

# Where the environment may be read: settings classes, entry points and the local-run tooling.
ENVIRONMENT_READERS = {
    "localrun",
    "common/settings.py",
    # The standard OTEL_* variables, read as the OpenTelemetry SDK itself reads them.
    "common/telemetry.py",
}
CHECKED_PACKAGES = ("common", "gateway", *SERVICES)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def reads_environment(path: Path) -> bool:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ("environ", "getenv")
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            return True
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and any(alias.name in ("environ", "getenv") for alias in node.names)
        ):
            return True
    return False


def may_read_environment(path: Path) -> bool:
    relative = path.relative_to(ROOT).as_posix()
    return (
        path.name in ("settings.py", "main.py")
        or relative in ENVIRONMENT_READERS
        or relative.split("/")[0] in ENVIRONMENT_READERS
    )


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_the_template_modules(service: str) -> None:
    present = {p.name for p in (ROOT / service).iterdir() if p.name != "__pycache__"}

    assert set(TEMPLATE) - present == set()


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_has_no_module_beyond_the_template_but_its_named_extras(service: str) -> None:
    present = {p.name for p in (ROOT / service).iterdir() if p.name != "__pycache__"}

    assert present - set(TEMPLATE) - OPTIONAL_MODULES - EXTRA_MODULES[service] == set()


@pytest.mark.parametrize("service", SERVICES)
def test_domain_knows_nothing_of_grpc_sql_kafka_http_or_generated_code(service: str) -> None:
    imports = imported_modules(ROOT / service / "domain.py")

    leaks = sorted(m for m in imports if m.split(".")[0] in PLUMBING)
    assert leaks == []


@pytest.mark.parametrize("service", SERVICES)
def test_domain_takes_only_the_plain_parts_of_the_kernel(service: str) -> None:
    imports = imported_modules(ROOT / service / "domain.py")

    kernel = {m for m in imports if m.split(".")[0] == "common"}
    assert sorted(m for m in kernel if not m.startswith(PLAIN_KERNEL)) == []


@pytest.mark.parametrize("module", PLAIN_KERNEL)
def test_the_plain_kernel_imports_only_the_standard_library_and_itself(module: str) -> None:
    imports = imported_modules(ROOT / f"{module.replace('.', '/')}.py")

    outside = {
        m
        for m in imports
        if m.split(".")[0] not in sys.stdlib_module_names and not m.startswith(PLAIN_KERNEL)
    }
    assert sorted(outside) == []


@pytest.mark.parametrize("service", SERVICES)
def test_a_store_builds_no_event_message(service: str) -> None:
    imports = imported_modules(ROOT / service / "store.py")

    assert sorted(m for m in imports if m.endswith("events_pb2")) == []


def test_only_settings_entry_points_and_local_run_tooling_read_the_environment() -> None:
    readers = sorted(
        path.relative_to(ROOT).as_posix()
        for package in CHECKED_PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if not may_read_environment(path) and reads_environment(path)
    )

    assert readers == []


def test_the_checks_would_catch_a_leak_and_an_environment_read(tmp_path: Path) -> None:
    leaky = tmp_path / "domain.py"
    leaky.write_text(
        "import os\nfrom sqlalchemy import select\nimport grpc\n"
        "from microcommerce.user.v1 import events_pb2\nx = os.environ['A']\n"
    )

    assert {"sqlalchemy", "grpc", "microcommerce.user.v1.events_pb2"} <= imported_modules(leaky)
    assert reads_environment(leaky)
