"""The log scrubber masks anything that looks like a card number, wherever it hides."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest

from common.logging import (
    CardNumberFilter,
    configure_logging,
    get_logger,
    mask_card_numbers,
    reset_logging,
)

CARD = "4242424242424242"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    reset_logging()


@pytest.mark.parametrize(
    "text",
    [CARD, "4242 4242 4242 4242", "4242-4242-4242-4242", "378282246310005", f"pan={CARD}."],
)
def test_card_numbers_are_masked_to_their_last_four_digits(text: str) -> None:
    masked = mask_card_numbers(text)

    assert "42424242" not in masked.replace(" ", "").replace("-", "")
    assert "****" in masked


@pytest.mark.parametrize(
    "text",
    ["order 4242424242424241", "1234567890", "ts 20261125083000123", "id 12345678901234567890123"],
)
def test_numbers_that_fail_luhn_or_are_not_card_length_stay(text: str) -> None:
    assert mask_card_numbers(text) == text


def test_structlog_fields_and_exception_traces_are_scrubbed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("payment", "INFO")
    log = get_logger("test")

    log.info("checkout", card={"number": CARD}, note=f"paid with {CARD}")
    try:
        raise ValueError(f"bad card {CARD}")
    except ValueError:
        log.exception("failed")
    logging.getLogger("library").warning("payload %s", CARD)

    output = capsys.readouterr().err
    assert CARD not in output
    assert len(output.splitlines()) == 3
    assert all(json.loads(line) for line in output.splitlines())


def test_the_stdlib_filter_masks_message_arguments_and_exception_text() -> None:
    try:
        raise RuntimeError(CARD)
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, "f", 1, "card %s", (CARD,), sys.exc_info())

    CardNumberFilter().filter(record)

    assert CARD not in record.getMessage()
    assert CARD not in (record.exc_text or "")
