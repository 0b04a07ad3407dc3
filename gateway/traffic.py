"""Requests and server errors of the last minute, read from the gateway's own HTTP counter."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter

WINDOW_S = 60.0
# One sample a second is plenty for a per-minute figure and bounds the memory kept.
MIN_SAMPLE_GAP_S = 1.0
# The status page polls these; counting them would show the page's own traffic as the shop's.
META_PREFIXES = ("/status", "/health", "/metrics", "/docs", "/openapi.json")


@dataclass(frozen=True)
class Totals:
    """Cumulative counts since the gateway started."""

    requests: int
    errors: int  # 5xx: the gateway or a service failed, not the caller


@dataclass(frozen=True)
class Rate:
    """What happened within the last ``covered_s`` seconds (at most ``WINDOW_S``)."""

    covered_s: float
    requests: int
    errors: int


def totals(counter: Counter) -> Totals:
    """Sum ``gateway_http_requests`` over its series, leaving the meta routes out."""
    requests = errors = 0
    for metric in counter.collect():
        for sample in metric.samples:
            if not sample.name.endswith("_total"):
                continue  # the _created timestamps
            if sample.labels["route"].startswith(META_PREFIXES):
                continue
            count = int(sample.value)
            requests += count
            if sample.labels["status"].startswith("5"):
                errors += count
    return Totals(requests, errors)


class TrafficWindow:
    """Samples of the cumulative totals over the last minute; the rate is their difference.

    Sampled whenever someone asks (the status page polls every second), so nothing runs in
    the background; until a minute has been sampled, ``covered_s`` says how much was.
    """

    def __init__(
        self, read: Callable[[], Totals], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._read = read
        self._clock = clock
        self._samples: deque[tuple[float, Totals]] = deque()

    def rate(self) -> Rate:
        now, current = self._clock(), self._read()
        while self._samples and now - self._samples[0][0] > WINDOW_S:
            self._samples.popleft()
        if not self._samples or now - self._samples[-1][0] >= MIN_SAMPLE_GAP_S:
            self._samples.append((now, current))
        start, first = self._samples[0]
        return Rate(
            covered_s=round(now - start, 1),
            requests=current.requests - first.requests,
            errors=current.errors - first.errors,
        )
