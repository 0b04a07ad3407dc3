"""The end of a test run: no event-loop thread left behind may keep the interpreter alive."""

from __future__ import annotations

import asyncio
import threading


def stop_leftover_loop_threads(timeout_s: float = 5.0) -> list[str]:
    """Stop every non-daemon thread still running its own event loop; returns their names.

    Faust runs its consumer in a mode ``ServiceThread``: a non-daemon thread with a loop of
    its own (``thread.service.thread_loop``). An in-process service whose test loop closed
    before that thread was told to stop leaves it running forever, and the interpreter then
    waits for it at exit: a run whose every test passed hung there in a rehearsal. Stopping
    the thread's loop ends the thread. ``BackgroundStream.stop`` now does this for its own app
    (a start cancelled mid-way had left the thread); this net remains for a test that never
    stops a stream it started.
    """
    stopped = []
    for thread in threading.enumerate():
        loop = getattr(getattr(thread, "service", None), "thread_loop", None)
        if thread.daemon or not isinstance(loop, asyncio.AbstractEventLoop):
            continue
        if not loop.is_running():
            continue
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
        stopped.append(thread.name)
    return stopped
