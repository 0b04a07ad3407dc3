"""Checkout, idempotency, refunds and recovery on SQLite and PostgreSQL, with a fake inventory."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select

from common.db import Database
from common.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    Unavailable,
)
from common.metrics import REGISTRY
from common.money import Money
from common.outbox import Outbox, outbox_table
from payment_svc.domain import (
    Caller,
    CardInput,
    CheckoutReply,
    Order,
    OrderStatus,
    Payment,
    PaymentStatus,
    RequestedItem,
)
from payment_svc.provider import ResilientProvider, SandboxProvider, sandbox_ledger
from payment_svc.saga import FAULT_POINTS, CheckoutSaga, no_faults
from payment_svc.screening import ScreeningPolicy
from payment_svc.service import PaymentPolicy, Payments
from payment_svc.store import PaymentStore
from tests.support.payment_fakes import FakeInventory

APPROVED = "4242424242424242"
DECLINED = "4000000000000002"
NO_FUNDS = "4000000000009995"
PROCESSOR_ERROR = "4000000000000119"
NO_CAPTURE = "4000000000000341"  # authorized, then the capture is refused


def card(number: str = APPROVED) -> CardInput:
    return CardInput(number, 12, 2099, "123", "Ada Lovelace")


def new_user() -> Caller:
    return Caller(f"user-{uuid.uuid4().hex[:8]}")


def product(inventory: FakeInventory, stock: int = 10, price: int = 1999) -> str:
    product_id = f"p-{uuid.uuid4().hex[:8]}"
    inventory.add_product(product_id, stock, price)
    return product_id


def render(order: Order) -> bytes:
    """Stands in for the servicer's response: the order as it was when the checkout answered."""
    return json.dumps({"id": order.id, "status": order.status.value}).encode()


def answered(reply: CheckoutReply) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(reply.body)
    return decoded


async def checkout(
    payments: Payments,
    caller: Caller,
    items: list[RequestedItem],
    number: str = APPROVED,
    key: str | None = None,
) -> Order:
    """Checks out and returns the order as it is now (the answer itself is opaque bytes)."""
    reply = await payments.checkout(
        caller, key or uuid.uuid4().hex, items, payments.accept_card(card(number)), render
    )
    return await payments.get_order(caller, reply.order_id)


def paid(order: Order) -> Payment:
    assert order.payment is not None
    return order.payment


async def captures(database: Database, payment_id: str) -> int:
    async with database.session() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(sandbox_ledger)
            .where(sandbox_ledger.c.key == f"{payment_id}:capture", sandbox_ledger.c.approved == 1)
        )
    return int(count or 0)


async def ledger_of(database: Database, payment_id: str) -> list[tuple[str, bool]]:
    """(operation, approved) of every provider call made for the payment, in key order."""
    async with database.session() as session:
        rows = await session.execute(
            select(sandbox_ledger.c.operation, sandbox_ledger.c.approved)
            .where(sandbox_ledger.c.key.startswith(f"{payment_id}:"))
            .order_by(sandbox_ledger.c.create_time)
        )
        return [(str(operation), bool(approved)) for operation, approved in rows]


async def events_of(database: Database, order_id: str) -> list[str]:
    table = outbox_table("payment")
    async with database.session() as session:
        rows = await session.scalars(
            select(table.c.payload).where(table.c.key == order_id).order_by(table.c.seq)
        )
        return [json.loads(payload)["type"] for payload in rows]


async def last_event_data(database: Database, order_id: str) -> dict[str, Any]:
    table = outbox_table("payment")
    async with database.session() as session:
        payload = await session.scalar(
            select(table.c.payload).where(table.c.key == order_id).order_by(table.c.seq.desc())
        )
    data: dict[str, Any] = json.loads(payload or "{}")["data"]
    return data


