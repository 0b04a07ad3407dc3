"""Circuit breakers per upstream service: fail fast while a service is known to be failing.

A small class rather than a library. The candidates (purgatory, maintained and async;
pybreaker, whose async support is Tornado's; aiobreaker, its asyncio fork, unmaintained) wrap a
call and count consecutive exceptions; the gateway needs the gRPC code (UNAVAILABLE fails,
NOT_FOUND does not), an error-rate rule beside the consecutive count, one probe at a time when
half-open, and a second opinion from the health stream.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from enum import Enum

import grpc

# Transport trouble, not business answers: only these count against a service.
FAILURE_CODES = frozenset((grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED))


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """closed → open after ``failure_threshold`` consecutive failures, or when at least
    ``error_rate`` of the last ``window`` calls failed; after ``cooldown_s`` one probe call is let
    through (half-open): its success closes the breaker, its failure opens it again.

    ``health_down`` is a second opinion (the health stream): while it says True, the breaker is
    open whatever the calls said; it must only say so when it can know (broker up).
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        error_rate: float = 0.5,
        window: int = 20,
        cooldown_s: float = 2.0,
        health_down: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.error_rate = error_rate
        self.cooldown_s = cooldown_s
        self._health_down = health_down
        self._clock = clock
        self._outcomes: deque[bool] = deque(maxlen=window)  # True: failed
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> BreakerState:
        """The state as the next call would find it."""
        if self._health_down():
            return BreakerState.OPEN
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.cooldown_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def retry_after_s(self) -> float:
        """How long until a call may be tried again (the cool-down left, at least 1 s)."""
        if self._opened_at is None:
            return 1.0
        return max(1.0, self.cooldown_s - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """Whether a call may go out now; in half-open, only one probe at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def record(self, code: grpc.StatusCode) -> None:
        """The outcome of a call that ``allow`` let through."""
        failed = code in FAILURE_CODES
        was_probe, self._probing = self._probing, False
        self._outcomes.append(failed)
        if not failed:
            self._consecutive = 0
            if self._opened_at is not None:
                self._close()
            return
        self._consecutive += 1
        if was_probe or self._tripped():
            self._opened_at = self._clock()

    def release(self) -> None:
        """A call that ``allow`` let through ended without an outcome (e.g. cancelled)."""
        self._probing = False

    def _tripped(self) -> bool:
        if self._consecutive >= self.failure_threshold:
            return True
        calls = len(self._outcomes)
        # Judged only over a full window, so two failures of the first three calls don't trip it.
        return calls == self._outcomes.maxlen and sum(self._outcomes) / calls >= self.error_rate

    def _close(self) -> None:
        self._opened_at = None
        self._outcomes.clear()
