"""Stopping a process's Faust app is bounded even while a handler is stuck mid-record."""

from __future__ import annotations

import asyncio
import threading
import uuid

import faust
import pytest
from aiokafka import AIOKafkaProducer

from common.kafka import BackgroundStream, create_faust_app
from common.settings import CommonSettings
from localrun.broker import EmbeddedBroker
from tests.support.processes import FAST_KAFKA, wait_for


def _running_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.is_alive()}


def _settings(broker: EmbeddedBroker) -> CommonSettings:
    return CommonSettings.model_validate(
        {
            "kafka_bootstrap": broker.bootstrap,
            **{key.removeprefix("MC_").lower(): value for key, value in FAST_KAFKA.items()},
        }
    )


def _consumer_threads(app: faust.App) -> list[threading.Thread]:
    """The app's consumer thread (mode's WorkerThread of faust's ConsumerThread), if alive."""
    return [
        thread
        for thread in threading.enumerate()
        if thread.is_alive() and getattr(getattr(thread, "service", None), "app", None) is app
    ]


async def _stop_as_the_consumer_thread_comes_up(broker: EmbeddedBroker) -> list[str]:
    """Names of the app's consumer threads still running once ``stop`` has returned."""
    settings = _settings(broker)
    app = create_faust_app(f"early-stop-{uuid.uuid4().hex[:8]}", settings)

    @app.agent(app.topic(f"early-stop-{uuid.uuid4().hex[:8]}", value_type=bytes))
    async def idle(stream: faust.StreamT[bytes]) -> None:
        async for _ in stream:
            pass

    stream = BackgroundStream(app, settings)
    stream.start()

    async def thread_started() -> bool:
        return bool(_consumer_threads(app))

    await wait_for(thread_started, within=30, interval=0.001)
    await stream.stop()
    return [thread.name for thread in _consumer_threads(app)]


# A thread ended this way ends with the CancelledError of its start, which pytest reports.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
async def test_a_stop_while_the_consumer_thread_comes_up_ends_that_thread(
    broker: EmbeddedBroker,
) -> None:
    # The window is a few milliseconds wide and was hit about one time in fifteen; the thread
    # left behind kept the interpreter from exiting after a whole test run had passed.
    for attempt in range(30):
        left = await _stop_as_the_consumer_thread_comes_up(broker)
        assert not left, f"attempt {attempt}: {left} outlived the stop"


async def test_a_stuck_handler_neither_hangs_the_stop_nor_leaves_its_consumer_thread(
    broker: EmbeddedBroker,
) -> None:
    settings = _settings(broker)
    app = create_faust_app(f"stuck-{uuid.uuid4().hex[:8]}", settings, offset_reset="earliest")
    topic = f"stuck-{uuid.uuid4().hex[:8]}"
    handling = asyncio.Event()

    @app.agent(app.topic(topic, value_type=bytes, value_serializer="raw"))
    async def stuck(stream: faust.StreamT[bytes]) -> None:
        async for _ in stream:
            handling.set()
            await asyncio.Event().wait()  # a handler that never returns (a lock, a dead peer)

    before = _running_threads()
    stream = BackgroundStream(app, settings)
    stream.start()
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"first")

        async def stuck_on_it() -> bool:
            return handling.is_set()

        await wait_for(stuck_on_it, within=30, interval=0.1)
    finally:
        await producer.stop()
        stopping = asyncio.create_task(stream.stop())
        # Not wait_for: it would wait for a cancellation the stuck stop swallows.
        done, _ = await asyncio.wait({stopping}, timeout=2 * BackgroundStream.STOP_TIMEOUT_S)

    assert done, "stopping the stream hung on the stuck handler"
    left = {thread for thread in _running_threads() - before if not thread.daemon}
    assert not left, [thread.name for thread in left]  # the interpreter would wait for them
