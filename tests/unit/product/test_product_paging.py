"""Page tokens: opaque, bound to their filters, refused when edited."""

from __future__ import annotations

import pytest

from common.errors import InvalidArgument
from product_svc.paging import PageTokens

TOKENS = PageTokens(b"0123456789abcdef0123456789abcdef")


def test_a_token_gives_back_the_key_it_was_issued_for() -> None:
    token = TOKENS.issue("filters", ["1999", "abc"])

    assert TOKENS.read(token, "filters", key_length=2) == ["1999", "abc"]


def test_no_token_means_the_first_page() -> None:
    assert TOKENS.read("", "filters", key_length=2) is None


def test_a_token_from_another_key_or_filters_is_refused() -> None:
    token = TOKENS.issue("filters", ["1", "a"])
    other = PageTokens(b"another key of 32 bytes........!")

    for reader, fingerprint in ((TOKENS, "other filters"), (other, "filters")):
        with pytest.raises(InvalidArgument) as refused:
            reader.read(token, fingerprint, key_length=2)
        assert refused.value.field == "page_token"


@pytest.mark.parametrize("token", ["!", "AAAA", "a" * 3000, "Zm9v"])
def test_garbage_is_refused_as_a_bad_page_token(token: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        TOKENS.read(token, "filters", key_length=2)

    assert refused.value.field == "page_token"
