"""The user domain's rules: emails, passwords, roles, preferences, refresh rotation, throttling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from common.errors import InvalidArgument
from user_svc.domain import (
    FailureCount,
    Preferences,
    RefreshOutcome,
    Session,
    ThrottlePolicy,
    User,
    check_password,
    check_roles,
    judge_refresh,
    normalize_email,
    throttle_key,
    token_digest,
)

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def field_of(call: object, *args: object) -> str | None:
    with pytest.raises(InvalidArgument) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value.field


def test_emails_are_trimmed_and_lower_cased() -> None:
    assert normalize_email("  Ada.Lovelace+shop@Example.COM ") == "ada.lovelace+shop@example.com"


@pytest.mark.parametrize(
    "email",
    [
        "",
        "plain",
        "@example.com",
        "ada@",
        "ada@localhost",
        "ada@@example.com",
        "ada lovelace@example.com",
        "ada..l@example.com",
        ".ada@example.com",
        "ada@-example.com",
        "ada@example..com",
        "ada@127.0.0.1",
        "a" * 65 + "@example.com",
        "ada@" + "a" * 250 + ".com",
        "ada@exa_mple.com",
        "erased-1@erased.invalid",
        "ada@shop.test",
    ],
)
def test_malformed_emails_are_refused_on_the_email_field(email: str) -> None:
    assert field_of(normalize_email, email) == "email"


@pytest.mark.parametrize("password", ["", "short", "1234567", "Password", "QWERTYUIOP", "x" * 1025])
def test_short_common_or_absurdly_long_passwords_are_refused(password: str) -> None:
    assert field_of(check_password, password) == "password"


def test_a_long_uncommon_password_is_accepted() -> None:
    check_password("correct horse battery")


def test_roles_are_only_customer_and_admin_and_never_empty() -> None:
    assert check_roles(["Admin", "customer", "admin"]) == {"admin", "customer"}
    assert field_of(check_roles, ["service"]) == "roles"
    assert field_of(check_roles, []) == "roles"


def test_preferences_reset_omitted_fields_and_validate_the_rest() -> None:
    assert Preferences.parse("", "", False) == Preferences("USD", "en", False)
    assert Preferences.parse("chf", "de-CH", True) == Preferences("CHF", "de-CH", True)
    assert field_of(Preferences.parse, "EURO", "en", False) == "preferences.currency"
    assert field_of(Preferences.parse, "EUR", "not a tag", False) == "preferences.language"


def test_an_erased_user_keeps_only_the_id_and_roles() -> None:
    user = User(
        id="u1",
        email="ada@example.com",
        name="Ada",
        roles=frozenset({"customer"}),
        create_time=NOW,
        password_hash="$argon2id$...",
        preferences=Preferences("EUR", "fr", True),
    )

    erased = user.erased(NOW)

    assert "ada" not in erased.email
    assert (erased.name, erased.password_hash) == ("", None)
    assert erased.preferences == Preferences()
    assert erased.is_deleted
    assert (erased.id, erased.roles) == (user.id, user.roles)


def session(*, revoked: bool = False, expire_in: timedelta = timedelta(days=1)) -> Session:
    return Session(
        id="s1",
        user_id="u1",
        create_time=NOW,
        last_used_time=NOW,
        expire_time=NOW + expire_in,
        user_agent="",
        client_address="",
        revoked_time=NOW if revoked else None,
    )


def test_a_fresh_refresh_token_of_a_live_session_rotates() -> None:
    assert judge_refresh(token_spent=False, session=session(), now=NOW) is RefreshOutcome.ROTATE


def test_a_spent_refresh_token_revokes_its_whole_family() -> None:
    outcome = judge_refresh(token_spent=True, session=session(), now=NOW)

    assert outcome is RefreshOutcome.REVOKE_FAMILY


@pytest.mark.parametrize(
    "ended", [session(revoked=True), session(expire_in=timedelta(seconds=-1)), None]
)
def test_a_token_of_an_ended_or_unknown_session_is_rejected(ended: Session | None) -> None:
    assert judge_refresh(token_spent=False, session=ended, now=NOW) is RefreshOutcome.REJECT


def test_refresh_tokens_are_stored_as_digests() -> None:
    assert token_digest("abc") != "abc"
    assert len(token_digest("abc")) == 64


POLICY = ThrottlePolicy(max_failures=3, window=timedelta(minutes=15))


def test_failures_under_the_limit_do_not_throttle() -> None:
    count = FailureCount(0, NOW)
    for _ in range(2):
        count = count.after_failure(POLICY, NOW)

    assert count.retry_after(POLICY, NOW) is None


def test_reaching_the_limit_throttles_until_the_window_ends() -> None:
    count = FailureCount(0, NOW)
    for _ in range(3):
        count = count.after_failure(POLICY, NOW)

    assert count.retry_after(POLICY, NOW + timedelta(minutes=5)) == timedelta(minutes=10)
    assert count.retry_after(POLICY, NOW + timedelta(minutes=15)) is None


def test_a_failure_after_the_window_starts_a_new_one() -> None:
    count = FailureCount(3, NOW).after_failure(POLICY, NOW + timedelta(minutes=16))

    assert count == FailureCount(1, NOW + timedelta(minutes=16))


def test_throttle_keys_do_not_contain_the_email() -> None:
    assert "ada" not in throttle_key("account", "ada@example.com")
    assert throttle_key("account", "x") != throttle_key("client", "x")