async def test_an_approved_card_with_stock_confirms_the_order_at_the_catalog_price(
    payments: Payments, inventory: FakeInventory, payment_db: Database
) -> None:
    item = product(inventory, stock=5, price=1250)

    order = await checkout(payments, new_user(), [RequestedItem(item, 2)])

    assert order.status is OrderStatus.CONFIRMED
    assert order.total == Money(2500, "USD")
    assert paid(order).status is PaymentStatus.CAPTURED
    assert (paid(order).card_brand.value, paid(order).card_last4) == ("visa", "4242")
    assert inventory.status(order.id) == "COMMITTED"
    assert inventory.available[item] == 3
    assert await captures(payment_db, paid(order).id) == 1
    assert await events_of(payment_db, order.id) == [
        "microcommerce.order.placed",
        "microcommerce.payment.authorized",
        "microcommerce.payment.captured",
        "microcommerce.order.confirmed",
    ]
    # What was bought travels with the confirmation (product_svc's "bought together" counts).
    confirmed = await last_event_data(payment_db, order.id)
    assert [(i["product_id"], i["quantity"]) for i in confirmed["items"]] == [(item, 2)]
    assert confirmed["items"][0]["unit_price"] == {"amount": 1250, "currency": "USD"}


@pytest.mark.parametrize("number", [DECLINED, NO_FUNDS])
async def test_a_declined_card_fails_with_payment_declined_and_releases_the_stock(
    payments: Payments, inventory: FakeInventory, store: PaymentStore, number: str
) -> None:
    item = product(inventory, stock=5)
    caller = new_user()

    with pytest.raises(FailedPrecondition) as raised:
        await checkout(payments, caller, [RequestedItem(item, 2)], number)

    assert raised.value.reason == "PAYMENT_DECLINED"
    assert inventory.available[item] == 5
    [order], _ = await payments.list_orders(caller, "", 10, "")
    assert order.status is OrderStatus.FAILED
    assert paid(order).status is PaymentStatus.FAILED
    assert inventory.status(order.id) == "RELEASED"


async def test_a_processor_error_is_retried_then_fails_unavailable_with_nothing_charged(
    payments: Payments, inventory: FakeInventory, payment_db: Database
) -> None:
    item = product(inventory, stock=5)
    caller = new_user()

    with pytest.raises(Unavailable) as raised:
        await checkout(payments, caller, [RequestedItem(item, 1)], PROCESSOR_ERROR)

    assert raised.value.reason == "PAYMENT_PROCESSOR_ERROR"
    [order], _ = await payments.list_orders(caller, "", 10, "")
    assert order.status is OrderStatus.FAILED
    assert inventory.available[item] == 5
    assert await captures(payment_db, paid(order).id) == 0


async def assert_capture_failed_cleanly(
    payments: Payments, inventory: FakeInventory, database: Database, caller: Caller, item: str
) -> None:
    """The end a refused capture must reach: FAILED, voided, stock back, nothing captured."""
    [order], _ = await payments.list_orders(caller, "", 10, "")
    assert (order.status, order.failure_reason) == (OrderStatus.FAILED, "CAPTURE_FAILED")
    assert paid(order).status is PaymentStatus.VOIDED
    assert (inventory.status(order.id), inventory.available[item], inventory.sold(item)) == (
        "RELEASED",
        4,
        0,
    )
    assert await ledger_of(database, paid(order).id) == [
        ("authorize", True),
        ("capture", False),
        ("void", True),
    ]
    assert await events_of(database, order.id) == [
        "microcommerce.order.placed",
        "microcommerce.payment.authorized",
        "microcommerce.payment.voided",
        "microcommerce.order.failed",
    ]
    assert (await last_event_data(database, order.id))["reason"] == "CAPTURE_FAILED"


async def test_a_refused_capture_voids_the_authorization_releases_the_stock_and_fails(
    payments: Payments, inventory: FakeInventory, payment_db: Database
) -> None:
    item = product(inventory, stock=4)
    caller = new_user()

    with pytest.raises(Aborted) as raised:
        await checkout(payments, caller, [RequestedItem(item, 1)], NO_CAPTURE)

    assert raised.value.reason == "CAPTURE_FAILED"
    await assert_capture_failed_cleanly(payments, inventory, payment_db, caller, item)


async def test_not_enough_stock_aborts_with_out_of_stock_and_charges_nothing(
    payments: Payments, inventory: FakeInventory, payment_db: Database
) -> None:
    item = product(inventory, stock=1)
    caller = new_user()

    with pytest.raises(Aborted) as raised:
        await checkout(payments, caller, [RequestedItem(item, 2)])

    assert raised.value.reason == "OUT_OF_STOCK"
    [order], _ = await payments.list_orders(caller, "", 10, "")
    assert order.status is OrderStatus.FAILED
    assert await captures(payment_db, paid(order).id) == 0
    assert inventory.available[item] == 1


