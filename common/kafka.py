"""Kafka plumbing shared by every process: topic declarations and the Faust app factory.

Faust's aiokafka driver hard-codes a 1.5 s fetch wait for its consumers. Apache Kafka answers a
waiting fetch as soon as data arrives, so that costs nothing there; the embedded broker (Tansu)
answers only when the wait expires, which would make every ping/pong take ~750 ms (KAFKA.md).
The wait is therefore a setting, applied through Faust's transport extension point: a transport
subclass whose consumer thread builds the aiokafka consumer with our value.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, ClassVar

import aiokafka
import faust
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from faust.transport.drivers import aiokafka as faust_aiokafka

from common.kafka_security import kafka_security
from common.logging import get_logger
from common.settings import CommonSettings
from common.topics import TOPIC_PARTITIONS

_log = get_logger(__name__)


# aiokafka's fetch loop wakes every consumer_timeout_ms (200 by default) even with a fetch in
# flight and nothing to do: ~5 wake-ups a second per idle consumer. Every event that lets it send
# a new fetch (a fetch answered, records consumed, an assignment lost, a resume, a metadata
# update) wakes it at once anyway, so the timeout is only a backstop.
FETCHER_IDLE_WAKEUP_MS = 1000


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, building its consumer with the configured fetch wait."""

    def _create_worker_consumer(
        self, transport: faust_aiokafka.Transport
    ) -> aiokafka.AIOKafkaConsumer:
        assert isinstance(transport, Transport), "installed only by our Transport"
        conf = self.app.conf
        return aiokafka.AIOKafkaConsumer(
            client_id=conf.broker_client_id,
            group_id=conf.id,
            group_instance_id=conf.consumer_group_instance_id,
            bootstrap_servers=faust_aiokafka.server_list(transport.url, transport.default_port),
            # Our apps keep no tables, so Faust's table-aware assignor has nothing to do.
            partition_assignment_strategy=[RoundRobinPartitionAssignor],
            enable_auto_commit=False,
            auto_offset_reset=conf.consumer_auto_offset_reset,
            max_poll_records=conf.broker_max_poll_records,
            max_poll_interval_ms=int((conf.broker_max_poll_interval or 0) * 1000.0),
            max_partition_fetch_bytes=conf.consumer_max_fetch_size,
            fetch_max_wait_ms=transport.fetch_max_wait_ms,
            consumer_timeout_ms=FETCHER_IDLE_WAKEUP_MS,
            request_timeout_ms=int(conf.broker_request_timeout * 1000.0),
            check_crcs=conf.broker_check_crcs,
            session_timeout_ms=int(conf.broker_session_timeout * 1000.0),
            rebalance_timeout_ms=int(conf.broker_rebalance_timeout * 1000.0),
            heartbeat_interval_ms=int(conf.broker_heartbeat_interval * 1000.0),
            isolation_level="read_uncommitted",
            metadata_max_age_ms=conf.consumer_metadata_max_age_ms,
            connections_max_idle_ms=conf.consumer_connections_max_idle_ms,
            **faust_aiokafka.credentials_to_aiokafka_auth(
                conf.broker_credentials, conf.ssl_context
            ),
        )


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with a configurable consumer fetch wait."""

    Consumer: ClassVar[type[Any]] = _Consumer

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetch_max_wait_ms = fetch_max_wait_ms


def scratch_directory(app_id: str) -> Path:
    """Where a Faust app may write: a fresh folder under the system's temporary directory.

    Faust creates ``<datadir>/v1/tables`` at start even with in-memory tables, by default as
    ``<app id>-data`` in the working directory: with per-instance ids (the health stream) that
    left a new folder in the repository root on every run. Ours keep nothing there, so the
    folder is temporary (writable under a read-only root file system too) and
    ``BackgroundStream.stop`` removes it. Not created here: Faust makes it when it starts.
    """
    unique = f"{app_id}-{os.getpid()}-{secrets.token_hex(4)}"
    return Path(tempfile.gettempdir()) / f"microcommerce-faust-{unique}"


def create_faust_app(
    app_id: str,
    settings: CommonSettings,
    *,
    offset_reset: str = "latest",
    fetch_max_wait_ms: int | None = None,
) -> faust.App:
    """A Faust app for embedding in one of our asyncio processes.

    ``app_id`` is the consumer group: give each instance its own when every instance must see
    every record (the health stream), share one per service for work that is split.
    ``offset_reset`` is where a group with no committed offset starts: "latest" for the health
    stream (old pings are noise), "earliest" for event consumers (no event may be skipped).
    """
    app = faust.App(
        app_id,
        datadir=scratch_directory(app_id),
        broker=f"kafka://{settings.kafka_bootstrap.replace(',', ';kafka://')}",
        autodiscover=False,
        # Faust's web server would bind 0.0.0.0:6066 in every process; our metrics are
        # served by the gateway and the services do not need one.
        web_enabled=False,
        # The leader topic is only for Faust's table assignment; we keep no tables.
        topic_disable_leader=True,
        topic_allow_declare=True,
        consumer_auto_offset_reset=offset_reset,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_s,
        # Faust checks request_timeout >= session_timeout.
        broker_request_timeout=max(30.0, settings.kafka_session_timeout_s * 2),
        # Tansu rejects the idempotent producer; delivery is at-least-once by design
        # (transactional outbox + consumers that drop duplicates by event id).
        processing_guarantee="at_least_once",
        producer_acks=-1,
        store="memory://",
        # Faust's own drain at stop waits for every record in flight to be acknowledged, and
        # swallows the cancellation meant to bound it: one stuck handler hangs the process's
        # shutdown for good (and leaves its consumer thread running). A handler cancelled at
        # stop instead leaves its offset uncommitted, and the next owner's inbox drops the
        # redelivery if the effect had committed.
        stream_wait_empty=False,
        # Faust hands these to its producer, consumers and admin client alike.
        broker_credentials=kafka_security(settings).faust_credentials(),
    )
    app.transport = Transport(
        app.conf.broker_consumer,
        app,
        fetch_max_wait_ms=fetch_max_wait_ms or settings.kafka_fetch_max_wait_ms,
    )
    return app


async def declare_topics(settings: CommonSettings) -> None:
    """Create every contract topic that does not exist yet, with its partition count.

    Auto-created topics would get the broker's default count, and production clusters usually
    disable auto-creation anyway.

    Every process does this before its consumers subscribe: a subscription or a send to a
    missing topic would have the broker auto-create it with its default partition count.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        **kafka_security(settings).aiokafka_options(),
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, partitions, settings.kafka_replication_factor)
            for name, partitions in TOPIC_PARTITIONS.items()
            if name not in existing
        ]
        if missing:
            # Another process may create the same topic at the same moment: that is success.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()


