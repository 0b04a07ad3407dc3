"""Orders and payments through the real gateway and a real payment gRPC server (fake inventory).

Everything is real except product_svc, replaced by the in-memory inventory: REST transcoding,
the access interceptor, the error mapping (402, 409, 400, 422), the database and the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import re
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import structlog

from common.logging import get_logger
from tests.support.page_token_replay import replays_page_token
from tests.support.payment_fakes import FakeInventory
from tests.support.payment_rest import Client, payment_rest
from tests.support.tokens import admin_token, bearer, customer_token

SANDBOX = (
    "4242424242424242",
    "4000000000000002",
    "4000000000009995",
    "4000000000000119",
    "4000000000000341",
)


@pytest_asyncio.fixture
async def rest(
    tmp_path: Path,
) -> AsyncIterator[tuple[Client, FakeInventory, Path]]:
    async with payment_rest(tmp_path) as stack:
        yield stack.client, stack.inventory, tmp_path


def body(product_id: str, number: str = "4242424242424242", quantity: int = 1) -> dict[str, Any]:
    return {
        "items": [{"product_id": product_id, "quantity": quantity}],
        "payment_method": {
            "card": {
                "number": number,
                "exp_month": 12,
                "exp_year": datetime.now(UTC).year + 2,
                "cvc": "123",
                "holder_name": "Ada Lovelace",
            }
        },
    }


async def place(
    client: Client, payload: dict[str, Any], *, user: str = "user-1", key: str | None = None
) -> tuple[int, dict[str, Any]]:
    response = await client.post(
        "/api/v1/orders",
        json=payload,
        headers={**bearer(customer_token(user)), "Idempotency-Key": key or uuid.uuid4().hex},
    )
    return response.status, await response.json()


def stocked(inventory: FakeInventory, stock: int = 5, price: int = 1999) -> str:
    product_id = f"p-{uuid.uuid4().hex[:8]}"
    inventory.add_product(product_id, stock, price)
    return product_id


async def test_a_successful_checkout_answers_201_with_the_contract_body(
    rest: tuple[Client, FakeInventory, Path],
) -> None:
    client, inventory, _ = rest
    item = stocked(inventory, price=1999)

    status, order = await place(client, body(item, quantity=2))

    assert status == 201, order
    assert order["status"] == "ORDER_STATUS_CONFIRMED"
    assert order["total"] == {"amount": 3998, "currency": "USD"}
    assert order["items"][0]["unit_price"] == {"amount": 1999, "currency": "USD"}
    assert order["items"][0]["sku"] == f"SKU-{item}"
    assert order["payment"]["card"] == {"brand": "visa", "last4": "4242"}
    assert order["payment"]["status"] == "PAYMENT_STATUS_CAPTURED"
    assert "create_time" in order
    assert "4242424242424242" not in str(order)


async def test_a_declined_card_answers_402_and_releases_the_stock(
    rest: tuple[Client, FakeInventory, Path],
) -> None:
    client, inventory, _ = rest
    item = stocked(inventory, stock=3)

    status, problem = await place(client, body(item, "4000000000000002"))

    assert status == 402, problem
    assert inventory.available[item] == 3


async def test_a_refused_capture_answers_409_capture_failed_and_releases_the_stock(
    rest: tuple[Client, FakeInventory, Path],
) -> None:
    client, inventory, _ = rest
    user = f"user-{uuid.uuid4().hex[:6]}"
    item = stocked(inventory, stock=3)

    status, problem = await place(client, body(item, "4000000000000341"), user=user)

    assert status == 409, problem
    assert (problem["code"], problem["reason"]) == ("ABORTED", "CAPTURE_FAILED")
    assert inventory.available[item] == 3
    listed = await (await client.get("/api/v1/orders", headers=bearer(customer_token(user)))).json()
    [order] = listed["orders"]
    assert order["status"] == "ORDER_STATUS_FAILED"
    assert order["payment"]["status"] == "PAYMENT_STATUS_VOIDED"


async def test_not_enough_stock_answers_409(rest: tuple[Client, FakeInventory, Path]) -> None:
    client, inventory, _ = rest
    item = stocked(inventory, stock=1)

    status, problem = await place(client, body(item, quantity=2))

    assert status == 409, problem
    assert problem["code"] == "ABORTED"


async def test_out_of_stock_names_the_short_product_and_what_is_available_even_on_replay(
    rest: tuple[Client, FakeInventory, Path],
) -> None:
    client, inventory, _ = rest
    plenty, short = stocked(inventory, stock=5), stocked(inventory, stock=1)
    payload = body(plenty)
    payload["items"].append({"product_id": short, "quantity": 3})
    key = uuid.uuid4().hex

    status, problem = await place(client, payload, key=key)
    replayed_status, replayed = await place(client, payload, key=key)

    assert status == 409, problem
    assert problem["reason"] == "OUT_OF_STOCK"
    named = f'product {short} (SKU-{short}, "Product {short}") has only 1 unit available'
    assert problem["field_violations"] == [
        {"field": "items[1].quantity", "description": f"{named}, 3 requested"}
    ]
    assert f"product {short} has only 1 unit available, 3 requested" in problem["detail"]
    assert plenty not in problem["detail"]
    # The stored first answer, word for word (only the request id is the replay's own).
    assert replayed_status == 409
    assert {**replayed, "request_id": ""} == {**problem, "request_id": ""}


async def my_orders(client: Client, user: str) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/orders", headers=bearer(customer_token(user)))
    assert response.status == 200
    orders: list[dict[str, Any]] = (await response.json())["orders"]
    return orders


async def test_a_failed_order_shows_its_lines_as_the_catalog_describes_them(
    rest: tuple[Client, FakeInventory, Path],
) -> None:
    client, inventory, _ = rest
    item = stocked(inventory, stock=1, price=1500)
    user = f"user-{uuid.uuid4().hex[:8]}"

    status, _ = await place(client, body(item, quantity=2), user=user)

    assert status == 409
    [order] = await my_orders(client, user)
    assert order["status"] == "ORDER_STATUS_FAILED"
    assert order["items"] == [
        {
            "product_id": item,
            "sku": f"SKU-{item}",
            "name": f"Product {item}",
            "quantity": 2,
            "unit_price": {"amount": 1500, "currency": "USD"},
        }
    ]


async def test_a_failed_order_omits_what_is_not_known_rather_than_showing_zeros(
    rest: tuple[Client, FakeInventory, Path],
) -> None:
    client, _, _ = rest
    user = f"user-{uuid.uuid4().hex[:8]}"

    status, _ = await place(client, body("p-nobody-sells-this"), user=user)

    assert status == 404
    [order] = await my_orders(client, user)
    assert order["status"] == "ORDER_STATUS_FAILED"
    assert order["items"] == [{"product_id": "p-nobody-sells-this", "quantity": 1}]


@pytest.mark.parametrize(
    ("card_change", "field"),
    [
        ({"number": "4242424242424241"}, "number"),
        ({"exp_year": 2020}, "exp_year"),
        ({"cvc": "12"}, "cvc"),
    ],
)
async def test_an_invalid_card_answers_400_naming_the_field(
    rest: tuple[Client, FakeInventory, Path], card_change: dict[str, Any], field: str
) -> None:
    client, inventory, _ = rest
    payload = body(stocked(inventory))
    payload["payment_method"]["card"].update(card_change)

    status, problem = await place(client, payload)

    assert status == 400, problem
    assert field in str(problem)
    assert "4242424242424241" not in str(problem)


async def test_a_missing_idempotency_key_answers_400(
    rest: tuple[Client, FakeInventory, Path],
) -> None:
    client, inventory, _ = rest

    response = await client.post(
        "/api/v1/orders", json=body(stocked(inventory)), headers=bearer(customer_token())
    )

    assert response.status == 400


async def test_the_same_key_replays_and_another_body_answers_422(
    rest: tuple[Client, FakeInventory, Path],
) -> None:
    client, inventory, _ = rest
    item = stocked(inventory, stock=5)

    first = await place(client, body(item), key="replay-key")
    again = await place(client, body(item), key="replay-key")
    other = await place(client, body(item, quantity=2), key="replay-key")

    assert first[0] == again[0] == 201
    assert again[1]["id"] == first[1]["id"]
    assert other[0] == 422, other[1]
    assert inventory.available[item] == 4


async def test_a_replay_after_a_cancel_answers_the_first_201_body(
    rest: tuple[Client, FakeInventory, Path],
) -> None:
    client, inventory, _ = rest
    user = f"user-{uuid.uuid4().hex[:6]}"
    item = stocked(inventory, stock=5)
    first = await place(client, body(item), user=user, key="replay-after-cancel")
    cancelled = await client.post(
        f"/api/v1/orders/{first[1]['id']}:cancel", json={}, headers=bearer(customer_token(user))
    )
    assert cancelled.status == 200, await cancelled.text()

    again = await place(client, body(item), user=user, key="replay-after-cancel")

    assert again == first
    assert again[0] == 201
    assert again[1]["status"] == "ORDER_STATUS_CONFIRMED"
    assert again[1]["payment"]["status"] == "PAYMENT_STATUS_CAPTURED"


async def test_a_replayed_declined_card_answers_the_same_402_problem(
    rest: tuple[Client, FakeInventory, Path],
) -> None:
    client, inventory, _ = rest
    item = stocked(inventory, stock=5)

    first = await place(client, body(item, "4000000000000002"), key="declined-replay")
    again = await place(client, body(item, "4000000000000002"), key="declined-replay")

    assert first[0] == again[0] == 402
    # Everything but the request id, which names each request itself.
    assert {**again[1], "request_id": None} == {**first[1], "request_id": None}
    assert first[1]["reason"] == "PAYMENT_DECLINED"
    assert inventory.available[item] == 5


async def test_ten_concurrent_identical_requests_answer_one_order(
    rest: tuple[Client, FakeInventory, Path],
) -> None:
    client, inventory, _ = rest
    item = stocked(inventory, stock=20)

    answers = await asyncio.gather(*(place(client, body(item), key="burst") for _ in range(10)))

    assert {status for status, _ in answers} == {201}
    assert len({order["id"] for _, order in answers}) == 1
    assert inventory.available[item] == 19


async def test_history_payment_cancel_and_refund_over_rest(
    rest: tuple[Client, FakeInventory, Path],
) -> None:
    client, inventory, _ = rest
    user = f"user-{uuid.uuid4().hex[:6]}"
    mine = bearer(customer_token(user))
    admin = bearer(admin_token())
    item = stocked(inventory, stock=5, price=1000)
    _, first = await place(client, body(item), user=user)
    _, second = await place(client, body(item), user=user)

    listed = await (await client.get("/api/v1/orders?page_size=1", headers=mine)).json()
    assert [o["id"] for o in listed["orders"]] == [second["id"]]
    rest_page = await (
        await client.get(
            f"/api/v1/orders?page_size=1&page_token={listed['next_page_token']}", headers=mine
        )
    ).json()
    assert [o["id"] for o in rest_page["orders"]] == [first["id"]]

    stranger = await client.get(f"/api/v1/orders/{first['id']}", headers=bearer(customer_token()))
    assert stranger.status == 404

    refund = await client.post(
        f"/api/v1/orders/{first['id']}/refunds",
        json={"amount": {"amount": 300, "currency": "USD"}, "reason": "scratched"},
        headers=admin,
    )
    assert refund.status == 201, await refund.text()
    too_much = await client.post(
        f"/api/v1/orders/{first['id']}/refunds",
        json={"amount": {"amount": 800, "currency": "USD"}, "reason": "again"},
        headers=admin,
    )
    assert too_much.status == 400, await too_much.text()

    payment = await (
        await client.get(f"/api/v1/payments/{first['payment']['id']}", headers=mine)
    ).json()
    assert payment["status"] == "PAYMENT_STATUS_PARTIALLY_REFUNDED"
    assert [r["amount"]["amount"] for r in payment["refunds"]] == [300]

    cancelled = await client.post(f"/api/v1/orders/{second['id']}:cancel", json={}, headers=mine)
    assert cancelled.status == 200, await cancelled.text()
    assert (await cancelled.json())["status"] == "ORDER_STATUS_CANCELLED"
    assert inventory.available[item] == 4


async def test_an_orders_audit_trail_over_rest_names_each_change_actor_and_reason(
    rest: tuple[Client, FakeInventory, Path],
) -> None:
    client, inventory, _ = rest
    user = f"user-{uuid.uuid4().hex[:6]}"
    _, order = await place(client, body(stocked(inventory, price=1000)), user=user)
    refund = await client.post(
        f"/api/v1/orders/{order['id']}/refunds",
        json={"amount": {"amount": 300, "currency": "USD"}, "reason": "scratched"},
        headers=bearer(admin_token()),
    )
    assert refund.status == 201, await refund.text()

    first = await client.get(
        f"/api/v1/orders/{order['id']}/history?page_size=4", headers=bearer(customer_token(user))
    )
    page = await first.json()
    assert first.status == 200, page
    rest_of = await client.get(
        f"/api/v1/orders/{order['id']}/history?page_token={page['next_page_token']}",
        headers=bearer(customer_token(user)),
    )
    changes = page["changes"] + (await rest_of.json())["changes"]

    assert [c["kind"].removeprefix("ORDER_CHANGE_KIND_") for c in changes] == [
        "PLACED",
        "STOCK_RESERVED",
        "PAYMENT_AUTHORIZED",
        "PAYMENT_CAPTURED",
        "CONFIRMED",
        "PAYMENT_REFUNDED",
        "REFUNDED",
    ]
    assert changes[0]["actor"] == "ACTOR_KIND_USER"
    assert changes[0]["actor_id"] == user
    assert changes[-1]["actor"] == "ACTOR_KIND_ADMIN"
    assert changes[-1]["reason"] == "scratched"
    assert changes[-1]["amount"] == {"amount": 300, "currency": "USD"}
    assert changes[-1]["event_type"] == "microcommerce.order.refunded"
    stranger = await client.get(
        f"/api/v1/orders/{order['id']}/history", headers=bearer(customer_token())
    )
    assert stranger.status == 404


async def test_a_negative_page_size_is_a_400_naming_page_size(
    rest: tuple[Client, FakeInventory, Path],
) -> None:
    client, _, _ = rest

    response = await client.get(
        "/api/v1/orders", params={"page_size": "-1"}, headers=bearer(customer_token())
    )
    problem = await response.json()

    assert response.status == 400, problem
    assert "page_size" in str(problem)


@replays_page_token("microcommerce.payment.v1.OrderService", "ListOrders")
async def test_a_token_replayed_with_another_user_id_is_a_400_naming_page_token(
    rest: tuple[Client, FakeInventory, Path],
) -> None:
    client, inventory, _ = rest
    user = f"user-{uuid.uuid4().hex[:6]}"
    item = stocked(inventory, stock=5)
    for _ in range(2):
        await place(client, body(item), user=user)
    admin = bearer(admin_token())
    listed = await (
        await client.get(
            "/api/v1/orders", params={"page_size": "1", "user_id": user}, headers=admin
        )
    ).json()

    response = await client.get(
        "/api/v1/orders",
        params={"page_size": "1", "user_id": "-", "page_token": listed["next_page_token"]},
        headers=admin,
    )
    problem = await response.json()

    assert response.status == 400, problem
    assert "page_token" in str(problem)


@replays_page_token("microcommerce.payment.v1.OrderService", "ListOrders")
async def test_a_customers_token_replayed_by_another_customer_is_a_400_naming_page_token(
    rest: tuple[Client, FakeInventory, Path],
) -> None:
    client, inventory, _ = rest
    owner, other = (f"user-{uuid.uuid4().hex[:6]}" for _ in range(2))
    item = stocked(inventory, stock=5)
    for user in (owner, owner, other, other):
        await place(client, body(item), user=user)
    listed = await (
        await client.get(
            "/api/v1/orders", params={"page_size": "1"}, headers=bearer(customer_token(owner))
        )
    ).json()

    # Both requests say "my orders" (no user_id): the token is bound to whose orders they are.
    response = await client.get(
        "/api/v1/orders",
        params={"page_size": "1", "page_token": listed["next_page_token"]},
        headers=bearer(customer_token(other)),
    )
    problem = await response.json()

    assert response.status == 400, problem
    assert "page_token" in str(problem)


@contextmanager
def every_log_call() -> Iterator[list[dict[str, Any]]]:
    """Every log call as the code made it, before any processor (the card scrubber included).

    structlog calls are captured as their event dicts (``capture_logs`` replaces the whole
    processor chain); standard-library records at any level by a handler that reads the raw
    message, arguments and extras before a filter or formatter touches them.
    """
    calls: list[dict[str, Any]] = []

    class Raw(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            fields = {k: v for k, v in vars(record).items() if k not in _RECORD_BOOKKEEPING}
            if record.exc_info:
                fields["exc_info"] = "".join(traceback.format_exception(*record.exc_info))
            calls.append(fields)

    root = logging.getLogger()
    handler, level = Raw(logging.DEBUG), root.level
    # First in line: a configured handler's card filter (common.logging) scrubs the record in
    # place, and a handler after it would see the scrubbed copy, not what the code handed over.
    root.handlers.insert(0, handler)
    root.setLevel(logging.DEBUG)
    try:
        with structlog.testing.capture_logs() as structured:
            yield calls
            calls.extend(dict(call) for call in structured)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


# LogRecord attributes that are about the call site, never the caller's data.
_RECORD_BOOKKEEPING = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)))
_RECORD_BOOKKEEPING = _RECORD_BOOKKEEPING - {"msg", "args", "exc_info", "stack_info"}
CVC = "738"  # distinctive enough to search for


def card_data_in(calls: list[dict[str, Any]], numbers: tuple[str, ...]) -> list[str]:
    """Each field of a log call that holds a card number (in any grouping) or the CVC."""
    leaks = []
    for call in calls:
        for key, value in call.items():
            text = value if isinstance(value, str) else repr(value)
            compact = re.sub(r"[ -]", "", text)
            if any(number in compact for number in numbers):
                leaks.append(f"{call.get('event', call.get('msg'))}: {key} holds a card number")
            holds_cvc = "cvc" in key.lower() or "cvv" in key.lower() or value in (CVC, int(CVC))
            if holds_cvc or re.search(rf"cv[cv]\W{{0,6}}{CVC}", text, re.IGNORECASE):
                leaks.append(f"{call.get('event', call.get('msg'))}: {key} holds the CVC")
    return leaks


async def test_no_log_call_is_handed_a_card_number_or_cvc(
    rest: tuple[Client, FakeInventory, Path],
) -> None:
    # The scrubber in common/logging.py would mask a number on its way out; this catches the
    # attempt itself, before the scrubber runs.
    client, inventory, _ = rest
    item = stocked(inventory, stock=10)
    cases: list[tuple[str, dict[str, Any], int]] = [
        ("4242424242424242", {}, 201),  # approved
        ("4000000000000002", {}, 402),  # declined
        ("4000000000000341", {}, 409),  # authorized, capture refused
        ("4242424242424241", {}, 400),  # fails Luhn
        ("5555555555554444", {"cvc": "7"}, 400),  # CVC too short
        ("5555555555554444", {"exp_year": 2020}, 400),  # expired
    ]

    with every_log_call() as calls:
        for number, change, expected in cases:
            payload = body(item, number)
            payload["payment_method"]["card"].update({"cvc": CVC, **change})
            status, answer = await place(client, payload)
            assert status == expected, answer

    assert calls  # the checkouts were logged at all
    assert card_data_in(calls, tuple(number for number, _, _ in cases)) == []


async def test_the_log_check_itself_sees_a_card_number_handed_to_a_logger() -> None:
    with every_log_call() as calls:
        get_logger("test").info("careless", card="4242 4242 4242 4242", code=CVC)
        logging.getLogger("test").warning("card %s", "4000000000000002")

    leaks = card_data_in(calls, ("4242424242424242", "4000000000000002"))
    assert {
        "careless: card holds a card number",
        "careless: code holds the CVC",
        "card %s: args holds a card number",
    } <= set(leaks)


async def test_no_card_number_reaches_the_database_file(
    rest: tuple[Client, FakeInventory, Path],
) -> None:
    client, inventory, data_dir = rest
    item = stocked(inventory, stock=10)
    for number in SANDBOX:
        await place(client, body(item, number))

    stored = b"".join(path.read_bytes() for path in data_dir.glob("payment.db*"))

    assert stored  # the checkouts were written
    for number in SANDBOX:
        assert number.encode() not in stored
