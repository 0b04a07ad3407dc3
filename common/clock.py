"""One representation of time: aware UTC datetimes, written as RFC 3339 on every wire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def now() -> datetime:
    """The current time, aware and in UTC: the only clock domain code and stores read."""
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """``2026-12-02T10:15:30.123Z``: UTC, millisecond precision, as events and pongs carry it."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no place on the wire; attach a time zone")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(text: str) -> datetime:
    """The aware UTC datetime an RFC 3339 string names; ValueError for anything else."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return moment.astimezone(UTC)


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch: an exact integer for keyset cursors and sort keys."""
    return (moment.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)


def from_micros(micros: int) -> datetime:
    """The aware UTC datetime of ``to_micros``' integer."""
    # timedelta keeps it exact: a float of seconds since 1970 cannot hold every microsecond.
    return _EPOCH + timedelta(microseconds=micros)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
