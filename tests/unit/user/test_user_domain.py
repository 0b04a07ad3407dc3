"""The user domain's rules: emails, passwords, roles, preferences, refresh rotation, throttling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from common.errors import InvalidArgument, NotFound, ResourceExhausted
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
    live_account,
    normalize_email,
    refuse_while_throttled,
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


ADA = User(
    id="u1",
    email="ada@example.com",
    name="Ada",
    roles=frozenset({"customer"}),
    create_time=NOW,
    password_hash="$argon2id$...",
    preferences=Preferences("EUR", "fr", True),
)


def test_a_registered_user_gets_a_fresh_id_and_a_trimmed_name() -> None:
    first = User.register(
        email="ada@example.com", name="  Ada ", roles=["customer"], password_hash="h", now=NOW
    )
    second = User.register(
        email="bob@example.com", name="Bob", roles=["customer"], password_hash="h", now=NOW
    )

    assert first.name == "Ada"
    assert first.id != second.id
    assert (first.roles, first.create_time, first.is_deleted) == (
        frozenset({"customer"}),
        NOW,
        False,
    )


def test_renaming_checks_the_name_like_registration() -> None:
    assert ADA.renamed(" Augusta ").name == "Augusta"
    assert field_of(ADA.renamed, "   ") == "name"


def test_an_erased_or_missing_account_is_not_found() -> None:
    assert live_account(ADA) is ADA
    with pytest.raises(NotFound):
        live_account(ADA.erased(NOW))
    with pytest.raises(NotFound):
        live_account(None)


def test_an_erased_user_keeps_only_the_id_and_roles() -> None:
    user = ADA

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
    assert (
        judge_refresh(token_spent=False, session=session(), owner=ADA, now=NOW)
        is RefreshOutcome.ROTATE
    )


def test_a_spent_refresh_token_revokes_its_whole_family() -> None:
    outcome = judge_refresh(token_spent=True, session=session(), owner=ADA, now=NOW)

    assert outcome is RefreshOutcome.REVOKE_FAMILY


@pytest.mark.parametrize(
    "ended", [session(revoked=True), session(expire_in=timedelta(seconds=-1)), None]
)
def test_a_token_of_an_ended_or_unknown_session_is_rejected(ended: Session | None) -> None:
    assert (
        judge_refresh(token_spent=False, session=ended, owner=ADA, now=NOW) is RefreshOutcome.REJECT
    )


def test_a_fresh_token_of_an_erased_account_is_rejected() -> None:
    outcome = judge_refresh(token_spent=False, session=session(), owner=ADA.erased(NOW), now=NOW)

    assert outcome is RefreshOutcome.REJECT


def test_a_session_opens_for_the_idle_lifetime_and_each_use_extends_it() -> None:
    opened = Session.open(
        user_id="u1",
        user_agent="x" * 600,
        client_address="192.0.2.1",
        now=NOW,
        idle=timedelta(days=30),
    )

    used = opened.used(NOW + timedelta(days=20), timedelta(days=30))

    assert opened.expire_time == NOW + timedelta(days=30)
    assert len(opened.user_agent) == 512
    assert used.is_live(NOW + timedelta(days=45))
    assert not opened.is_live(NOW + timedelta(days=30))
    assert (used.id, used.create_time) == (opened.id, opened.create_time)


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


def test_sign_ins_are_refused_while_any_key_is_throttled_for_the_longest_wait() -> None:
    lenient = ThrottlePolicy(max_failures=10, window=timedelta(minutes=15))
    policies = {"account": POLICY, "client": lenient}
    counts = {
        "account": FailureCount(3, NOW - timedelta(minutes=5)),
        "client": FailureCount(3, NOW - timedelta(minutes=5)),
    }

    with pytest.raises(ResourceExhausted) as caught:
        refuse_while_throttled(policies, counts, NOW)
    refuse_while_throttled(policies, counts, NOW + timedelta(minutes=10))
    refuse_while_throttled({"client": lenient}, counts, NOW)

    assert caught.value.reason == "LOGIN_THROTTLED"
    assert caught.value.retry_after_s == 600


def test_throttle_keys_do_not_contain_the_email() -> None:
    assert "ada" not in throttle_key("account", "ada@example.com")
    assert throttle_key("account", "x") != throttle_key("client", "x")
