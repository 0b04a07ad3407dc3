"""The consumer lag gauge follows a real Faust consumer group on the real broker."""

from __future__ import annotations

import asyncio
import uuid

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry

from common.consumer_lag import ConsumerLag
from common.kafka import BackgroundStream, create_faust_app
from common.settings import CommonSettings
from localrun.broker import EmbeddedBroker
from tests.support.processes import wait_for


async def _create_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        await admin.close()


async def test_lag_is_what_the_group_has_not_committed_and_drops_to_zero_once_it_has(
    broker: EmbeddedBroker,
) -> None:
    topic_name = f"lag-test-{uuid.uuid4().hex[:8]}"
    group = f"lag-test-{uuid.uuid4().hex[:8]}"
    await _create_topic(broker.bootstrap, topic_name)
    settings = CommonSettings(
        kafka_bootstrap=broker.bootstrap,
        kafka_fetch_max_wait_ms=10,
        kafka_session_timeout_s=2,
        kafka_heartbeat_interval_s=0.5,
    )
    app = create_faust_app(group, settings)
    app.conf.broker_commit_interval = 0.2  # commits soon after each record is handled
    open_gate = asyncio.Event()
    open_gate.set()
    handled: list[bytes] = []

    @app.agent(app.topic(topic_name, value_type=bytes, value_serializer="raw"))
    async def slow_consumer(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            handled.append(value)
            await open_gate.wait()

    registry = CollectorRegistry()
    lag = ConsumerLag(registry=registry)
    stream = BackgroundStream(app, settings)
    lag.track(stream)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()

    def gauge() -> float | None:
        labels = {"group": group, "topic": topic_name, "partition": "0"}
        return registry.get_sample_value("mc_kafka_consumer_lag", labels)

    async def lag_is(expected: float) -> bool:
        return gauge() == expected

    try:
        assert gauge() is None  # not started: no series, and no consumer created early
        stream.start()
        await wait_for(lambda: asyncio.sleep(0, stream.running()), within=30)

        # The consumer subscribes from the end: keep sending until it has seen one record.
        async def one_handled() -> bool:
            await producer.send_and_wait(topic_name, b"first")
            await asyncio.sleep(0.2)
            return bool(handled)

        await wait_for(one_handled, within=30)
        await wait_for(lambda: lag_is(0), within=15)

        open_gate.clear()  # the next record blocks its handler: nothing after it commits
        already = len(handled)
        for index in range(5):
            await producer.send_and_wait(topic_name, f"r{index}".encode())
        await wait_for(lambda: asyncio.sleep(0, len(handled) > already), within=15)
        await wait_for(lambda: lag_is(5), within=15)

        open_gate.set()
        await wait_for(lambda: lag_is(0), within=15)
    finally:
        lag.forget(stream)
        await producer.stop()
        await stream.stop()
    assert gauge() is None
