"""Periodic background work: one loop, with failures logged and retried after a backoff."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from common.logging import get_logger

_log = get_logger(__name__)

# A failing step is retried soon (a database blip), then less and less often, up to the
# longer of the interval and this cap, so an outage is not logged many times a second.
FIRST_BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0


async def run_every(
    interval_s: float,
    step: Callable[[], Awaitable[object]],
    *,
    name: str,
    wait: Callable[[float], Awaitable[None]] | None = None,
) -> None:
    """Run ``step`` now and then every ``interval_s`` until cancelled.

    ``wait(interval_s)`` replaces the sleep between steps, for a loop that can be woken early
    (the outbox relay wakes on a commit). A step that raises is logged and retried after a
    backoff doubling from ``FIRST_BACKOFF_S`` up to ``max(interval_s, MAX_BACKOFF_S)``;
    cancellation always ends the loop.
    """
    first_backoff = min(FIRST_BACKOFF_S, interval_s)
    max_backoff = max(interval_s, MAX_BACKOFF_S)
    backoff = first_backoff
    while True:
        try:
            await step()
        except Exception as error:
            _log.warning(
                "background_step_failed",
                task=name,
                error=type(error).__name__,
                detail=str(error),
                retry_in_s=backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)
            continue
        backoff = first_backoff
        await (wait(interval_s) if wait is not None else asyncio.sleep(interval_s))


def periodic(
    interval_s: float, step: Callable[[], Awaitable[object]], *, name: str
) -> Callable[[], Coroutine[Any, Any, None]]:
    """``run_every`` as a background task of a service's ``Wiring``, named ``name``."""

    async def loop() -> None:
        await run_every(interval_s, step, name=name)

    loop.__name__ = loop.__qualname__ = name
    return loop
