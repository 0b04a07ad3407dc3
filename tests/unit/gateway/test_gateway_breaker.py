"""The circuit breaker's states as calls succeed and fail, on a clock the test moves."""

from __future__ import annotations

import grpc

from gateway.breaker import BreakerState, CircuitBreaker

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
OK = grpc.StatusCode.OK


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **options: object) -> CircuitBreaker:
    settings: dict[str, object] = {"failure_threshold": 3, "cooldown_s": 2.0, "window": 10}
    settings.update(options)
    return CircuitBreaker("svc", clock=clock, **settings)  # type: ignore[arg-type]


def state_of(b: CircuitBreaker) -> BreakerState:
    # A call, not the property: the state changes between asserts, which mypy cannot see.
    return b.state


def fail(b: CircuitBreaker, times: int, code: grpc.StatusCode = UNAVAILABLE) -> None:
    for _ in range(times):
        assert b.allow()
        b.record(code)


def test_consecutive_transport_failures_open_the_breaker() -> None:
    b = breaker(Clock())

    fail(b, 2)
    assert state_of(b) is BreakerState.CLOSED
    fail(b, 1)

    assert state_of(b) is BreakerState.OPEN
    assert not b.allow()


def test_business_errors_never_open_the_breaker() -> None:
    b = breaker(Clock())

    for code in (
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
    ):
        fail(b, 5, code)

    assert state_of(b) is BreakerState.CLOSED


def test_deadline_exceeded_counts_as_a_failure() -> None:
    b = breaker(Clock())

    fail(b, 3, grpc.StatusCode.DEADLINE_EXCEEDED)

    assert state_of(b) is BreakerState.OPEN


def test_a_success_resets_the_consecutive_count() -> None:
    b = breaker(Clock(), error_rate=1.0)

    fail(b, 2)
    fail(b, 1, OK)
    fail(b, 2)

    assert state_of(b) is BreakerState.CLOSED


def test_a_high_error_rate_over_a_full_window_opens_the_breaker() -> None:
    b = breaker(Clock(), failure_threshold=100, window=4, error_rate=0.5)

    for code in (UNAVAILABLE, OK, OK):
        fail(b, 1, code)
    assert state_of(b) is BreakerState.CLOSED  # three calls: the window is not full yet
    fail(b, 1, UNAVAILABLE)

    assert state_of(b) is BreakerState.OPEN


def test_after_the_cooldown_one_probe_goes_through_and_its_success_closes() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 3)

    clock.now += 2.0
    assert state_of(b) is BreakerState.HALF_OPEN
    assert b.allow()
    assert not b.allow()  # only one probe at a time
    b.record(OK)

    assert state_of(b) is BreakerState.CLOSED
    assert b.allow()


def test_a_failed_probe_opens_the_breaker_for_another_cooldown() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 3)
    clock.now += 2.0

    fail(b, 1)

    assert state_of(b) is BreakerState.OPEN
    clock.now += 1.0
    assert state_of(b) is BreakerState.OPEN
    clock.now += 1.0
    assert state_of(b) is BreakerState.HALF_OPEN


def test_a_probe_without_an_outcome_lets_the_next_probe_through() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, 3)
    clock.now += 2.0
    assert b.allow()

    b.release()

    assert b.allow()


def test_the_health_streams_down_opens_the_breaker_while_it_says_so() -> None:
    down = True
    b = CircuitBreaker("svc", health_down=lambda: down)

    assert state_of(b) is BreakerState.OPEN
    assert not b.allow()
    down = False
    assert state_of(b) is BreakerState.CLOSED
    assert b.allow()


def test_retry_after_is_the_cooldown_left_and_at_least_a_second() -> None:
    clock = Clock()
    b = breaker(clock, cooldown_s=5.0)
    fail(b, 3)

    clock.now += 1.5

    assert b.retry_after_s() == 3.5
    clock.now += 3.4
    assert b.retry_after_s() == 1.0
