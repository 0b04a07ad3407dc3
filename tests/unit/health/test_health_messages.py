"""Which health messages are worth acting on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from common.clock import rfc3339
from common.health_stream import STALE_PING_AFTER, is_fresh, now_rfc3339


def test_a_message_sent_just_now_is_fresh() -> None:
    assert is_fresh(now_rfc3339())


def test_a_message_older_than_the_stale_limit_is_ignored() -> None:
    old = datetime.now(UTC) - STALE_PING_AFTER - timedelta(seconds=1)

    assert not is_fresh(rfc3339(old))


def test_a_malformed_timestamp_is_ignored_rather_than_crashing_the_agent() -> None:
    assert not is_fresh("yesterday-ish")


def test_timestamps_are_rfc3339_in_utc_with_a_z() -> None:
    assert rfc3339(datetime(2026, 11, 25, 8, 0, 1, 234000, tzinfo=UTC)) == (
        "2026-11-25T08:00:01.234Z"
    )