# A broker that is not up yet (a pod scheduled before Kafka, `make run` racing the embedded
# broker) is retried at this pace rather than given up on.
DECLARE_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 5.0)


async def declare_topics_patiently(settings: CommonSettings, client: str) -> None:
    """``declare_topics``, retried until the broker answers; ``client`` names who waits."""
    attempt = 0
    while True:
        try:
            await declare_topics(settings)
            return
        except (KafkaError, OSError) as error:
            # One line per attempt, no traceback: the cause is the broker, not this code.
            # (An unretrieved task exception would also be logged with a traceback from a
            # garbage collector's finaliser, at an arbitrary moment.)
            delay = DECLARE_RETRY_DELAYS_S[min(attempt, len(DECLARE_RETRY_DELAYS_S) - 1)]
            _log.warning(
                "kafka_unreachable",
                app=client,
                bootstrap=settings.kafka_bootstrap,
                error=str(error),
                retry_in_s=delay,
            )
            attempt += 1
            await asyncio.sleep(delay)


def _cancel_every_task(loop: asyncio.AbstractEventLoop) -> None:
    for task in asyncio.all_tasks(loop):
        task.cancel()


class BackgroundStream:
    """A process's Faust app, started in the background so gRPC and REST never wait on Kafka.

    Starting declares the topics first; stopping never hangs on an app caught mid-join or one
    that never reached the broker.
    """

    # A Faust app caught mid-join can wait on a JoinGroup the broker holds; it has nothing to
    # flush, so stopping does not wait on it longer than this.
    STOP_TIMEOUT_S = 3.0

    def __init__(self, app: faust.App, settings: CommonSettings) -> None:
        self.app = app
        self._settings = settings
        self._started: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._started = asyncio.create_task(self._declare_and_start())

    async def _declare_and_start(self) -> None:
        await declare_topics_patiently(self._settings, self.app.conf.id)
        await self.app.start()

    def running(self) -> bool:
        """Whether the app has reached the broker and started (once)."""
        started = self._started
        return (
            started is not None
            and started.done()
            and not started.cancelled()
            and started.exception() is None
        )

    async def stop(self) -> None:
        started = self._started
        if started is not None:
            if not started.done():
                started.cancel()
            # Retrieved here, so a start that failed is not reported again by the collector.
            await asyncio.wait({started}, timeout=self.STOP_TIMEOUT_S)
            if started.done() and not started.cancelled():
                started.exception()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError, Exception):
            await asyncio.wait_for(self.app.stop(), self.STOP_TIMEOUT_S)
        await self._end_consumer_threads()
        shutil.rmtree(self.app.conf.datadir, ignore_errors=True)

    async def _end_consumer_threads(self) -> None:
        """End the app's consumer thread if stopping the app did not.

        A start cancelled while its consumer thread was coming up leaves that thread running:
        the app never marked it started, so ``app.stop()`` skips it. The thread is not a daemon,
        so the process could then never exit. Cancelling its tasks (failing that, stopping its
        loop) ends it.
        """
        for thread in threading.enumerate():
            service: Any = getattr(thread, "service", None)  # mode's WorkerThread → ServiceThread
            if getattr(service, "app", None) is not self.app or not thread.is_alive():
                continue
            loop: asyncio.AbstractEventLoop = service.thread_loop
            # Cancelled, its tasks unwind through their own clean-up; stopping the loop is for
            # a thread that ignores that.
            for end in (_cancel_every_task, asyncio.AbstractEventLoop.stop):
                with contextlib.suppress(RuntimeError):  # its loop already closed: ending anyway
                    loop.call_soon_threadsafe(end, loop)
                await asyncio.to_thread(thread.join, self.STOP_TIMEOUT_S)
                if not thread.is_alive():
                    break
            if thread.is_alive():
                _log.warning("kafka_consumer_thread_left_running", app=self.app.conf.id)
