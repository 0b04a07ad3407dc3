"""Request ids: the caller's when it is a plain token, a fresh one otherwise."""

from __future__ import annotations

import pytest

from common.request_context import (
    REQUEST_ID_METADATA_KEY,
    accept_request_id,
    current_request_id,
    outgoing_metadata,
    request_id_var,
)


def test_a_plain_caller_id_is_kept() -> None:
    assert accept_request_id("3f2a-b9:c.d_e/f+g=") == "3f2a-b9:c.d_e/f+g="


@pytest.mark.parametrize(
    "candidate",
    [None, "", "x" * 129, "has space", 'quote"', "new\nline", "ünïcode"],
)
def test_a_missing_or_unsafe_caller_id_is_replaced_by_a_fresh_one(candidate: str | None) -> None:
    accepted = accept_request_id(candidate)

    assert accepted != candidate
    assert accept_request_id(accepted) == accepted


def test_fresh_ids_differ() -> None:
    assert accept_request_id(None) != accept_request_id(None)


def test_outgoing_metadata_carries_the_current_id_only_inside_a_request() -> None:
    assert current_request_id() is None
    assert outgoing_metadata() == ()

    token = request_id_var.set("req-7")
    try:
        assert current_request_id() == "req-7"
        assert outgoing_metadata() == ((REQUEST_ID_METADATA_KEY, "req-7"),)
    finally:
        request_id_var.reset(token)
