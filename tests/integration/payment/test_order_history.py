"""The order audit trail on SQLite and PostgreSQL: complete, ordered, and the same after crashes."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable

import jsonschema_rs
import pytest
from sqlalchemy import select

from common.db import Database
from common.errors import FailedPrecondition, InvalidArgument, NotFound
from common.money import Money
from common.outbox import Outbox, outbox_table
from gateway.asyncapi import build_asyncapi
from payment_svc.domain import (
    ActorKind,
    Caller,
    CardInput,
    ChangeKind,
    Order,
    OrderChange,
    RequestedItem,
)
from payment_svc.provider import ResilientProvider, SandboxProvider
from payment_svc.saga import FAULT_POINTS, CheckoutSaga, no_faults
from payment_svc.service import PaymentPolicy, Payments
from payment_svc.store import PaymentStore, placement_id
from tests.support.payment_fakes import FakeInventory

APPROVED = "4242424242424242"
DECLINED = "4000000000000002"

CONFIRMED_TRAIL = [
    ChangeKind.PLACED,
    ChangeKind.STOCK_RESERVED,
    ChangeKind.PAYMENT_AUTHORIZED,
    ChangeKind.PAYMENT_CAPTURED,
    ChangeKind.CONFIRMED,
]
DECLINED_TRAIL = [
    ChangeKind.PLACED,
    ChangeKind.STOCK_RESERVED,
    ChangeKind.PAYMENT_FAILED,
    ChangeKind.FAILED,
]


def new_user() -> Caller:
    return Caller(f"user-{uuid.uuid4().hex[:8]}")


def product(inventory: FakeInventory, stock: int = 10, price: int = 1000) -> str:
    product_id = f"p-{uuid.uuid4().hex[:8]}"
    inventory.add_product(product_id, stock, price)
    return product_id


def render(order: Order) -> bytes:
    return json.dumps({"id": order.id}).encode()


async def checkout(payments: Payments, caller: Caller, item: str, number: str = APPROVED) -> str:
    """Checks out one unit of ``item``; the order's id, whatever the outcome."""
    card = payments.accept_card(CardInput(number, 12, 2099, "123", "Ada Lovelace"))
    try:
        reply = await payments.checkout(
            caller, uuid.uuid4().hex, [RequestedItem(item, 1)], card, render
        )
    except FailedPrecondition:
        [order], _ = await payments.list_orders(caller, "", 1, "")
        return order.id
    return reply.order_id


async def whole_trail(payments: Payments, caller: Caller, order_id: str) -> list[OrderChange]:
    changes, token = await payments.order_history(caller, order_id, 100, "")
    assert token == ""
    return changes


async def outbox_ids(database: Database, order_id: str) -> list[str]:
    table = outbox_table("payment")
    async with database.session() as session:
        rows = await session.scalars(
            select(table.c.event_id).where(table.c.key == order_id).order_by(table.c.seq)
        )
        return list(rows)


async def test_a_confirmed_order_tells_each_step_of_its_checkout_in_order(
    payments: Payments, inventory: FakeInventory, payment_db: Database
) -> None:
    caller = new_user()
    order_id = await checkout(payments, caller, product(inventory, price=1250))

    trail = await whole_trail(payments, caller, order_id)

    assert [change.kind for change in trail] == CONFIRMED_TRAIL
    assert [change.actor for change in trail] == [ActorKind.USER] + [ActorKind.SYSTEM] * 4
    assert trail[0].actor_id == caller.user_id
    assert trail[0].id == placement_id(order_id)
    # Every other entry is an event the outbox published, the same one, in the same order.
    assert [change.id for change in trail[1:]] == await outbox_ids(payment_db, order_id)
    assert trail[3].amount == Money(1250, "USD")
    times = [change.time for change in trail]
    assert times == sorted(times)


async def test_every_event_a_checkout_and_refund_publish_matches_the_asyncapi_document(
    payments: Payments, inventory: FakeInventory, payment_db: Database
) -> None:
    caller = new_user()
    order_id = await checkout(payments, caller, product(inventory))
    await payments.refund(Caller("admin", is_admin=True), order_id, None, "lost in transit")
    declined_id = await checkout(payments, caller, product(inventory), DECLINED)
    document = build_asyncapi(title="events", version="test")
    table = outbox_table("payment")
    async with payment_db.session() as session:
        payloads = await session.scalars(
            select(table.c.payload).where(table.c.key.in_([order_id, declined_id]))
        )
        published = [json.loads(payload) for payload in payloads]

    for envelope in published:
        message = document["components"]["messages"][envelope["type"]]
        schema = {**message["payload"], "components": document["components"]}
        errors = [str(e) for e in jsonschema_rs.validator_for(schema).iter_errors(envelope)]
        assert errors == [], envelope["type"]
    assert len({envelope["type"] for envelope in published}) >= 8


