"""Kafka consumer lag as a Prometheus gauge: records each consumer group has not committed yet.

Read from what Faust already keeps, at scrape time, so it costs no broker round trip: its
monitor holds each partition's high-water mark as of the last fetch and the offset the group
last committed (the next record it will read). Lag = high-water mark - committed offset, for
the partitions the consumer is assigned now. A partition with no commit yet has no series.

Kafka's high-water mark is exact; the embedded broker (Tansu) reports the first offset of the
newest batch + 1 (KAFKA.md), so there a lag can read a little low, never below zero here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import faust
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

NAME = "mc_kafka_consumer_lag"
DOCUMENTATION = (
    "Records not yet committed by a consumer group, by group, topic and partition "
    "(high-water mark at the last fetch minus the committed offset)."
)
LABELS = ("group", "topic", "partition")


class Consumer(Protocol):
    """A process's Faust app with whether it has started (``common.kafka.BackgroundStream``)."""

    app: faust.App

    def running(self) -> bool: ...


class ConsumerLag(Collector):
    """The gauge of every consumer this process tracks, computed at each scrape."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._consumers: list[Consumer] = []
        if registry is not None:
            registry.register(self)

    def track(self, consumer: Consumer) -> None:
        self._consumers.append(consumer)

    def forget(self, consumer: Consumer) -> None:
        """Stop reporting a consumer that is stopping (its offsets are no longer its own)."""
        self._consumers = [c for c in self._consumers if c is not consumer]

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(NAME, DOCUMENTATION, labels=LABELS)]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(NAME, DOCUMENTATION, labels=LABELS)
        for consumer in self._consumers:
            # Before the app has started, its consumer and monitor do not exist yet; asking
            # for them would create them outside Faust's start-up.
            if not consumer.running():
                continue
            app = consumer.app
            monitor = app.monitor
            for tp in sorted(app.consumer.assignment()):
                end = monitor.tp_end_offsets.get(tp)
                committed = monitor.tp_committed_offsets.get(tp)
                if end is None or committed is None:
                    continue
                labels = [str(app.conf.id), tp.topic, str(tp.partition)]
                family.add_metric(labels, max(0, end - committed))
        yield family
