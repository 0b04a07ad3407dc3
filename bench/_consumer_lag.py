"""Consumer lag during a benchmark, from the services' own ``mc_kafka_consumer_lag`` gauges.

Scraped over HTTP as Prometheus would, rather than asked of the broker: the gauge is what an
operator sees, so the benchmark reports the figure the dashboards would show (with the same
blind spot: a partition whose group has committed nothing yet has no series, see
``common.consumer_lag``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from common.consumer_lag import NAME
from tests.support.processes import wait_for

INTERVAL_S = 0.5
SCRAPE_TIMEOUT_S = 5.0

Key = tuple[str, str]  # (consumer group, topic)


@dataclass
class Sample:
    at: float  # time.monotonic()
    lag: dict[Key, float]  # summed over partitions


@dataclass
class LagFigures:
    """Per ``group/topic``: the largest lag seen and the lag when the load stopped, and the
    seconds after it stopped from which the lag stayed 0 (None: not 0 by the end of the
    wait). Samples with a process that did not answer are left out (counted as errors)."""

    max: dict[str, float] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    drained_after_s: dict[str, float | None] = field(default_factory=dict)
    drain_waited_s: float = 0.0
    scrape_errors: int = 0


def parse(exposition: str) -> dict[Key, float]:
    """The lag in one /metrics answer, summed over partitions per (group, topic)."""
    lag: dict[Key, float] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name != NAME:
            continue
        for sample in family.samples:
            key = (sample.labels["group"], sample.labels["topic"])
            lag[key] = lag.get(key, 0.0) + sample.value
    return lag


class LagSampler:
    """Scrapes every process's /metrics every ``INTERVAL_S`` while the load runs, then keeps
    scraping once it stops until every lag (but the health stream's) is 0 or ``drain_within``
    seconds have passed."""

    def __init__(self, http: aiohttp.ClientSession, metrics_urls: Mapping[str, str]) -> None:
        self._http = http
        self._urls = dict(metrics_urls)
        self._loaded: list[Sample] = []
        self._after: list[Sample] = []  # once the load stopped
        self._errors = 0
        self._task: asyncio.Task[None] | None = None

    async def _scrape(self, url: str) -> dict[Key, float] | None:
        try:
            async with self._http.get(
                url, timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
            ) as response:
                response.raise_for_status()
                return parse(await response.text())
        except (aiohttp.ClientError, TimeoutError):
            self._errors += 1
            return None

    async def _sample(self) -> Sample | None:
        """None if any process did not answer: its lag is unknown, not 0."""
        at = time.monotonic()
        answers = await asyncio.gather(*(self._scrape(url) for url in self._urls.values()))
        lag: dict[Key, float] = {}
        for answer in answers:
            if answer is None:
                return None
            for key, value in answer.items():
                lag[key] = lag.get(key, 0.0) + value
        return Sample(at, lag)

    async def _run(self) -> None:
        while True:
            sample = await self._sample()
            if sample is not None:
                self._loaded.append(sample)
            await asyncio.sleep(INTERVAL_S)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop_and_drain(self, drain_within: float) -> LagFigures:
        """Call when the load stops: the first sample after it is the final lag, and the
        start of the wait for every lag to be 0."""
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        stopped = time.monotonic()

        async def drained() -> bool | None:
            sample = await self._sample()
            if sample is None:
                return None
            self._after.append(sample)
            return True if not any(sample.lag.values()) else None

        # Reported, not asserted: a lag that does not drain is a figure of the run.
        with contextlib.suppress(AssertionError):
            await wait_for(drained, within=drain_within, interval=INTERVAL_S)
        return self._figures(stopped)

    def _figures(self, stopped: float) -> LagFigures:
        figures = LagFigures(scrape_errors=self._errors)
        if self._after:
            figures.drain_waited_s = round(self._after[-1].at - stopped, 2)
        loaded = [*self._loaded, *self._after[:1]]
        keys = sorted({key for s in (*self._loaded, *self._after) for key in s.lag})
        for key in keys:
            name = "/".join(key)
            figures.max[name] = max((s.lag.get(key, 0.0) for s in loaded), default=0.0)
            figures.final[name] = loaded[-1].lag.get(key, 0.0) if loaded else 0.0
            # The first sample after the load from which this lag stayed 0 to the end.
            since: float | None = None
            for sample in self._after:
                if sample.lag.get(key, 0.0):
                    since = None
                elif since is None:
                    since = sample.at
            figures.drained_after_s[name] = None if since is None else round(since - stopped, 2)
        return figures