async def test_an_invalid_card_is_refused_before_anything_is_reserved(
    payments: Payments, inventory: FakeInventory
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        payments.accept_card(card("4242424242424241"))

    assert raised.value.field == "payment_method.card.number"
    assert inventory.calls == []


async def test_the_same_key_and_body_replays_the_order_without_charging_again(
    payments: Payments, inventory: FakeInventory, payment_db: Database
) -> None:
    item = product(inventory, stock=5)
    caller = new_user()

    first = await checkout(payments, caller, [RequestedItem(item, 1)], key="k-1")
    again = await checkout(payments, caller, [RequestedItem(item, 1)], key="k-1")

    assert again.id == first.id
    assert again.status is OrderStatus.CONFIRMED
    assert inventory.available[item] == 4
    assert await captures(payment_db, paid(first).id) == 1


async def test_a_replay_after_a_cancel_answers_the_first_confirmed_response(
    payments: Payments, inventory: FakeInventory
) -> None:
    item = product(inventory, stock=5)
    caller = new_user()
    card_on_file = payments.accept_card(card())
    first = await payments.checkout(caller, "k-c", [RequestedItem(item, 1)], card_on_file, render)
    await payments.cancel(caller, first.order_id)

    again = await payments.checkout(caller, "k-c", [RequestedItem(item, 1)], card_on_file, render)

    assert again.body == first.body
    assert answered(again)["status"] == OrderStatus.CONFIRMED.value
    assert (await payments.get_order(caller, first.order_id)).status is OrderStatus.CANCELLED


async def test_a_checkout_finished_by_recovery_keeps_the_first_answer_given(
    payments: Payments, inventory: FakeInventory
) -> None:
    item = product(inventory, stock=5)
    caller = new_user()
    card_on_file = payments.accept_card(card())
    inventory.commit_down = True  # the request ends with 503 before the order is confirmed
    with pytest.raises(Unavailable):
        await payments.checkout(caller, "k-r", [RequestedItem(item, 1)], card_on_file, render)
    inventory.commit_down = False
    await payments.recover_once()

    replayed = await payments.checkout(
        caller, "k-r", [RequestedItem(item, 1)], card_on_file, render
    )
    await payments.cancel(caller, replayed.order_id)
    after_cancel = await payments.checkout(
        caller, "k-r", [RequestedItem(item, 1)], card_on_file, render
    )

    assert answered(replayed)["status"] == OrderStatus.CONFIRMED.value
    assert after_cancel.body == replayed.body


async def test_the_same_key_with_another_body_is_refused_as_key_reuse(
    payments: Payments, inventory: FakeInventory
) -> None:
    item = product(inventory, stock=5)
    caller = new_user()
    await checkout(payments, caller, [RequestedItem(item, 1)], key="k-2")

    with pytest.raises(FailedPrecondition) as raised:
        await checkout(payments, caller, [RequestedItem(item, 2)], key="k-2")

    assert raised.value.reason == "IDEMPOTENCY_KEY_REUSED"


async def test_a_key_is_scoped_to_its_user(payments: Payments, inventory: FakeInventory) -> None:
    item = product(inventory, stock=5)

    mine = await checkout(payments, new_user(), [RequestedItem(item, 1)], key="shared")
    theirs = await checkout(payments, new_user(), [RequestedItem(item, 1)], key="shared")

    assert mine.id != theirs.id


async def test_a_replayed_failure_answers_the_same_error(
    payments: Payments, inventory: FakeInventory
) -> None:
    item = product(inventory, stock=5)
    caller = new_user()
    with pytest.raises(FailedPrecondition):
        await checkout(payments, caller, [RequestedItem(item, 1)], DECLINED, key="k-3")

    with pytest.raises(FailedPrecondition) as raised:
        await checkout(payments, caller, [RequestedItem(item, 1)], DECLINED, key="k-3")

    assert raised.value.reason == "PAYMENT_DECLINED"
    assert raised.value.status_name == "FAILED_PRECONDITION"


async def test_ten_concurrent_identical_requests_make_one_order_and_one_charge(
    payments: Payments, inventory: FakeInventory, payment_db: Database
) -> None:
    item = product(inventory, stock=50)
    caller = new_user()
    card_on_file = payments.accept_card(card())

    replies = await asyncio.gather(
        *(
            payments.checkout(caller, "same-key", [RequestedItem(item, 1)], card_on_file, render)
            for _ in range(10)
        )
    )

    assert len({reply.body for reply in replies}) == 1
    assert answered(replies[0])["status"] == OrderStatus.CONFIRMED.value
    assert inventory.available[item] == 49
    order = await payments.get_order(caller, replies[0].order_id)
    assert await captures(payment_db, paid(order).id) == 1


async def test_concurrent_buyers_never_get_more_than_the_stock(
    payments: Payments, inventory: FakeInventory
) -> None:
    item = product(inventory, stock=5)

    results = await asyncio.gather(
        *(checkout(payments, new_user(), [RequestedItem(item, 1)]) for _ in range(12)),
        return_exceptions=True,
    )

    confirmed = [r for r in results if not isinstance(r, BaseException)]
    assert len(confirmed) == 5
    assert all(isinstance(r, Aborted) for r in results if isinstance(r, BaseException))
    assert inventory.sold(item) == 5


async def test_someone_elses_order_and_payment_are_not_found(
    payments: Payments, inventory: FakeInventory
) -> None:
    order = await checkout(payments, new_user(), [RequestedItem(product(inventory), 1)])
    stranger = new_user()

    with pytest.raises(NotFound):
        await payments.get_order(stranger, order.id)
    with pytest.raises(NotFound):
        await payments.get_payment(stranger, paid(order).id)
    assert (await payments.get_order(Caller("admin", is_admin=True), order.id)).id == order.id


async def test_order_history_is_newest_first_and_paginated(
    payments: Payments, inventory: FakeInventory
) -> None:
    caller = new_user()
    item = product(inventory, stock=10)
    placed = [(await checkout(payments, caller, [RequestedItem(item, 1)])).id for _ in range(3)]

    first, token = await payments.list_orders(caller, "", 2, "")
    rest, last_token = await payments.list_orders(caller, "", 2, token)

    assert [o.id for o in first + rest] == placed[::-1]
    assert (bool(token), last_token) == (True, "")


async def test_only_an_admin_lists_another_users_orders(
    payments: Payments, inventory: FakeInventory
) -> None:
    owner = new_user()
    await checkout(payments, owner, [RequestedItem(product(inventory), 1)])

    with pytest.raises(PermissionDenied):
        await payments.list_orders(new_user(), owner.user_id, 10, "")
    found, _ = await payments.list_orders(Caller("admin", is_admin=True), owner.user_id, 10, "")
    assert [o.user_id for o in found] == [owner.user_id]


async def test_partial_refunds_never_exceed_the_captured_amount(
    payments: Payments, inventory: FakeInventory
) -> None:
    admin = Caller("admin", is_admin=True)
    order = await checkout(payments, new_user(), [RequestedItem(product(inventory, price=1000), 1)])

    await payments.refund(admin, order.id, Money(600, "USD"), "damaged box")
    with pytest.raises(OutOfRange):
        await payments.refund(admin, order.id, Money(401, "USD"), "too much")
    last = await payments.refund(admin, order.id, None, "the rest")

    assert last.amount == Money(400, "USD")
    after = await payments.get_order(admin, order.id)
    assert after.status is OrderStatus.REFUNDED
    assert paid(after).status is PaymentStatus.REFUNDED


async def test_concurrent_refunds_are_serialized_within_the_captured_amount(
    payments: Payments, inventory: FakeInventory
) -> None:
    admin = Caller("admin", is_admin=True)
    order = await checkout(payments, new_user(), [RequestedItem(product(inventory, price=1000), 1)])

    results = await asyncio.gather(
        *(payments.refund(admin, order.id, Money(300, "USD"), "r") for _ in range(5)),
        return_exceptions=True,
    )

    made = [r for r in results if not isinstance(r, BaseException)]
    assert len(made) == 3
    assert all(isinstance(r, OutOfRange) for r in results if isinstance(r, BaseException))


async def test_cancelling_refunds_everything_and_restocks(
    payments: Payments, inventory: FakeInventory, payment_db: Database
) -> None:
    caller = new_user()
    item = product(inventory, stock=3, price=700)
    order = await checkout(payments, caller, [RequestedItem(item, 2)])

    cancelled = await payments.cancel(caller, order.id)
    again = await payments.cancel(caller, order.id)

    assert cancelled.status is OrderStatus.CANCELLED
    assert again.status is OrderStatus.CANCELLED
    assert paid(cancelled).status is PaymentStatus.REFUNDED
    assert inventory.available[item] == 3
    assert (await events_of(payment_db, order.id))[-1] == "microcommerce.order.cancelled"
    assert (await last_event_data(payment_db, order.id))["cancelled_by"] == caller.user_id


async def test_an_order_stuck_after_the_capture_is_confirmed_by_recovery_without_a_second_charge(
    payments: Payments, inventory: FakeInventory, payment_db: Database
) -> None:
    item = product(inventory, stock=5)
    caller = new_user()
    inventory.commit_down = True  # captured, but product_svc cannot commit: the saga waits

    with pytest.raises(Unavailable):
        await checkout(payments, caller, [RequestedItem(item, 1)])
    [stuck], _ = await payments.list_orders(caller, "", 10, "")
    assert stuck.status is OrderStatus.PAYMENT_AUTHORIZED
    inventory.commit_down = False
    await payments.recover_once()

    recovered = await payments.get_order(caller, stuck.id)
    assert recovered.status is OrderStatus.CONFIRMED
    assert inventory.sold(item) == 1
    assert await captures(payment_db, paid(stuck).id) == 1


class Crash(BaseException):
    """Stands in for SIGKILL: nothing after the fault point runs, nothing catches it."""


@pytest.mark.parametrize("point", FAULT_POINTS)
@pytest.mark.parametrize("number", [APPROVED, DECLINED])
async def test_a_crash_at_any_step_is_recovered_to_a_clean_end_charged_at_most_once(
    payment_db: Database, inventory: FakeInventory, point: str, number: str
) -> None:
    store = PaymentStore(payment_db, Outbox("payment"))
    provider = ResilientProvider(SandboxProvider(payment_db), backoff_s=0.001)

    def crash_at(reached: str) -> None:
        if reached == point:
            raise Crash(point)

    def use_cases(fault: Callable[[str], None]) -> Payments:
        # Screened, so "screened" is a step boundary too (its decision here: ALLOW).
        saga = CheckoutSaga(
            store,
            inventory,
            provider,
            fault=fault,
            inventory_backoff_s=0.001,
            screening=ScreeningPolicy(),
        )
        return Payments(store, saga, provider, policy=PaymentPolicy(recovery_grace_s=0))

    item = product(inventory, stock=4)
    caller = new_user()
    crashing = use_cases(crash_at)
    with contextlib.suppress(Crash, FailedPrecondition):
        await checkout(crashing, caller, [RequestedItem(item, 1)], number)

    restarted = use_cases(no_faults)
    await restarted.recover_once()

    [order], _ = await restarted.list_orders(caller, "", 10, "")
    assert order.status in (OrderStatus.CONFIRMED, OrderStatus.FAILED)
    charged = await captures(payment_db, paid(order).id)
    if order.status is OrderStatus.CONFIRMED:
        assert (charged, inventory.sold(item), inventory.available[item]) == (1, 1, 3)
    else:
        assert (charged, inventory.sold(item), inventory.available[item]) == (0, 0, 4)
    assert (number == APPROVED) == (order.status is OrderStatus.CONFIRMED)


# Every step a refused capture passes; "captured_remote" is the crash between the refused
# capture and its compensation (void, release, FAILED recorded).
NO_CAPTURE_POINTS = FAULT_POINTS[: FAULT_POINTS.index("captured_remote") + 1]


@pytest.mark.parametrize("point", NO_CAPTURE_POINTS)
async def test_a_crash_around_a_refused_capture_recovers_to_the_same_compensated_end(
    payment_db: Database, inventory: FakeInventory, point: str
) -> None:
    store = PaymentStore(payment_db, Outbox("payment"))
    provider = ResilientProvider(SandboxProvider(payment_db), backoff_s=0.001)
    reached: list[str] = []

    def crash_at(step: str) -> None:
        reached.append(step)
        if step == point:
            raise Crash(point)

    def use_cases(fault: Callable[[str], None]) -> Payments:
        # Screened, so "screened" is a step boundary too (its decision here: ALLOW).
        saga = CheckoutSaga(
            store,
            inventory,
            provider,
            fault=fault,
            inventory_backoff_s=0.001,
            screening=ScreeningPolicy(),
        )
        return Payments(store, saga, provider, policy=PaymentPolicy(recovery_grace_s=0))

    item = product(inventory, stock=4)
    caller = new_user()
    with pytest.raises(Crash):
        await checkout(use_cases(crash_at), caller, [RequestedItem(item, 1)], NO_CAPTURE)
    assert reached[-1] == point

    restarted = use_cases(no_faults)
    await restarted.recover_once()

    await assert_capture_failed_cleanly(restarted, inventory, payment_db, caller, item)


async def test_a_key_past_its_retention_starts_a_new_checkout(
    payment_db: Database, store: PaymentStore, inventory: FakeInventory
) -> None:
    provider = ResilientProvider(SandboxProvider(payment_db), backoff_s=0.001)
    saga = CheckoutSaga(store, inventory, provider)
    now = [datetime(2026, 11, 25, 9, 0, tzinfo=UTC)]
    payments = Payments(
        store,
        saga,
        provider,
        policy=PaymentPolicy(key_ttl=timedelta(hours=24)),
        clock=lambda: now[0],
    )
    item = product(inventory, stock=5)
    caller = new_user()

    first = await checkout(payments, caller, [RequestedItem(item, 1)], key="daily")
    now[0] += timedelta(hours=23)
    within = await checkout(payments, caller, [RequestedItem(item, 1)], key="daily")
    now[0] += timedelta(hours=2)
    after = await checkout(payments, caller, [RequestedItem(item, 1)], key="daily")

    assert within.id == first.id
    assert after.id != first.id


def funnel() -> tuple[float, float, float]:
    """(placed, confirmed, failed as CARD_DECLINED) so far in this process."""

    def sample(name: str, labels: dict[str, str] | None = None) -> float:
        return REGISTRY.get_sample_value(name, labels or {}) or 0.0

    return (
        sample("mc_checkout_placed_total"),
        sample("mc_checkout_outcomes_total", {"outcome": "confirmed", "reason": ""}),
        sample("mc_checkout_outcomes_total", {"outcome": "failed", "reason": "CARD_DECLINED"}),
    )


async def test_the_funnel_counts_each_placed_order_once_and_each_end_once(
    payments: Payments, inventory: FakeInventory
) -> None:
    item = product(inventory, stock=5)
    caller = new_user()
    placed, confirmed, declined = funnel()

    await checkout(payments, caller, [RequestedItem(item, 1)], key="funnel-1")
    await checkout(payments, caller, [RequestedItem(item, 1)], key="funnel-1")  # a replay
    with pytest.raises(FailedPrecondition):
        await checkout(payments, caller, [RequestedItem(item, 1)], DECLINED)
    with pytest.raises(InvalidArgument):  # refused before any order exists
        await checkout(payments, caller, [RequestedItem(item, 1)], "4242424242424241")

    assert funnel() == (placed + 2, confirmed + 1, declined + 1)


async def test_a_successful_checkout_takes_four_transactions_of_the_payment_database(
    db_url: str, payment_db: Database, store: PaymentStore, inventory: FakeInventory
) -> None:
    # The sandbox provider stands in for a remote one: its ledger gets an engine of its own so
    # that only the payment service's own transactions are counted (issue 13: at most four).
    ledger = Database.from_url(db_url)
    provider = ResilientProvider(SandboxProvider(ledger), backoff_s=0.001)
    payments = Payments(store, CheckoutSaga(store, inventory, provider), provider)
    item = product(inventory, stock=3)
    begun: list[object] = []

    def count(connection: object) -> None:
        begun.append(connection)

    event.listen(payment_db.engine.sync_engine, "begin", count)
    try:
        reply = await payments.checkout(
            new_user(), "once", [RequestedItem(item, 1)], payments.accept_card(card()), render
        )
    finally:
        event.remove(payment_db.engine.sync_engine, "begin", count)
        await ledger.dispose()

    assert answered(reply)["status"] == OrderStatus.CONFIRMED.value
    assert len(begun) == 4  # key and order; reserved; authorized; confirmed with the answer
