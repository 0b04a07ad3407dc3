"""payment_svc killed (SIGKILL) at every step boundary of checkout, restarted, and recovered.

The fault-injection hook (MC_PAYMENT_FAULT_AT, allowed only with MC_ENVIRONMENT=test) makes the
process kill itself at one step; a normal restart's recovery loop must then bring the order to
CONFIRMED or a cleanly compensated FAILED, with the stock right and the card charged at most
once. Runs once product_svc and user_svc are merged (skips before, with the reason).
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from localrun.broker import EmbeddedBroker
from payment_svc.saga import FAULT_POINTS
from tests.support.checkout_stack import (
    APPROVED,
    DECLINED,
    NO_CAPTURE,
    CheckoutStack,
    close_checkout_stack,
    open_checkout_stack,
)
from tests.support.processes import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

FINAL = {"ORDER_STATUS_CONFIRMED", "ORDER_STATUS_FAILED"}
TRAIL_CONFIRMED = [
    "PLACED",
    "STOCK_RESERVED",
    "PAYMENT_AUTHORIZED",
    "PAYMENT_CAPTURED",
    "CONFIRMED",
]
TRAIL_DECLINED = ["PLACED", "STOCK_RESERVED", "PAYMENT_FAILED", "FAILED"]
# A refused capture: authorized, then voided, then failed; never captured.
TRAIL_NO_CAPTURE = [
    "PLACED",
    "STOCK_RESERVED",
    "PAYMENT_AUTHORIZED",
    "PAYMENT_VOIDED",
    "FAILED",
]
TRAILS = {APPROVED: TRAIL_CONFIRMED, NO_CAPTURE: TRAIL_NO_CAPTURE}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shop(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[CheckoutStack]:
    # The crashes are deliberate: the gateway's circuit breaker must not pause payment calls
    # for them (it answers 503 until it trusts the restarted process again).
    running = await open_checkout_stack(
        broker.bootstrap,
        Path(tmp_path_factory.mktemp("recovery")),
        {"MC_BREAKER_FAILURE_THRESHOLD": "1000000", "MC_BREAKER_ERROR_RATE": "1"},
    )
    try:
        await running.ready_or_skip()
        yield running
    finally:
        await close_checkout_stack(running)


async def payment_instances(shop: CheckoutStack) -> dict[str, str]:
    """Id → status of the payment instances the gateway's ``/health`` knows."""
    try:
        health = await shop.stack.health()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return {}
    services = health.get("services")
    payment = services.get("payment", {}) if isinstance(services, dict) else {}
    return {str(i["id"]): str(i["status"]) for i in payment.get("instances", [])}


async def restart_payment(shop: CheckoutStack, env: dict[str, str] | None = None) -> None:
    """Restart payment_svc and wait until the gateway has heard the new process on the health
    stream, not only until one call succeeds: until its first pong, the predecessor's silence
    reads as DOWN and the gateway's breaker answers 503 although the new process serves."""
    known = set(await payment_instances(shop))
    current = shop.stack.processes["payment"]
    if current.popen.poll() is None:
        try:
            current.terminate(timeout=20)
        except subprocess.TimeoutExpired:  # a slow graceful stop must not block the restart
            current.kill()
    shop.stack.start_service("payment", env=env)

    async def serving() -> bool:
        heard = {i for i, status in (await payment_instances(shop)).items() if status == "UP"}
        if not heard - known:
            return False
        probe = await shop.call("GET", "/api/v1/orders", token=shop.customers[0])
        return probe.status == 200

    await wait_for(serving, within=60, interval=0.2)


# A declined card never reaches the steps after the authorization; a refused capture dies
# between the capture and its compensation (void, release, FAILED recorded).
CASES = [
    *((point, APPROVED) for point in FAULT_POINTS),
    *((point, DECLINED) for point in FAULT_POINTS[: FAULT_POINTS.index("authorized_remote") + 1]),
    ("captured_remote", NO_CAPTURE),
]


@pytest.mark.parametrize(("point", "number"), CASES)
async def test_a_crash_at_each_step_ends_confirmed_or_cleanly_failed_and_charged_at_most_once(
    shop: CheckoutStack, point: str, number: str
) -> None:
    buyer = await shop.new_customer()
    product = await shop.new_product(stock=3)
    await restart_payment(shop, {"MC_PAYMENT_FAULT_AT": point})

    crashed = await shop.checkout(buyer, [(product, 1)], number=number)
    assert crashed.status not in (201, 402), crashed  # it died before answering
    shop.stack.processes["payment"].popen.wait(30)
    await restart_payment(shop)

    async def settled() -> dict[str, Any] | None:
        listed = await shop.call("GET", "/api/v1/orders", token=buyer)
        orders = listed.body.get("orders", []) if listed.status == 200 else []
        return orders[0] if orders and orders[0]["status"] in FINAL else None

    order = await wait_for(settled, within=60, interval=0.2)
    available, reserved = await shop.stock(product)
    payment_id = order.get("payment", {}).get("id", "")
    charged = await shop.captures_of(payment_id) if payment_id else 0
    if order["status"] == "ORDER_STATUS_CONFIRMED":
        assert (available, reserved, charged) == (2, 0, 1), (crashed, order)
    else:
        assert (available, reserved, charged) == (3, 0, 0), (crashed, order)
    assert (order["status"] == "ORDER_STATUS_CONFIRMED") == (number == APPROVED)
    # The audit trail tells each step once, in order, however the crash split them.
    history = await shop.call(
        "GET", f"/api/v1/orders/{order['id']}/history?page_size=100", token=buyer
    )
    assert history.status == 200, history
    changes = history.body["changes"]
    assert [c["kind"].removeprefix("ORDER_CHANGE_KIND_") for c in changes] == (
        TRAILS.get(number, TRAIL_DECLINED)
    )
    assert len({c["id"] for c in changes}) == len(changes)
    if number == NO_CAPTURE:
        assert order["payment"]["status"] == "PAYMENT_STATUS_VOIDED"
        assert await shop.operations_of(payment_id) == [
            ("authorize", 1),
            ("capture", 0),
            ("void", 1),
        ]
