"""Events that drive work, end to end: real processes, a real broker, REST.

A user deleted through REST has their card data erased by payment_svc (user_svc's outbox →
Kafka → payment's consumer); a record on order-events that product_svc cannot decode is
dead-lettered and shown to administrators, never to customers; a checkout reaches the sales
figures (payment's outbox → Kafka → payment's own analytics consumers → the admin route).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from common.topics import Topic
from localrun.broker import EmbeddedBroker
from tests.support.checkout_stack import CheckoutStack, close_checkout_stack, open_checkout_stack
from tests.support.consumer_probe import produce
from tests.support.processes import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

WITHIN_S = 60.0


@pytest.fixture(scope="module")
def own_broker() -> Iterator[EmbeddedBroker]:
    # Its own: the poison record below must not reach the session's other stacks.
    broker = EmbeddedBroker.start()
    yield broker
    broker.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shop(
    own_broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[CheckoutStack]:
    running = await open_checkout_stack(
        own_broker.bootstrap, Path(tmp_path_factory.mktemp("consumers"))
    )
    try:
        await running.ready_or_skip()
        yield running
    finally:
        await close_checkout_stack(running)


async def test_a_deleted_users_payment_keeps_its_amount_and_loses_its_card_digits(
    shop: CheckoutStack,
) -> None:
    buyer = await shop.new_customer()
    product = await shop.new_product(stock=3, price=1250)
    placed = await shop.checkout(buyer, [(product, 1)])
    assert placed.status == 201, placed
    payment_id = placed.body["payment"]["id"]
    before = await shop.call("GET", f"/api/v1/payments/{payment_id}", token=shop.admin_token)
    assert before.body["card"] == {"brand": "visa", "last4": "4242"}

    deleted = await shop.call("DELETE", "/api/v1/users/me", token=buyer)
    assert deleted.status == 204, deleted

    async def erased() -> dict[str, Any] | None:
        answer = await shop.call("GET", f"/api/v1/payments/{payment_id}", token=shop.admin_token)
        return answer.body if answer.body["card"].get("last4") == "" else None

    after = await wait_for(erased, within=WITHIN_S, interval=0.2)
    assert after["amount"] == before.body["amount"] == {"amount": 1250, "currency": "USD"}
    assert after["status"] == before.body["status"]
    assert after["order_id"] == before.body["order_id"]
    assert after["card"]["brand"] == "visa"


async def test_an_undecodable_order_event_is_dead_lettered_for_admins_only(
    shop: CheckoutStack, own_broker: EmbeddedBroker
) -> None:
    key = f"order-{uuid.uuid4().hex}"
    await produce(own_broker.bootstrap, [(key, b"not an event")], topic=Topic.ORDER_EVENTS)

    async def listed() -> dict[str, Any] | None:
        answer = await shop.call(
            "GET",
            "/api/v1/product/dead-letters?status=DEAD_LETTER_STATUS_PENDING",
            token=shop.admin_token,
        )
        assert answer.status == 200, answer
        # Each consumer of order-events dead-letters it (count-co-purchases too): take one.
        return next(
            (
                d
                for d in answer.body.get("dead_letters", [])
                if d["key"] == key and d["consumer"] == "release-ended-orders"
            ),
            None,
        )

    letter = await wait_for(listed, within=WITHIN_S, interval=0.2)
    assert letter["topic"] == "order-events"
    assert letter["payload"] == "not an event"
    assert letter["error"].startswith("not JSON")
    assert letter["status"] == "DEAD_LETTER_STATUS_PENDING"

    customer = await shop.new_customer()
    refused = await shop.call("GET", "/api/v1/product/dead-letters", token=customer)
    assert refused.status == 403, refused

    replayed = await shop.call(
        "POST",
        f"/api/v1/product/dead-letters/{letter['id']}:replay",
        token=shop.admin_token,
        json={},
    )
    assert replayed.status == 400, replayed
    assert replayed.body["code"] == "FAILED_PRECONDITION"
    missing = await shop.call(
        "POST", "/api/v1/product/dead-letters/nope:replay", token=shop.admin_token, json={}
    )
    assert missing.status == 404, missing


async def test_a_checkout_reaches_the_sales_figures_with_their_as_of(shop: CheckoutStack) -> None:
    product = await shop.new_product(stock=5, price=700)
    customer = await shop.new_customer()
    placed = await shop.checkout(customer, [(product, 3)])
    assert placed.status == 201, placed
    now = datetime.now(UTC)
    window = (
        f"start_time={(now - timedelta(hours=1)).isoformat().replace('+00:00', 'Z')}"
        f"&end_time={(now + timedelta(hours=1)).isoformat().replace('+00:00', 'Z')}"
    )

    async def sold() -> dict[str, Any] | None:
        answer = await shop.call(
            "GET", f"/api/v1/payment/analytics/top-products?{window}", token=shop.admin_token
        )
        assert answer.status == 200, answer
        return next(
            (p for p in answer.body.get("products", []) if p["product_id"] == product), None
        )

    found = await wait_for(sold, within=WITHIN_S, interval=0.2)
    assert found["units"] == 3
    assert found["revenue"] == [{"amount": 2100, "currency": "USD"}]
    sales = await shop.call(
        "GET",
        f"/api/v1/payment/analytics/sales?{window}&granularity=GRANULARITY_HOUR",
        token=shop.admin_token,
    )
    assert sales.status == 200, sales
    assert sales.body["as_of"]
    refused = await shop.call(
        "GET", f"/api/v1/payment/analytics/top-products?{window}", token=customer
    )
    assert refused.status == 403, refused
