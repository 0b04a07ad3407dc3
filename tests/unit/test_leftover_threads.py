"""A loop thread left running by a test does not keep the test run from exiting."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

from tests.support.threads import stop_leftover_loop_threads


class LoopThread(threading.Thread):
    """The shape of mode's WorkerThread: non-daemon, its loop at ``service.thread_loop``."""

    def __init__(self) -> None:
        super().__init__(name="leftover-consumer", daemon=False)
        self.service = SimpleNamespace(thread_loop=asyncio.new_event_loop())
        self.running = threading.Event()

    def run(self) -> None:
        loop = self.service.thread_loop
        loop.call_soon(self.running.set)
        loop.run_forever()
        loop.close()


def test_a_leftover_loop_thread_is_stopped_and_named() -> None:
    thread = LoopThread()
    thread.start()
    assert thread.running.wait(5)

    stopped = stop_leftover_loop_threads(timeout_s=5)

    assert stopped == ["leftover-consumer"]
    assert not thread.is_alive()


def test_threads_without_a_running_loop_are_left_alone() -> None:
    release = threading.Event()
    plain = threading.Thread(target=release.wait, name="plain", daemon=False)
    plain.start()
    try:
        assert stop_leftover_loop_threads(timeout_s=0.1) == []
        assert plain.is_alive()
    finally:
        release.set()
        plain.join(5)
