"""The exact edges of the account rules, and the secrets they hand out (found by ``make mutants``).

A password of exactly the minimum length signs up, the longest name and email are fine, only
the top-level label of a host decides deliverability; ids and refresh tokens have their full
length and every refusal of a sign-in or refresh is UNAUTHENTICATED. A mutant moving any edge
by one fails here.
"""

from __future__ import annotations

import base64

import pytest

from common.errors import InvalidArgument, Unauthenticated
from user_svc import domain


def test_a_password_of_exactly_the_minimum_or_maximum_length_is_accepted() -> None:
    domain.check_password("k7#vQ2p!")  # 8 characters
    domain.check_password("k7#vQ2p!" * 128)  # 1024 characters


def test_a_name_of_exactly_the_maximum_length_is_accepted() -> None:
    assert domain.check_name("n" * 200) == "n" * 200


def test_an_email_of_exactly_the_maximum_lengths_is_accepted() -> None:
    local = "a" * 64
    host = ".".join(["h" * 63, "h" * 63, "h" * 57, "com"])  # 254 characters in all
    email = f"{local}@{host}"
    assert len(email) == 254

    assert domain.normalize_email(email) == email


def test_an_email_one_character_too_long_is_refused() -> None:
    host = ".".join(["h" * 63, "h" * 63, "h" * 58, "com"])

    with pytest.raises(InvalidArgument):
        domain.normalize_email(f"{'a' * 64}@{host}")


@pytest.mark.parametrize(
    "email",
    ["@example.com", "ada@", "ada@example.123", "ada@shop.test", "ada@test.example.invalid"],
)
def test_an_email_without_a_local_part_a_host_or_a_deliverable_tld_is_refused(email: str) -> None:
    with pytest.raises(InvalidArgument):
        domain.normalize_email(email)


@pytest.mark.parametrize("email", ["ada@mail.123.com", "ada@mail.test.com", "ada@123.test.com"])
def test_only_the_top_level_label_decides_whether_mail_is_deliverable(email: str) -> None:
    assert domain.normalize_email(email) == email


def test_ids_are_32_hex_digits_and_refresh_tokens_256_random_bits() -> None:
    ids = {domain.new_id() for _ in range(3)}
    tokens = {domain.new_refresh_token() for _ in range(3)}

    assert len(ids) == len(tokens) == 3
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert all(len(base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))) == 32 for t in tokens)


def test_a_refused_sign_in_or_refresh_is_unauthenticated() -> None:
    assert type(domain.login_refused()) is Unauthenticated
    assert type(domain.refresh_refused()) is Unauthenticated
