"""The checkout saga's other exits: product_svc refusing, unreachable or losing the hold.

The happy path, declines, a refused capture and crashes are in test_payment_checkout.py; these
are the compensations found untested by ``make mutants``: which reason a failed order records,
whether its stock goes back, whether a charged but unsold order gets its money back in full,
how often an unreachable inventory is retried before the order gives up, and which
authorization a capture, void or refund names.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import select

from common.db import Database
from common.errors import Aborted, NotFound, Unavailable
from common.money import Money
from common.outbox import outbox_table
from payment_svc.domain import OrderStatus, PaymentStatus, RequestedItem
from payment_svc.ports import (
    InventoryUnavailable,
    ReservationLost,
    ReservationRefused,
    ReservedLine,
)
from payment_svc.provider import ProviderResult, SandboxProvider
from payment_svc.saga import CheckoutSaga
from payment_svc.service import PaymentPolicy, Payments
from payment_svc.store import PaymentStore
from tests.integration.payment.test_payment_checkout import (
    APPROVED,
    NO_CAPTURE,
    PROCESSOR_ERROR,
    checkout,
    events_of,
    ledger_of,
    new_user,
    paid,
    product,
)
from tests.support.payment_fakes import FakeInventory


class FlakyInventory(FakeInventory):
    """A FakeInventory whose reserve fails the first ``unreachable`` calls or refuses."""

    unreachable: int = 0
    refuse: bool = False
    lose_hold: bool = False

    async def reserve(self, order_id: str, items: Sequence[RequestedItem]) -> list[ReservedLine]:
        if self.unreachable:
            self.unreachable -= 1
            self.calls.append(f"reserve:{order_id}")
            raise InventoryUnavailable("no answer")
        if self.refuse:
            self.calls.append(f"reserve:{order_id}")
            raise ReservationRefused("this order reserved other items")
        return await super().reserve(order_id, items)

    async def commit(self, order_id: str) -> None:
        if self.lose_hold:  # the hold expired while the card was charged
            self.calls.append(f"commit:{order_id}")
            self.reservations[order_id] = ("EXPIRED", self.reservations[order_id][1])
            raise ReservationLost("EXPIRED")
        await super().commit(order_id)


async def event_data(database: Database, order_id: str, event_type: str) -> dict[str, Any]:
    table = outbox_table("payment")
    async with database.session() as session:
        rows = await session.scalars(select(table.c.payload).where(table.c.key == order_id))
    [data] = [event["data"] for event in map(json.loads, rows) if event["type"] == event_type]
    return dict(data)


@pytest.fixture
def inventory() -> FakeInventory:
    return FlakyInventory()


def flaky(inventory: FakeInventory) -> FlakyInventory:
    assert isinstance(inventory, FlakyInventory)
    return inventory


async def test_an_unknown_product_fails_the_order_naming_it_and_charges_nothing(
    payments: Payments, inventory: FakeInventory, payment_db: Database
) -> None:
    known = product(inventory, stock=3, price=500)
    caller = new_user()

    with pytest.raises(NotFound) as raised:
        await checkout(payments, caller, [RequestedItem(known, 1), RequestedItem("p-missing", 1)])

    assert raised.value.field == "items"
    [order], _ = await payments.list_orders(caller, "", 10, "")
    assert (order.status, order.failure_reason) == (OrderStatus.FAILED, "PRODUCT_NOT_FOUND")
    # What the catalog says now about the known product shows what was asked for.
    assert [(line.product_id, line.sku, line.unit_price) for line in order.lines] == [
        (known, f"SKU-{known}", Money(500, "USD")),
        ("p-missing", "", None),
    ]
    assert inventory.available[known] == 3
    assert await ledger_of(payment_db, paid(order).id) == []
    assert await events_of(payment_db, order.id) == ["microcommerce.order.failed"]
    failed = await event_data(payment_db, order.id, "microcommerce.order.failed")
    assert failed["reason"] == "PRODUCT_NOT_FOUND"


async def test_a_refused_reservation_is_released_and_fails_with_reservation_refused(
    payments: Payments, inventory: FakeInventory, payment_db: Database
) -> None:
    item = product(inventory, stock=3)
    flaky(inventory).refuse = True
    caller = new_user()

    with pytest.raises(Aborted) as raised:
        await checkout(payments, caller, [RequestedItem(item, 1)])

    assert raised.value.reason == "RESERVATION_REFUSED"
    [order], _ = await payments.list_orders(caller, "", 10, "")
    assert (order.status, order.failure_reason) == (OrderStatus.FAILED, "RESERVATION_REFUSED")
    assert inventory.calls == [f"reserve:{order.id}", f"release:{order.id}", "describe"]
    assert inventory.status(order.id) == "RELEASED"
    assert await ledger_of(payment_db, paid(order).id) == []


async def test_an_unreachable_inventory_is_tried_three_times_then_released_and_fails(
    payments: Payments, inventory: FakeInventory, payment_db: Database
) -> None:
    item = product(inventory, stock=3)
    flaky(inventory).unreachable = 3
    caller = new_user()

    with pytest.raises(Unavailable) as raised:
        await checkout(payments, caller, [RequestedItem(item, 1)])

    assert raised.value.reason is None
    [order], _ = await payments.list_orders(caller, "", 10, "")
    assert (order.status, order.failure_reason) == (OrderStatus.FAILED, "INVENTORY_UNAVAILABLE")
    # A reserve may have happened unseen: the release settles it. No describe: it would wait.
    assert inventory.calls == [f"reserve:{order.id}"] * 3 + [f"release:{order.id}"]
    assert inventory.available[item] == 3
    assert await ledger_of(payment_db, paid(order).id) == []
    assert await events_of(payment_db, order.id) == ["microcommerce.order.failed"]


async def test_an_inventory_that_answers_on_the_last_try_confirms_the_order(
    payments: Payments, inventory: FakeInventory
) -> None:
    item = product(inventory, stock=3)
    flaky(inventory).unreachable = 2
    caller = new_user()

    order = await checkout(payments, caller, [RequestedItem(item, 1)])

    assert order.status is OrderStatus.CONFIRMED
    assert inventory.calls.count(f"reserve:{order.id}") == 3
    assert inventory.available[item] == 2


async def test_a_hold_lost_after_the_capture_refunds_everything_and_fails(
    payments: Payments, inventory: FakeInventory, payment_db: Database
) -> None:
    item = product(inventory, stock=3, price=700)
    flaky(inventory).lose_hold = True
    caller = new_user()

    with pytest.raises(Aborted) as raised:
        await checkout(payments, caller, [RequestedItem(item, 2)])

    assert raised.value.reason == "RESERVATION_LOST"
    [order], _ = await payments.list_orders(caller, "", 10, "")
    payment = paid(order)
    assert (order.status, order.failure_reason) == (OrderStatus.FAILED, "RESERVATION_LOST")
    assert payment.status is PaymentStatus.REFUNDED
    assert await ledger_of(payment_db, payment.id) == [
        ("authorize", True),
        ("capture", True),
        ("refund", True),
    ]
    assert await events_of(payment_db, order.id) == [
        "microcommerce.order.placed",
        "microcommerce.payment.authorized",
        "microcommerce.payment.captured",
        "microcommerce.payment.refunded",
        "microcommerce.order.failed",
    ]
    refunded = await event_data(payment_db, order.id, "microcommerce.payment.refunded")
    assert (refunded["amount"], refunded["total_refunded"], refunded["reason"]) == (
        {"amount": 1400, "currency": "USD"},
        {"amount": 1400, "currency": "USD"},
        "RESERVATION_LOST",
    )
    # The refund is the payment's like any other: what it reports is what went back.
    assert [(r.amount.amount, r.reason) for r in payment.refunds] == [(1400, "RESERVATION_LOST")]
    assert payment.refunded_so_far.amount == 1400
    failed = await event_data(payment_db, order.id, "microcommerce.order.failed")
    assert failed["reason"] == "RESERVATION_LOST"


async def test_a_commit_that_cannot_reach_the_inventory_leaves_the_order_to_recovery(
    payments: Payments, inventory: FakeInventory, payment_db: Database
) -> None:
    item = product(inventory, stock=3)
    inventory.commit_down = True
    caller = new_user()

    with pytest.raises(Unavailable) as raised:
        await checkout(payments, caller, [RequestedItem(item, 1)])

    assert raised.value.retry_after_s == 5
    [order], _ = await payments.list_orders(caller, "", 10, "")
    assert order.status is OrderStatus.PAYMENT_AUTHORIZED
    assert inventory.calls.count(f"commit:{order.id}") == 3
    assert inventory.status(order.id) == "ACTIVE"


async def test_a_release_that_cannot_reach_the_inventory_keeps_the_order_open_for_recovery(
    payments: Payments, inventory: FakeInventory
) -> None:
    item = product(inventory, stock=3)
    flaky(inventory).refuse = True
    inventory.down = True  # the compensation cannot release: the order must not end FAILED
    caller = new_user()

    with pytest.raises(Unavailable) as raised:
        await checkout(payments, caller, [RequestedItem(item, 1)])

    assert raised.value.retry_after_s == 5
    [order], _ = await payments.list_orders(caller, "", 10, "")
    assert order.status is OrderStatus.PENDING
    assert inventory.calls.count(f"release:{order.id}") == 3


class RecordingProvider(SandboxProvider):
    """The sandbox, remembering which authorization each capture, void and refund named.

    The sandbox itself accepts any reference; a real processor refuses a capture, void or
    refund of an authorization it did not issue.
    """

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self.authorized: list[str] = []
        self.named: list[tuple[str, str]] = []

    async def authorize(self, key: str, token: str, amount: Money) -> ProviderResult:
        result = await super().authorize(key, token, amount)
        self.authorized.append(result.reference)
        return result

    async def capture(self, key: str, authorization: str, amount: Money) -> ProviderResult:
        self.named.append(("capture", authorization))
        return await super().capture(key, authorization, amount)

    async def void(self, key: str, authorization: str) -> ProviderResult:
        self.named.append(("void", authorization))
        return await super().void(key, authorization)

    async def refund(self, key: str, authorization: str, amount: Money) -> ProviderResult:
        self.named.append(("refund", authorization))
        return await super().refund(key, authorization, amount)


@pytest.mark.parametrize(
    ("number", "lose_hold", "operations"),
    [
        (APPROVED, False, ["capture"]),
        (NO_CAPTURE, False, ["capture", "void"]),
        (APPROVED, True, ["capture", "refund"]),
    ],
)
async def test_capture_void_and_refund_name_the_authorization_the_provider_issued(
    store: PaymentStore,
    inventory: FakeInventory,
    payment_db: Database,
    number: str,
    lose_hold: bool,
    operations: list[str],
) -> None:
    provider = RecordingProvider(payment_db)
    saga = CheckoutSaga(store, inventory, provider, inventory_backoff_s=0.001)
    payments = Payments(store, saga, provider, policy=PaymentPolicy(recovery_grace_s=0))
    item = product(inventory, stock=3)
    flaky(inventory).lose_hold = lose_hold

    with contextlib.suppress(Aborted):
        await checkout(payments, new_user(), [RequestedItem(item, 1)], number)

    [authorization] = provider.authorized
    assert authorization
    assert provider.named == [(operation, authorization) for operation in operations]


async def test_a_processor_error_announces_a_retryable_payment_failure_and_the_order_failed(
    payments: Payments, inventory: FakeInventory, payment_db: Database
) -> None:
    item = product(inventory, stock=3)
    caller = new_user()

    with pytest.raises(Unavailable):
        await checkout(payments, caller, [RequestedItem(item, 1)], PROCESSOR_ERROR)

    [order], _ = await payments.list_orders(caller, "", 10, "")
    assert await events_of(payment_db, order.id) == [
        "microcommerce.order.placed",
        "microcommerce.payment.failed",
        "microcommerce.order.failed",
    ]
    failed_payment = await event_data(payment_db, order.id, "microcommerce.payment.failed")
    assert (failed_payment["reason"], failed_payment["retryable"]) == (
        "PAYMENT_FAILURE_REASON_PROCESSOR_ERROR",
        True,
    )
    failed = await event_data(payment_db, order.id, "microcommerce.order.failed")
    assert failed["reason"] == "PROCESSOR_ERROR"
