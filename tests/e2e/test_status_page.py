"""``GET /status`` in headless Chromium against the real stack: it shows, follows and warns."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.support.chromium import Page, chromium_page, chromium_path
from tests.support.processes import ROOT, Stack, wait_for

SERVICES = ("payment", "product", "user")
# Git-ignored (var/): kept after the run for people and CI to look at.
ARTIFACTS = ROOT / "var" / "test-artifacts"
STARTUP_S = 60.0

CHROMIUM = chromium_path()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="needs Debian's chromium (make test installs it)",
)

# What a person reads on the page, gathered in one go.
READ_PAGE = """(() => {
  const text = (el) => (el ? el.textContent.replace(/\\s+/g, " ").trim() : null);
  const services = {};
  for (const card of document.querySelectorAll(".service")) {
    services[card.dataset.service] = {
      status: text(card.querySelector(".badge .text")),
      breaker: text(card.querySelector(".breaker-state")),
      instances: [...card.querySelectorAll("tbody tr")].map((row) => ({
        address: row.dataset.instance,
        status: text(row.querySelector(".instance-status")),
        rtt: text(row.querySelector(".rtt .value")),
      })),
    };
  }
  return {
    gateway: document.querySelector("#gateway").dataset.state,
    gatewayText: text(document.querySelector("#gateway")),
    overall: text(document.querySelector("#overall .badge .text")),
    broker: text(document.querySelector("#broker .badge .text")),
    requests: text(document.querySelector("#requests dd")),
    services,
  };
})()"""


def keep(name: str, content: bytes) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / name).write_bytes(content)


async def read_page(page: Page) -> dict[str, Any]:
    body: dict[str, Any] = await page.evaluate(READ_PAGE)
    return body


def instance_status(seen: dict[str, Any], service: str) -> str | None:
    instances = seen["services"].get(service, {}).get("instances", [])
    return instances[0]["status"] if len(instances) == 1 else None


async def answers(stack: Stack) -> bool:
    try:
        return bool(await stack.health())
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return False


@pytest.fixture
async def page(stack: Stack) -> AsyncIterator[Page]:
    assert CHROMIUM is not None, "CI must have chromium: make test installs it"
    await wait_for(lambda: answers(stack), within=STARTUP_S)  # else Chromium's error page
    async with chromium_page(CHROMIUM) as tab:
        await tab.set_viewport(1280, 860)
        await tab.navigate(f"{stack.gateway_url}/status")
        yield tab


async def all_up(page: Page) -> dict[str, Any] | None:
    seen = await read_page(page)
    ok = seen["gateway"] == "live" and all(
        instance_status(seen, name) == "✓ UP" for name in SERVICES
    )
    return seen if ok and seen["overall"] == "UP" else None


async def test_the_page_shows_every_service_up_and_is_kept_as_a_screenshot(page: Page) -> None:
    seen = await wait_for(lambda: all_up(page), within=STARTUP_S)

    assert seen["broker"] == "UP"
    assert seen["gatewayText"].startswith("● Live")
    for name in SERVICES:
        assert seen["services"][name]["status"] == "UP"
        assert seen["services"][name]["breaker"] == "closed — calls flow"
    # The script ran under the page's CSP (no inline code): it drew what it read.
    assert await page.evaluate("document.querySelectorAll('.service').length") == 3
    # A few polls fill the sparklines before the picture is taken.
    await wait_for(
        lambda: page.evaluate("document.querySelectorAll('.sparkline polyline').length === 3"),
        within=10,
    )
    await page.set_viewport(1920, 1080)
    keep("status-wall.png", await page.screenshot())
    await page.set_viewport(390, 844, mobile=True)
    keep("status-phone.png", await page.screenshot())
    keep("status-page.json", json.dumps(seen, indent=2, ensure_ascii=False).encode())


async def test_a_frozen_service_turns_down_within_5s_and_up_after_it_thaws(
    page: Page, stack: Stack
) -> None:
    await wait_for(lambda: all_up(page), within=STARTUP_S)
    product = stack.processes["product"].popen
    product.send_signal(signal.SIGSTOP)
    try:

        async def product_down() -> dict[str, Any] | None:
            seen = await read_page(page)
            return seen if instance_status(seen, "product") == "✕ DOWN" else None

        seen = await wait_for(product_down, within=5.0)
        assert seen["services"]["product"]["status"] == "DOWN"
        assert seen["overall"] == "DEGRADED"
        assert instance_status(seen, "payment") == "✓ UP"
        keep("status-product-down.png", await page.screenshot())
    finally:
        product.send_signal(signal.SIGCONT)

    await wait_for(lambda: all_up(page), within=15.0)


async def test_the_page_says_when_the_gateway_cannot_be_reached(page: Page, stack: Stack) -> None:
    await wait_for(lambda: all_up(page), within=STARTUP_S)
    gateway = stack.processes["gateway"].popen
    gateway.send_signal(signal.SIGSTOP)  # it accepts connections but never answers
    try:

        async def unreachable() -> dict[str, Any] | None:
            seen = await read_page(page)
            return seen if seen["gateway"] == "unreachable" else None

        seen = await wait_for(unreachable, within=5.0)
        assert "Gateway unreachable" in seen["gatewayText"]
        # The last data stays on screen, faded and marked as old.
        assert "data below is from" in seen["gatewayText"]
        assert await page.evaluate("document.body.classList.contains('stale')")
        keep("status-gateway-unreachable.png", await page.screenshot())
    finally:
        gateway.send_signal(signal.SIGCONT)

    await wait_for(lambda: all_up(page), within=15.0)
    assert not await page.evaluate("document.body.classList.contains('stale')")
