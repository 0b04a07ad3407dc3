"""Every list RPC has a REST test that replays its page token with other filters.

A list RPC is any rpc whose request has a ``page_token`` field, read from the compiled protos
(the gateway's own service discovery), so a new list RPC fails here until its replay case
exists. Replay cases say what they cover with ``tests.support.page_token_replay``'s
``@replays_page_token(service, rpc)``; this reads those decorators from the test sources.
"""

from __future__ import annotations

import ast
from pathlib import Path

from gateway.routes import discover_services

TESTS = Path(__file__).resolve().parents[1]
# Where a replay through the real gateway can live (unit tests have no gateway and services).
REST_TEST_DIRS = (TESTS / "integration", TESTS / "e2e")


def list_rpcs() -> set[tuple[str, str]]:
    return {
        (service.full_name, method.name)
        for service in discover_services()
        for method in service.methods
        if "page_token" in method.input_type.fields_by_name
    }


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """The module's ``NAME = "text"`` assignments, so a decorator may name a constant."""
    return {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def replay_cases() -> dict[tuple[str, str], list[str]]:
    """(service, rpc) → the tests decorated as its replay case."""
    found: dict[tuple[str, str], list[str]] = {}
    for directory in REST_TEST_DIRS:
        for path in sorted(directory.rglob("test_*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            constants = _string_constants(tree)
            for node in ast.walk(tree):
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for decorator in node.decorator_list:
                    if (
                        isinstance(decorator, ast.Call)
                        and getattr(decorator.func, "id", None) == "replays_page_token"
                    ):
                        service, rpc = (
                            constants[arg.id]
                            if isinstance(arg, ast.Name)
                            else ast.literal_eval(arg)
                            for arg in decorator.args
                        )
                        where = f"{path.relative_to(TESTS)}::{node.name}"
                        found.setdefault((service, rpc), []).append(where)
    return found


def test_the_protos_have_list_rpcs_to_check() -> None:
    # Guards the scan itself: if discovery found nothing, the next test would pass vacuously.
    assert ("microcommerce.payment.v1.OrderService", "ListOrders") in list_rpcs()
    assert len(list_rpcs()) >= 8


def test_every_list_rpc_has_a_rest_page_token_replay_case() -> None:
    missing = sorted(list_rpcs() - replay_cases().keys())

    assert not missing, f"list RPCs without a REST page_token replay test: {missing}"


def test_every_replay_case_names_a_real_list_rpc() -> None:
    # A typo or a renamed RPC would otherwise leave a decorator that covers nothing.
    unknown = {case: tests for case, tests in replay_cases().items() if case not in list_rpcs()}

    assert not unknown, f"replay cases of RPCs that are not list RPCs: {unknown}"
