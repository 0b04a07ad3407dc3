"""Fraud screening in the checkout saga, on SQLite and PostgreSQL, with a fake inventory.

Each test scripts a real pattern (card testing, a newcomer's big basket, card cycling, ordinary
shoppers) against the store's sliding-window counts, and checks what the shopper, the stock,
the card and the events see. Addresses are unique per test: PostgreSQL is shared by the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from common.clock import now
from common.db import Database
from common.errors import DomainError, FailedPrecondition, PermissionDenied
from common.outbox import Outbox, outbox_table
from payment_svc.domain import (
    Caller,
    CardInput,
    Order,
    OrderStatus,
    PaymentStatus,
    RequestedItem,
)
from payment_svc.provider import ResilientProvider, SandboxProvider
from payment_svc.saga import FAULT_POINTS, CheckoutSaga, no_faults
from payment_svc.screening import Decision, ScreeningPolicy
from payment_svc.service import PaymentPolicy, Payments
from payment_svc.store import PaymentStore, checkout_attempts
from tests.integration.payment.test_payment_checkout import (
    APPROVED,
    DECLINED,
    NO_FUNDS,
    captures,
    events_of,
    ledger_of,
    new_user,
    paid,
    product,
    render,
)
from tests.integration.payment.test_saga_compensations import RecordingProvider
from tests.support.payment_fakes import FakeInventory

ADMIN = Caller("admin-1", is_admin=True)
HOLD = timedelta(hours=24)  # CheckoutSaga's default review deadline
# Valid card numbers the sandbox approves (any but its special ones), of several networks.
OTHER_CARDS = ("5555555555554444", "4000056655665556", "6011111111111117", "5105105105105100")


def address() -> str:
    """A client address of the documentation range, unique to the test."""
    return f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"


def use_cases(
    payment_db: Database,
    inventory: FakeInventory,
    *,
    fault: Callable[[str], None] = no_faults,
    policy: PaymentPolicy | None = None,
    card_key: bytes = b"fraud-test-card-key-0123456789ab",
    sandbox: SandboxProvider | None = None,
) -> Payments:
    store = PaymentStore(payment_db, Outbox("payment"))
    provider = ResilientProvider(sandbox or SandboxProvider(payment_db), backoff_s=0.001)
    saga = CheckoutSaga(
        store,
        inventory,
        provider,
        fault=fault,
        inventory_backoff_s=0.001,
        screening=ScreeningPolicy(),
    )
    return Payments(
        store,
        saga,
        provider,
        policy=policy or PaymentPolicy(recovery_grace_s=0),
        card_key=card_key,
    )


@pytest.fixture
def screened(payment_db: Database, inventory: FakeInventory) -> Payments:
    # A key of its own: the cards of one test never match another test's on PostgreSQL.
    return use_cases(payment_db, inventory, card_key=uuid.uuid4().bytes * 2)


async def attempt(
    payments: Payments,
    caller: Caller,
    item: str,
    *,
    number: str = APPROVED,
    client: str = "",
    quantity: int = 1,
) -> tuple[Order, DomainError | None]:
    """One checkout; the order as it is now and the error the shopper got, if any."""
    cvc = "1234" if number.startswith(("34", "37")) else "123"
    card = payments.accept_card(CardInput(number, 12, 2099, cvc, "Ada Lovelace"))
    error: DomainError | None = None
    key = uuid.uuid4().hex
    try:
        reply = await payments.checkout(
            caller, key, [RequestedItem(item, quantity)], card, render, client_address=client
        )
        order_id = reply.order_id
    except DomainError as refused:
        error = refused
        listed, _ = await payments.list_orders(caller, "", 1, "")
        order_id = listed[0].id
    return await payments.get_order(ADMIN, order_id), error


async def event_data(database: Database, order_id: str, event_type: str) -> dict[str, Any]:
    table = outbox_table("payment")
    async with database.session() as session:
        payloads = await session.scalars(select(table.c.payload).where(table.c.key == order_id))
        for payload in payloads:
            envelope = json.loads(payload)
            if envelope["type"] == event_type:
                data: dict[str, Any] = envelope["data"]
                return data
    raise AssertionError(f"no {event_type} for {order_id}")


async def test_a_card_testing_burst_from_one_address_is_denied_before_the_card_is_asked(
    screened: Payments, inventory: FakeInventory, payment_db: Database
) -> None:
    item = product(inventory, stock=100, price=150)  # small amounts: testing, not buying
    client = address()
    # Three throwaway accounts each try a stolen card; the issuer declines them.
    for number in (DECLINED, NO_FUNDS, DECLINED):
        declined, error = await attempt(screened, new_user(), item, number=number, client=client)
        assert declined.screening is not None
        assert declined.screening.decision is Decision.ALLOW
        assert error is not None
        assert error.reason == "PAYMENT_DECLINED"

    denied, error = await attempt(screened, new_user(), item, number=APPROVED, client=client)

    assert error is not None
    assert error.reason == "PAYMENT_DECLINED"
    # The same words as any decline: nothing tells the attacker which rule fired.
    assert error.message == "the payment was declined; nothing was charged"
    assert (denied.status, denied.failure_reason) == (OrderStatus.FAILED, "SCREENING_DENIED")
    assert denied.screening is not None
    assert denied.screening.decision is Decision.DENY
    assert "DECLINE_RUN" in denied.screening.reasons
    assert "client address" in denied.screening.findings[0].detail
    assert await ledger_of(payment_db, paid(denied).id) == []  # the card was never asked
    assert paid(denied).status is PaymentStatus.FAILED
    assert inventory.status(denied.id) == "RELEASED"
    assert inventory.available[item] == 100
    failed = await event_data(payment_db, denied.id, "microcommerce.order.failed")
    assert failed["reason"] == "SCREENING_DENIED"
    assert failed["screening"]["decision"] == "SCREENING_DECISION_DENY"


async def test_the_same_card_declined_again_and_again_is_denied_from_any_address(
    screened: Payments, inventory: FakeInventory
) -> None:
    item = product(inventory, stock=100, price=100)
    for _ in range(3):
        await attempt(screened, new_user(), item, number=DECLINED, client=address())

    denied, _ = await attempt(screened, new_user(), item, number=DECLINED, client=address())

    assert denied.screening is not None
    assert denied.screening.decision is Decision.DENY
    assert "this card" in denied.screening.findings[0].detail


async def test_a_new_account_buying_far_above_normal_is_held_then_approved_with_one_capture(
    screened: Payments, inventory: FakeInventory, payment_db: Database
) -> None:
    item = product(inventory, stock=3, price=60_000)
    caller = new_user()
    before = now()

    held, error = await attempt(screened, caller, item, client=address())

    assert error is None
    assert held.status is OrderStatus.ON_HOLD
    assert held.screening is not None
    assert held.screening.decision is Decision.REVIEW
    assert held.screening.reasons == ("NEW_ACCOUNT_HIGH_AMOUNT",)
    assert paid(held).status is PaymentStatus.AUTHORIZED
    assert await captures(payment_db, paid(held).id) == 0
    assert inventory.status(held.id) == "ACTIVE"
    # The stock outlives the 24 h review by half of it, so the recovery loop has time to reject
    # an order nobody reviewed before product_svc's sweeper takes the stock back.
    assert before + HOLD * 1.5 <= inventory.held_until[held.id] <= now() + HOLD * 1.5
    assert (await event_data(payment_db, held.id, "microcommerce.order.held"))["screening"][
        "reasons"
    ][0]["code"] == "NEW_ACCOUNT_HIGH_AMOUNT"

    approved = await screened.approve(ADMIN, held.id)
    again = await screened.approve(ADMIN, held.id)

    assert approved.status is OrderStatus.CONFIRMED
    assert again.status is OrderStatus.CONFIRMED
    review = await event_data(payment_db, held.id, "microcommerce.order.approved")
    assert review["reviewed_by"] == ADMIN.user_id
    assert await captures(payment_db, paid(approved).id) == 1
    assert inventory.status(held.id) == "COMMITTED"
    assert inventory.available[item] == 2
    confirmed = await event_data(payment_db, held.id, "microcommerce.order.confirmed")
    assert confirmed["screening"]["decision"] == "SCREENING_DECISION_REVIEW"
    events = await events_of(payment_db, held.id)
    assert events.index("microcommerce.order.held") < events.index("microcommerce.order.confirmed")


async def test_a_rejected_hold_is_voided_its_stock_returned_and_it_stays_rejected(
    payment_db: Database, inventory: FakeInventory
) -> None:
    provider = RecordingProvider(payment_db)
    screened = use_cases(payment_db, inventory, card_key=uuid.uuid4().bytes * 2, sandbox=provider)
    item = product(inventory, stock=3, price=60_000)
    held, _ = await attempt(screened, new_user(), item, client=address())

    rejected = await screened.reject(ADMIN, held.id)
    again = await screened.reject(ADMIN, held.id)

    assert (rejected.status, rejected.failure_reason) == (OrderStatus.FAILED, "SCREENING_REJECTED")
    assert again == rejected
    assert paid(rejected).status is PaymentStatus.VOIDED
    assert ("void", True) in await ledger_of(payment_db, paid(rejected).id)
    assert await captures(payment_db, paid(rejected).id) == 0
    assert inventory.status(held.id) == "RELEASED"
    assert inventory.available[item] == 3
    # The void names the authorization the provider issued: a real one voids nothing else.
    assert provider.named == [("void", provider.authorized[0])]
    assert (await event_data(payment_db, held.id, "microcommerce.order.rejected"))[
        "reviewed_by"
    ] == ADMIN.user_id
    await event_data(payment_db, held.id, "microcommerce.payment.voided")
    failed = await event_data(payment_db, held.id, "microcommerce.order.failed")
    assert failed["reason"] == "SCREENING_REJECTED"
    with pytest.raises(FailedPrecondition) as refused:
        await screened.approve(ADMIN, held.id)
    assert refused.value.reason == "NOT_ON_HOLD"


async def test_only_administrators_approve_or_reject(
    screened: Payments, inventory: FakeInventory
) -> None:
    item = product(inventory, stock=3, price=60_000)
    caller = new_user()
    held, _ = await attempt(screened, caller, item)

    with pytest.raises(PermissionDenied):
        await screened.approve(caller, held.id)
    with pytest.raises(PermissionDenied):
        await screened.reject(caller, held.id)
    assert (await screened.get_order(caller, held.id)).status is OrderStatus.ON_HOLD


async def test_an_order_that_was_never_held_cannot_be_approved(
    screened: Payments, inventory: FakeInventory
) -> None:
    confirmed, _ = await attempt(screened, new_user(), product(inventory))
    declined, _ = await attempt(screened, new_user(), product(inventory), number=DECLINED)

    for decide, order in itertools.product(
        (screened.approve, screened.reject), (confirmed, declined)
    ):
        with pytest.raises(FailedPrecondition) as refused:
            await decide(ADMIN, order.id)
        assert refused.value.reason == "NOT_ON_HOLD"


async def test_an_order_left_on_hold_past_its_deadline_is_rejected_by_recovery(
    payment_db: Database, inventory: FakeInventory
) -> None:
    payments = use_cases(
        payment_db,
        inventory,
        policy=PaymentPolicy(recovery_grace_s=0, hold_deadline=timedelta(0)),
        card_key=uuid.uuid4().bytes * 2,
    )
    item = product(inventory, stock=2, price=60_000)
    held, _ = await attempt(payments, new_user(), item)
    assert held.status is OrderStatus.ON_HOLD

    await payments.recover_once()

    expired = await payments.get_order(ADMIN, held.id)
    assert (expired.status, expired.failure_reason) == (OrderStatus.FAILED, "HOLD_EXPIRED")
    rejected = await event_data(payment_db, held.id, "microcommerce.order.rejected")
    assert (rejected.get("reviewed_by", ""), rejected["reason"]) == ("", "HOLD_EXPIRED")
    assert paid(expired).status is PaymentStatus.VOIDED
    assert inventory.status(held.id) == "RELEASED"
    assert inventory.available[item] == 2


async def test_an_account_cycling_cards_is_held_at_its_fourth_card(
    screened: Payments, inventory: FakeInventory
) -> None:
    item = product(inventory, stock=50, price=2_500)
    caller = new_user()
    client = address()
    for number in (APPROVED, *OTHER_CARDS[:2]):
        order, _ = await attempt(screened, caller, item, number=number, client=client)
        assert order.status is OrderStatus.CONFIRMED

    held, _ = await attempt(screened, caller, item, number=OTHER_CARDS[2], client=client)

    assert held.status is OrderStatus.ON_HOLD
    assert held.screening is not None
    assert held.screening.reasons == ("MANY_CARDS",)
    assert held.screening.findings[0].detail.startswith("4 distinct cards")


async def test_an_amount_far_above_the_accounts_history_is_held(
    screened: Payments, inventory: FakeInventory
) -> None:
    usual = product(inventory, stock=10, price=3_000)
    pricey = product(inventory, stock=10, price=40_000)
    caller = new_user()
    for _ in range(2):  # a history: one order is none
        usual_order, _ = await attempt(screened, caller, usual)
        assert usual_order.status is OrderStatus.CONFIRMED

    held, _ = await attempt(screened, caller, pricey)

    assert held.status is OrderStatus.ON_HOLD
    assert held.screening is not None
    assert held.screening.reasons == ("AMOUNT_ABOVE_HISTORY",)


async def test_ordinary_shoppers_sharing_an_address_are_allowed(
    screened: Payments, inventory: FakeInventory
) -> None:
    item = product(inventory, stock=100, price=2_000)
    office = address()  # many colleagues behind one NAT
    outcomes = []
    for shopper in range(6):
        caller = new_user()
        # One of them is short of funds once, then pays with another card.
        if shopper == 3:
            await attempt(screened, caller, item, number=NO_FUNDS, client=office)
        for number in (APPROVED, OTHER_CARDS[shopper % 2]):
            order, error = await attempt(screened, caller, item, number=number, client=office)
            assert error is None
            outcomes.append(order)

    assert {o.status for o in outcomes} == {OrderStatus.CONFIRMED}
    assert all(o.screening is not None and o.screening.decision is Decision.ALLOW for o in outcomes)


async def test_held_orders_are_listed_with_their_reasons_and_the_filter_binds_the_token(
    screened: Payments, inventory: FakeInventory
) -> None:
    big = product(inventory, stock=10, price=60_000)
    small = product(inventory, stock=10, price=1_000)
    caller = new_user()
    await attempt(screened, caller, small)
    held = [(await attempt(screened, new_user(), big))[0] for _ in range(3)]

    page, token = await screened.list_orders(ADMIN, "-", 2, "", OrderStatus.ON_HOLD)
    rest, last = await screened.list_orders(ADMIN, "-", 2, token, OrderStatus.ON_HOLD)

    listed = [*page, *rest]
    assert {o.id for o in held} <= {o.id for o in listed}
    assert {o.status for o in listed} == {OrderStatus.ON_HOLD}
    assert all(o.screening is not None and o.screening.reasons for o in listed)
    with pytest.raises(Exception, match="page_token"):
        await screened.list_orders(ADMIN, "-", 2, token, None)
    assert last == "" or isinstance(last, str)


async def test_attempts_record_a_keyed_card_hash_the_address_and_the_outcome_never_the_number(
    screened: Payments, inventory: FakeInventory, payment_db: Database
) -> None:
    client = address()
    order, _ = await attempt(screened, new_user(), product(inventory), client=client)

    async with payment_db.session() as session:
        row = (
            await session.execute(
                select(checkout_attempts).where(checkout_attempts.c.order_id == order.id)
            )
        ).one()

    assert row.client_address == client
    assert row.outcome == "AUTHORIZED"
    assert row.amount == 1999
    assert APPROVED not in json.dumps([str(v) for v in row])
    assert len(row.card_fingerprint) == 64


# A held checkout crashes at each step boundary it passes; recovery ends it ON_HOLD, once.
HELD_POINTS = FAULT_POINTS[: FAULT_POINTS.index("payment_authorized") + 1]


class Crash(BaseException):
    """Stands in for SIGKILL: nothing after the fault point runs, nothing catches it."""


@pytest.mark.parametrize("point", HELD_POINTS)
async def test_a_crash_at_any_step_of_a_held_checkout_recovers_to_the_same_hold(
    payment_db: Database, inventory: FakeInventory, point: str
) -> None:
    key = uuid.uuid4().bytes * 2
    reached: list[str] = []

    def crash_at(step: str) -> None:
        reached.append(step)
        if step == point:
            raise Crash(point)

    item = product(inventory, stock=2, price=60_000)
    caller = new_user()
    with contextlib.suppress(Crash):
        await attempt(use_cases(payment_db, inventory, fault=crash_at, card_key=key), caller, item)
    assert reached[-1] == point

    restarted = use_cases(payment_db, inventory, card_key=key)
    await restarted.recover_once()

    [order], _ = await restarted.list_orders(caller, "", 10, "")
    assert order.status is OrderStatus.ON_HOLD
    assert order.screening is not None
    assert order.screening.reasons == ("NEW_ACCOUNT_HIGH_AMOUNT",)
    assert [op for op, _ in await ledger_of(payment_db, paid(order).id)] == ["authorize"]
    assert inventory.status(order.id) == "ACTIVE"
    confirmed = await restarted.approve(ADMIN, order.id)
    assert confirmed.status is OrderStatus.CONFIRMED
    assert await captures(payment_db, paid(order).id) == 1


async def test_a_reservation_lost_before_the_hold_voids_the_authorization_and_fails(
    payment_db: Database, inventory: FakeInventory
) -> None:
    def expire_the_reservation(point: str) -> None:
        # product_svc's sweeper expired the hold between the screening and the authorization.
        if point == "screened":
            for order_id, (status, lines) in list(inventory.reservations.items()):
                if status == "ACTIVE":
                    inventory.reservations[order_id] = ("EXPIRED", lines)
                    for line in lines:
                        inventory.available[line.product_id] += line.quantity

    provider = RecordingProvider(payment_db)
    payments = use_cases(
        payment_db,
        inventory,
        fault=expire_the_reservation,
        card_key=uuid.uuid4().bytes * 2,
        sandbox=provider,
    )
    item = product(inventory, stock=2, price=60_000)

    lost, error = await attempt(payments, new_user(), item)

    assert error is not None  # the shopper is told nothing was charged
    assert (lost.status, lost.failure_reason) == (OrderStatus.FAILED, "RESERVATION_LOST")
    assert paid(lost).status is PaymentStatus.VOIDED
    assert [op for op, _ in await ledger_of(payment_db, paid(lost).id)] == ["authorize", "void"]
    assert provider.named == [("void", provider.authorized[0])]
    assert inventory.available[item] == 2
    assert await events_of(payment_db, lost.id) == [
        "microcommerce.order.placed",
        "microcommerce.payment.authorized",
        "microcommerce.payment.voided",
        "microcommerce.order.failed",
    ]
    failed = await event_data(payment_db, lost.id, "microcommerce.order.failed")
    assert failed["reason"] == "RESERVATION_LOST"


async def test_erasing_a_users_personal_data_drops_their_card_hash_and_address(
    screened: Payments, inventory: FakeInventory, payment_db: Database
) -> None:
    caller = new_user()
    order, _ = await attempt(screened, caller, product(inventory), client=address())
    store = PaymentStore(payment_db, Outbox("payment"))

    async with store.unit_of_work() as uow:
        await uow.erase_personal_data(caller.user_id)

    async with payment_db.session() as session:
        row = (
            await session.execute(
                select(checkout_attempts).where(checkout_attempts.c.order_id == order.id)
            )
        ).one()
    assert (row.card_fingerprint, row.client_address) == ("", "")
    assert (row.user_id, row.outcome) == (caller.user_id, "AUTHORIZED")


async def test_a_driver_that_screened_late_follows_the_decision_recorded_first(
    payment_db: Database, inventory: FakeInventory
) -> None:
    key = uuid.uuid4().bytes * 2

    def crash_at(point: str) -> Callable[[str], None]:
        def fault(step: str) -> None:
            if step == point:
                raise Crash(point)

        return fault

    item = product(inventory, stock=2, price=2_000)
    caller = new_user()
    with contextlib.suppress(Crash):
        await attempt(
            use_cases(payment_db, inventory, fault=crash_at("stock_reserved"), card_key=key),
            caller,
            item,
        )
    # A second driver (the recovery loop of another replica) read the order before the first
    # recorded its screening...
    [stale], _ = await use_cases(payment_db, inventory, card_key=key).list_orders(
        caller, "", 10, ""
    )
    assert (stale.status, stale.screening) == (OrderStatus.STOCK_RESERVED, None)
    store = PaymentStore(payment_db, Outbox("payment"))
    provider = ResilientProvider(SandboxProvider(payment_db), backoff_s=0.001)
    first = CheckoutSaga(
        store, inventory, provider, fault=crash_at("screened"), screening=ScreeningPolicy()
    )
    with contextlib.suppress(Crash):
        await first.drive(stale.id)
    # ...and would now decide otherwise (here: a policy that denies every amount).
    strict = ScreeningPolicy(new_account_high_amount=1, new_account_score=100)
    late = CheckoutSaga(store, inventory, provider, screening=strict)

    ended = await late.drive(stale.id, order=stale)

    assert ended.status is OrderStatus.CONFIRMED
    assert ended.screening is not None
    assert ended.screening.decision is Decision.ALLOW
    assert [op for op, _ in await ledger_of(payment_db, paid(ended).id)] == [
        "authorize",
        "capture",
    ]
    assert inventory.status(ended.id) == "COMMITTED"


@pytest.mark.parametrize("decision", ["approve", "reject"])
async def test_two_reviewers_deciding_at_once_both_get_the_one_decision_recorded(
    screened: Payments, inventory: FakeInventory, payment_db: Database, decision: str
) -> None:
    item = product(inventory, stock=3, price=60_000)
    held, _ = await attempt(screened, new_user(), item)
    decide = screened.approve if decision == "approve" else screened.reject

    first, second = await asyncio.gather(decide(ADMIN, held.id), decide(ADMIN, held.id))

    assert first == second
    assert first.status is (OrderStatus.CONFIRMED if decision == "approve" else OrderStatus.FAILED)
    operations = [op for op, _ in await ledger_of(payment_db, paid(first).id)]
    assert operations == ["authorize", "capture" if decision == "approve" else "void"]
