"""REST page-token replay cases: which list RPC a test covers, and what its refusal must be.

A page token is bound to the list RPC and every filter of the request that issued it
(``common.pagination.fingerprint``). Each list RPC has a test that replays a token through the
real gateway with another filter value (or another user, product or listing) and expects a
400 naming ``page_token``. Such a test says which RPC it covers with ``@replays_page_token``;
``tests/unit/test_page_token_replay_coverage.py`` reads the protos and fails when a list RPC
(an rpc whose request has ``page_token``) has no such test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def replays_page_token(service: str, rpc: str) -> Callable[[F], F]:
    """Marks a test as the REST replay case of ``service``/``rpc`` (full proto names).

    The coverage test reads these calls from the source: each argument is a string literal or
    a module-level constant assigned one.
    """

    def mark(test: F) -> F:
        return test

    return mark


def assert_refused_on_page_token(status: int, problem: dict[str, Any]) -> None:
    """A 400 whose only field violation is ``page_token`` (not a 500, not another field)."""
    assert status == 400, problem
    assert problem.get("code") == "INVALID_ARGUMENT", problem
    assert [v["field"] for v in problem.get("field_violations", [])] == ["page_token"], problem
