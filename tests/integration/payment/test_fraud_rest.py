"""Fraud screening through the real gateway and payment gRPC server (fake inventory).

What a shopper and an administrator see over REST: a denied checkout is a plain 402, a held
one is ON_HOLD without a word about screening for the customer, administrators see the
screening, list the holds, approve (one capture) or reject (voided, stock back).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from sqlalchemy import func, select

from common.db import Database
from payment_svc.provider import sandbox_ledger
from payment_svc.screening import ScreeningPolicy
from tests.integration.payment.test_payment_rest import body, stocked
from tests.support.payment_fakes import FakeInventory
from tests.support.payment_rest import Client, payment_rest
from tests.support.tokens import admin_headers, bearer, customer_token

DECLINED = "4000000000000002"


@pytest_asyncio.fixture
async def shop(tmp_path: Path) -> AsyncIterator[tuple[Client, FakeInventory, Database]]:
    async with payment_rest(
        tmp_path, screening=ScreeningPolicy(), card_key=b"rest-test-card-key-0123456789abc"
    ) as stack:
        yield stack.client, stack.inventory, stack.database


async def place(client: Client, payload: dict[str, Any], user: str) -> tuple[int, dict[str, Any]]:
    response = await client.post(
        "/api/v1/orders",
        json=payload,
        headers={**bearer(customer_token(user)), "Idempotency-Key": uuid.uuid4().hex},
    )
    return response.status, await response.json()


async def call(
    client: Client, method: str, path: str, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    response = await client.request(method, path, headers=headers, json={})
    return response.status, await response.json()


async def captures(database: Database, order: dict[str, Any]) -> int:
    async with database.session() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(sandbox_ledger)
            .where(
                sandbox_ledger.c.key == f"{order['payment']['id']}:capture",
                sandbox_ledger.c.approved == 1,
            )
        )
    return int(count or 0)


async def test_a_denied_checkout_answers_402_with_a_reason_that_names_no_rule(
    shop: tuple[Client, FakeInventory, Database],
) -> None:
    client, inventory, _ = shop
    item = stocked(inventory, stock=50, price=100)
    for attempt in range(3):  # a card-testing burst from this client address
        status, _ = await place(client, body(item, DECLINED), user=f"tester-{attempt}")
        assert status == 402

    status, problem = await place(client, body(item), user="tester-9")

    assert status == 402, problem
    assert problem["detail"] == "the payment was declined; nothing was charged"
    text = str(problem).lower()
    assert "screen" not in text
    assert "decline_run" not in text
    assert "fraud" not in text
    _, orders = await call(client, "GET", "/api/v1/orders?user_id=-&page_size=1", admin_headers())
    assert orders["orders"][0]["screening"]["decision"] == "SCREENING_DECISION_DENY"
    assert orders["orders"][0]["status"] == "ORDER_STATUS_FAILED"


async def test_a_held_order_is_approved_by_an_administrator_and_captured_once(
    shop: tuple[Client, FakeInventory, Database],
) -> None:
    client, inventory, database = shop
    item = stocked(inventory, stock=3, price=60_000)

    status, held = await place(client, body(item), user="newcomer")

    assert status == 201, held
    assert held["status"] == "ORDER_STATUS_ON_HOLD"
    assert held["payment"]["status"] == "PAYMENT_STATUS_AUTHORIZED"
    assert "screening" not in held  # a customer never sees scores or reasons
    status, mine = await call(
        client, "GET", f"/api/v1/orders/{held['id']}", bearer(customer_token("newcomer"))
    )
    assert status == 200
    assert "screening" not in mine
    _, listed = await call(client, "GET", "/api/v1/orders", bearer(customer_token("newcomer")))
    assert "screening" not in listed["orders"][0]
    status, seen = await call(client, "GET", f"/api/v1/orders/{held['id']}", admin_headers())
    assert seen["screening"]["decision"] == "SCREENING_DECISION_REVIEW"
    assert seen["screening"]["score"] == 50
    assert seen["screening"]["reasons"][0]["code"] == "NEW_ACCOUNT_HIGH_AMOUNT"

    status, customer_try = await call(
        client, "POST", f"/api/v1/orders/{held['id']}:approve", bearer(customer_token("newcomer"))
    )
    assert status == 403, customer_try
    status, approved = await call(
        client, "POST", f"/api/v1/orders/{held['id']}:approve", admin_headers()
    )
    again_status, again = await call(
        client, "POST", f"/api/v1/orders/{held['id']}:approve", admin_headers()
    )

    assert status == 200, approved
    assert approved["status"] == "ORDER_STATUS_CONFIRMED"
    assert approved["payment"]["status"] == "PAYMENT_STATUS_CAPTURED"
    assert (again_status, again["status"]) == (200, "ORDER_STATUS_CONFIRMED")
    assert await captures(database, approved) == 1
    assert inventory.status(held["id"]) == "COMMITTED"
    _, history = await call(client, "GET", f"/api/v1/orders/{held['id']}/history", admin_headers())
    [review] = [c for c in history["changes"] if c["kind"] == "ORDER_CHANGE_KIND_APPROVED"]
    assert (review["actor"], review["actor_id"]) == ("ACTOR_KIND_ADMIN", "admin-1")
    kinds = [change["kind"] for change in history["changes"]]
    assert kinds.index("ORDER_CHANGE_KIND_HELD") < kinds.index("ORDER_CHANGE_KIND_APPROVED")
    assert kinds[-1] == "ORDER_CHANGE_KIND_CONFIRMED"


async def test_a_rejected_hold_fails_voided_with_its_stock_back(
    shop: tuple[Client, FakeInventory, Database],
) -> None:
    client, inventory, database = shop
    item = stocked(inventory, stock=3, price=60_000)
    _, held = await place(client, body(item), user="newcomer")

    status, rejected = await call(
        client, "POST", f"/api/v1/orders/{held['id']}:reject", admin_headers()
    )
    again_status, _ = await call(
        client, "POST", f"/api/v1/orders/{held['id']}:reject", admin_headers()
    )
    approve_status, problem = await call(
        client, "POST", f"/api/v1/orders/{held['id']}:approve", admin_headers()
    )

    assert status == 200, rejected
    assert rejected["status"] == "ORDER_STATUS_FAILED"
    assert rejected["payment"]["status"] == "PAYMENT_STATUS_VOIDED"
    assert again_status == 200
    assert approve_status == 400, problem
    assert problem["reason"] == "NOT_ON_HOLD"
    assert inventory.available[item] == 3
    assert inventory.status(held["id"]) == "RELEASED"
    assert await captures(database, rejected) == 0
    status, history = await call(
        client, "GET", f"/api/v1/orders/{held['id']}/history", bearer(customer_token("newcomer"))
    )
    kinds = [change["kind"] for change in history["changes"]]
    assert "ORDER_CHANGE_KIND_HELD" in kinds
    [review] = [c for c in history["changes"] if c["kind"] == "ORDER_CHANGE_KIND_REJECTED"]
    assert review["actor"] == "ACTOR_KIND_ADMIN"
    # The customer reads a plain decline, not the screening's own words.
    reasons = {change.get("reason", "") for change in history["changes"]}
    assert "SCREENING_REJECTED" not in reasons
    assert "PAYMENT_DECLINED" in reasons


async def test_administrators_list_the_orders_on_hold_with_their_reasons(
    shop: tuple[Client, FakeInventory, Database],
) -> None:
    client, inventory, _ = shop
    small = stocked(inventory, stock=10, price=1_000)
    big = stocked(inventory, stock=10, price=60_000)
    await place(client, body(small), user="regular")
    held = [(await place(client, body(big), user=f"newcomer-{n}"))[1]["id"] for n in range(3)]

    status, first = await call(
        client,
        "GET",
        "/api/v1/orders?user_id=-&status=ORDER_STATUS_ON_HOLD&page_size=2",
        admin_headers(),
    )
    token = first["next_page_token"]
    _, second = await call(
        client,
        "GET",
        f"/api/v1/orders?user_id=-&status=ORDER_STATUS_ON_HOLD&page_size=2&page_token={token}",
        admin_headers(),
    )
    mismatch, problem = await call(
        client, "GET", f"/api/v1/orders?user_id=-&page_size=2&page_token={token}", admin_headers()
    )

    assert status == 200, first
    listed = [*first["orders"], *second["orders"]]
    assert sorted(o["id"] for o in listed) == sorted(held)
    assert all(o["screening"]["reasons"] for o in listed)
    assert mismatch == 400, problem
