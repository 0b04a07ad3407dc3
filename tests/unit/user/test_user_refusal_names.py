"""Every account refusal names its field and reason exactly.

The sign-up and profile forms put each message next to the field the refusal names, and a
client waits out LOGIN_THROTTLED instead of re-asking for the password: these names are public
contract, so a renamed or dropped field or reason must fail a test here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from common.errors import AlreadyExists, DomainError, InvalidArgument, ResourceExhausted
from common.reasons import Reason
from user_svc import domain

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
POLICY = domain.ThrottlePolicy(max_failures=3, window=timedelta(minutes=15))

REFUSALS: dict[str, tuple[Callable[[], object], type[DomainError], str | None, Reason | None]] = {
    "email without @": (lambda: domain.normalize_email("ada"), InvalidArgument, "email", None),
    "long email": (
        lambda: domain.normalize_email(f"{'a' * 65}@example.com"),
        InvalidArgument,
        "email",
        None,
    ),
    "bad local part": (
        lambda: domain.normalize_email("a..b@example.com"),
        InvalidArgument,
        "email",
        None,
    ),
    "bare host": (lambda: domain.normalize_email("ada@localhost"), InvalidArgument, "email", None),
    "reserved tld": (
        lambda: domain.normalize_email("ada@example.test"),
        InvalidArgument,
        "email",
        None,
    ),
    "short password": (lambda: domain.check_password("short"), InvalidArgument, "password", None),
    "long password": (
        lambda: domain.check_password("x" * 1025),
        InvalidArgument,
        "password",
        None,
    ),
    "common password": (
        lambda: domain.check_password("password123"),
        InvalidArgument,
        "password",
        None,
    ),
    "empty name": (lambda: domain.check_name("  "), InvalidArgument, "name", None),
    "long name": (lambda: domain.check_name("n" * 201), InvalidArgument, "name", None),
    "unknown role": (lambda: domain.check_roles(["root"]), InvalidArgument, "roles", None),
    "no role": (lambda: domain.check_roles([]), InvalidArgument, "roles", None),
    "bad currency": (
        lambda: domain.Preferences.parse("EURO", "en", False),
        InvalidArgument,
        "preferences.currency",
        None,
    ),
    "bad language": (
        lambda: domain.Preferences.parse("EUR", "not a tag", False),
        InvalidArgument,
        "preferences.language",
        None,
    ),
    "throttled sign-in": (
        lambda: domain.refuse_while_throttled(
            {"account": POLICY}, {"account": domain.FailureCount(3, NOW)}, NOW
        ),
        ResourceExhausted,
        None,
        Reason.LOGIN_THROTTLED,
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_refusal_names_its_field_and_reason(case: str) -> None:
    call, kind, field, reason = REFUSALS[case]

    with pytest.raises(kind) as refused:
        call()

    assert type(refused.value) is kind
    assert refused.value.field == field
    assert refused.value.reason == reason


def test_a_taken_email_names_the_email_field() -> None:
    error = domain.email_taken()

    assert (type(error), error.field, error.reason) == (AlreadyExists, "email", None)


def test_a_throttled_sign_in_says_how_long_to_wait() -> None:
    with pytest.raises(ResourceExhausted) as refused:
        domain.refuse_while_throttled(
            {"account": POLICY}, {"account": domain.FailureCount(3, NOW)}, NOW + timedelta(1e-3)
        )

    # 15 minutes minus 86.4 s, rounded up: the caller never retries a moment too early.
    assert refused.value.retry_after_s == 900 - 86
