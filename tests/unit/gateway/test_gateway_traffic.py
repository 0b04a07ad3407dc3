"""The last minute's request and server-error counts read from the HTTP counter."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from gateway.traffic import Totals, TrafficWindow, totals


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_totals_count_5xx_as_errors_and_leave_the_meta_routes_out() -> None:
    counter = Counter("http", "", ("route", "method", "status"), registry=CollectorRegistry())
    counter.labels("/v1/orders", "POST", "201").inc(3)
    counter.labels("/v1/orders", "POST", "503").inc(2)
    counter.labels("/v1/orders/{id}", "GET", "404").inc()
    counter.labels("/status/summary", "GET", "200").inc(50)
    counter.labels("/health", "GET", "503").inc(5)

    assert totals(counter) == Totals(requests=6, errors=2)


def test_the_window_keeps_one_minute_and_says_how_much_it_has_seen() -> None:
    clock = Clock()
    current = Totals(0, 0)
    window = TrafficWindow(lambda: current, clock=clock)

    assert window.rate().covered_s == 0
    for second in range(1, 91):  # 10 requests and 1 error a second, for 90 s
        clock.now = float(second)
        current = Totals(10 * second, second)
        rate = window.rate()
        if second == 30:
            assert (rate.covered_s, rate.requests, rate.errors) == (30.0, 300, 30)

    assert (rate.covered_s, rate.requests, rate.errors) == (60.0, 600, 60)
