"""A real Prometheus scrapes a running stack: every target up, every dashboard query has data."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml  # type: ignore[import-untyped]

from localrun.broker import EmbeddedBroker, free_port
from tests.monitoring.test_dashboard import dashboard_queries
from tests.support.checkout_stack import (
    DECLINED,
    CheckoutStack,
    close_checkout_stack,
    open_checkout_stack,
)
from tests.support.processes import wait_for

SERVICES = ("payment", "product", "user")


@pytest.fixture
async def shop(
    broker: EmbeddedBroker, tmp_path: Path
) -> AsyncIterator[tuple[CheckoutStack, dict[str, int]]]:
    metrics_ports = {service: free_port() for service in SERVICES}
    running = await open_checkout_stack(
        broker.bootstrap,
        tmp_path / "stack",
        # The rate-limit panel needs a refusal to show.
        extra_env={"MC_RATE_LIMIT_ENABLED": "true"},
        service_env={s: {"MC_METRICS_PORT": str(p)} for s, p in metrics_ports.items()},
    )
    try:
        yield running, metrics_ports
    finally:
        await close_checkout_stack(running)


@pytest.fixture
def prometheus(shop: tuple[CheckoutStack, dict[str, int]], tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found: run `make monitoring-test` (installs Debian's)")
    running, metrics_ports = shop
    gateway = running.url.removeprefix("http://")
    jobs = {"gateway": gateway} | {s: f"127.0.0.1:{p}" for s, p in metrics_ports.items()}
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]}
            for job, target in jobs.items()
        ],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(15)
        log.close()


async def put_load(shop: CheckoutStack) -> None:
    """Confirmed and declined checkouts, a not-found on each service, then 429s."""
    await shop.ready_or_skip()
    product = await shop.new_product(stock=10)
    customer = await shop.new_customer()
    assert (await shop.checkout(customer, [(product, 1)])).status in (200, 201)
    await shop.checkout(customer, [(product, 1)], number=DECLINED)
    missing = uuid.uuid4().hex
    await shop.call("GET", f"/api/v1/products/{missing}")
    await shop.call("GET", f"/api/v1/orders/{missing}", token=customer)
    # A failed sign-in: an error of user_svc.
    await shop.call("POST", "/api/v1/auth/token", json={"email": "x@example.com", "password": "no"})
    # Sign-ups spend the per-address budget on every call: past it, the gateway answers 429
    # (user_svc's own sign-in throttle would answer 429 too, without the gateway's counter).
    statuses: list[int] = []
    async with aiohttp.ClientSession() as http:
        while 429 not in statuses and len(statuses) < 40:
            async with http.post(f"{shop.url}/api/v1/users", json={}) as answer:
                statuses.append(answer.status)
    assert 429 in statuses, statuses


async def query(http: aiohttp.ClientSession, prometheus: str, expr: str) -> list[Any]:
    async with http.get(f"{prometheus}/api/v1/query", params={"query": expr}) as response:
        body = await response.json()
    assert body["status"] == "success", body
    result: list[Any] = body["data"]["result"]
    return result


async def test_prometheus_scrapes_every_process_and_the_dashboard_has_data(
    shop: tuple[CheckoutStack, dict[str, int]], prometheus: str
) -> None:
    running, _ = shop
    await put_load(running)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:

        async def all_up() -> list[Any] | None:
            try:
                up = await query(http, prometheus, "up == 1")
            except aiohttp.ClientError:
                return None  # Prometheus still starting
            return up if len(up) == 1 + len(SERVICES) else None

        up = await wait_for(all_up, within=30, interval=0.5)
        assert {series["metric"]["job"] for series in up} == {"gateway", *SERVICES}

        without_data: list[str] = []

        async def every_query_has_data() -> bool:
            without_data[:] = [
                expr for expr in dashboard_queries() if not await query(http, prometheus, expr)
            ]
            return not without_data

        try:
            await wait_for(every_query_has_data, within=30, interval=1)
        except AssertionError:
            pytest.fail(f"dashboard queries without data: {without_data}")
