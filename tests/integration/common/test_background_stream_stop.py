"""Stopping a process's Faust app is bounded even while a handler is stuck mid-record."""

from __future__ import annotations

import asyncio
import threading
import uuid

import faust
from aiokafka import AIOKafkaProducer

from common.kafka import BackgroundStream, create_faust_app
from common.settings import CommonSettings
from localrun.broker import EmbeddedBroker
from tests.support.processes import FAST_KAFKA, wait_for


def _running_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.is_alive()}


async def test_a_stuck_handler_neither_hangs_the_stop_nor_leaves_its_consumer_thread(
    broker: EmbeddedBroker,
) -> None:
    settings = CommonSettings.model_validate(
        {
            "kafka_bootstrap": broker.bootstrap,
            **{key.removeprefix("MC_").lower(): value for key, value in FAST_KAFKA.items()},
        }
    )
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