async def test_a_declined_order_tells_why_it_failed(
    payments: Payments, inventory: FakeInventory
) -> None:
    caller = new_user()
    order_id = await checkout(payments, caller, product(inventory), DECLINED)

    trail = await whole_trail(payments, caller, order_id)

    assert [change.kind for change in trail] == DECLINED_TRAIL
    assert [change.reason for change in trail[-2:]] == ["CARD_DECLINED", "CARD_DECLINED"]
    assert trail[-1].event_type == "microcommerce.order.failed"


async def test_a_refund_names_the_admin_and_reason_and_a_cancel_names_the_owner(
    payments: Payments, inventory: FakeInventory
) -> None:
    admin = Caller(f"admin-{uuid.uuid4().hex[:8]}", is_admin=True)
    refunded_by_admin, cancelled_by_owner = new_user(), new_user()
    refunded = await checkout(payments, refunded_by_admin, product(inventory))
    cancelled = await checkout(payments, cancelled_by_owner, product(inventory))

    await payments.refund(admin, refunded, Money(300, "USD"), "damaged box")
    await payments.cancel(cancelled_by_owner, cancelled)

    refund_trail = (await whole_trail(payments, refunded_by_admin, refunded))[-2:]
    assert [(c.kind, c.actor, c.actor_id, c.reason, c.amount) for c in refund_trail] == [
        (kind, ActorKind.ADMIN, admin.user_id, "damaged box", Money(300, "USD"))
        for kind in (ChangeKind.PAYMENT_REFUNDED, ChangeKind.REFUNDED)
    ]
    cancel_trail = (await whole_trail(payments, admin, cancelled))[-1]
    assert (cancel_trail.kind, cancel_trail.actor, cancel_trail.actor_id) == (
        ChangeKind.CANCELLED,
        ActorKind.USER,
        cancelled_by_owner.user_id,
    )
    assert cancel_trail.amount == Money(1000, "USD")


async def test_the_trail_is_paged_oldest_first_with_a_token_bound_to_its_order(
    payments: Payments, inventory: FakeInventory
) -> None:
    caller = new_user()
    order_id = await checkout(payments, caller, product(inventory))
    other_id = await checkout(payments, caller, product(inventory))

    paged: list[OrderChange] = []
    token = ""
    while True:
        page, token = await payments.order_history(caller, order_id, 2, token)
        assert len(page) <= 2
        paged.extend(page)
        if not token:
            break
        with pytest.raises(InvalidArgument):
            await payments.order_history(caller, other_id, 2, token)

    assert paged == await whole_trail(payments, caller, order_id)


async def test_someone_elses_trail_is_not_found_but_an_admin_reads_any(
    payments: Payments, inventory: FakeInventory
) -> None:
    owner = new_user()
    order_id = await checkout(payments, owner, product(inventory))

    with pytest.raises(NotFound):
        await payments.order_history(new_user(), order_id, None, "")
    with pytest.raises(NotFound):
        await payments.order_history(owner, "no-such-order", None, "")
    admin = Caller("admin", is_admin=True)
    assert await payments.order_history(admin, order_id, None, "") == (
        await whole_trail(payments, owner, order_id),
        "",
    )


class Crash(BaseException):
    """Stands in for SIGKILL: nothing after the fault point runs, nothing catches it."""


@pytest.mark.parametrize("point", FAULT_POINTS)
@pytest.mark.parametrize("number", [APPROVED, DECLINED])
async def test_a_crash_at_any_step_leaves_a_trail_without_gap_or_duplicate_after_recovery(
    payment_db: Database, inventory: FakeInventory, point: str, number: str
) -> None:
    store = PaymentStore(payment_db, Outbox("payment"))
    provider = ResilientProvider(SandboxProvider(payment_db), backoff_s=0.001)

    def crash_at(reached: str) -> None:
        if reached == point:
            raise Crash(point)

    def use_cases(fault: Callable[[str], None]) -> Payments:
        saga = CheckoutSaga(store, inventory, provider, fault=fault, inventory_backoff_s=0.001)
        return Payments(store, saga, provider, policy=PaymentPolicy(recovery_grace_s=0))

    caller = new_user()
    item = product(inventory)
    with contextlib.suppress(Crash):
        await checkout(use_cases(crash_at), caller, item, number)
    restarted = use_cases(no_faults)
    await restarted.recover_once()
    await restarted.recover_once()  # a second pass finds nothing more to record

    [order], _ = await restarted.list_orders(caller, "", 1, "")
    trail = await whole_trail(restarted, caller, order.id)

    assert [change.kind for change in trail] == (
        CONFIRMED_TRAIL if number == APPROVED else DECLINED_TRAIL
    )
    assert len({change.id for change in trail}) == len(trail)
    assert [change.id for change in trail[1:]] == await outbox_ids(payment_db, order.id)
