"""Pagination: AIP-158 page sizes, and page tokens that are opaque, bound and tamper-proof."""

from __future__ import annotations

import pytest

from common.errors import InvalidArgument
from common.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageTokens, fingerprint, page_size

TOKENS = PageTokens(b"0123456789abcdef0123456789abcdef")


def test_a_token_gives_back_the_key_it_was_issued_for() -> None:
    token = TOKENS.issue("filters", ["1999", "abc"])

    assert TOKENS.read(token, "filters", key_length=2) == ["1999", "abc"]


def test_no_token_means_the_first_page() -> None:
    assert TOKENS.read("", "filters", key_length=2) is None


def test_a_token_from_another_key_or_filters_is_refused() -> None:
    token = TOKENS.issue("filters", ["1", "a"])
    other = PageTokens(b"another key of 32 bytes........!")

    for reader, filters in ((TOKENS, "other filters"), (other, "filters")):
        with pytest.raises(InvalidArgument) as refused:
            reader.read(token, filters, key_length=2)
        assert refused.value.field == "page_token"


@pytest.mark.parametrize("token", ["!", "AAAA", "a" * 3000, "Zm9v"])
def test_garbage_is_refused_as_a_bad_page_token(token: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        TOKENS.read(token, "filters", key_length=2)

    assert refused.value.field == "page_token"


@pytest.mark.parametrize(
    ("requested", "expected"),
    [(None, DEFAULT_PAGE_SIZE), (0, DEFAULT_PAGE_SIZE), (1, 1), (100, 100), (101, MAX_PAGE_SIZE)],
)
def test_page_size_defaults_when_absent_and_is_coerced_above_the_maximum(
    requested: int | None, expected: int
) -> None:
    assert page_size(requested) == expected


def test_a_negative_page_size_is_refused_on_its_field() -> None:
    with pytest.raises(InvalidArgument) as refused:
        page_size(-1)

    assert refused.value.field == "page_size"


def test_a_token_is_bound_to_its_rpc_and_every_filter_but_not_their_order() -> None:
    issued = TOKENS.issue(fingerprint("ListOrders", {"user_id": "u1", "status": "X"}), ["k"])

    same = fingerprint("ListOrders", {"status": "X", "user_id": "u1"})
    assert TOKENS.read(issued, same, key_length=1) == ["k"]
    for other in (
        fingerprint("ListUsers", {"user_id": "u1", "status": "X"}),
        fingerprint("ListOrders", {"user_id": "u2", "status": "X"}),
    ):
        with pytest.raises(InvalidArgument):
            TOKENS.read(issued, other, key_length=1)


def test_replicas_sharing_the_secret_read_each_others_tokens_but_services_do_not() -> None:
    secret = "a deployment secret of enough length"
    token = PageTokens.for_service(secret, "product").issue("f", ["k"])

    assert PageTokens.for_service(secret, "product").read(token, "f", key_length=1) == ["k"]
    with pytest.raises(InvalidArgument):
        PageTokens.for_service(secret, "user").read(token, "f", key_length=1)
    with pytest.raises(InvalidArgument):
        PageTokens.for_service(None, "product").read(token, "f", key_length=1)


def test_a_short_shared_secret_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        PageTokens.for_service("short", "product")
