"""Orders, payments and refunds: the checkout saga's states and rules (payment issue).

Plain Python only: no gRPC, SQL, Kafka or HTTP here (tests/unit/test_architecture.py).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from enum import StrEnum

from common.errors import (
    Aborted,
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from common.money import Money
from common.reasons import Reason
from common.transitions import Transitions
from payment_svc.screening import AttemptOutcome, Decision, Screening


class OrderStatus(StrEnum):
    """Where an order is; the names match the proto's ``ORDER_STATUS_*`` values."""

    PENDING = "PENDING"
    STOCK_RESERVED = "STOCK_RESERVED"
    PAYMENT_AUTHORIZED = "PAYMENT_AUTHORIZED"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    REFUNDED = "REFUNDED"
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"
    # Authorized but not captured: fraud screening asked for an administrator's review.
    ON_HOLD = "ON_HOLD"

    @property
    def in_checkout(self) -> bool:
        """True while the saga still owns the order (the recovery loop drives these on)."""
        return self in SAGA_STATUSES


SAGA_STATUSES = frozenset(
    {OrderStatus.PENDING, OrderStatus.STOCK_RESERVED, OrderStatus.PAYMENT_AUTHORIZED}
)

# Every legal move; anything else is a bug or a lost race, refused by ``check_transition``.
ORDER_TRANSITIONS = Transitions[OrderStatus](
    "order",
    {
        OrderStatus.PENDING: frozenset({OrderStatus.STOCK_RESERVED, OrderStatus.FAILED}),
        OrderStatus.STOCK_RESERVED: frozenset(
            {OrderStatus.PAYMENT_AUTHORIZED, OrderStatus.ON_HOLD, OrderStatus.FAILED}
        ),
        # Approved: captured and committed as any authorized order; rejected: voided, released.
        OrderStatus.ON_HOLD: frozenset({OrderStatus.PAYMENT_AUTHORIZED, OrderStatus.FAILED}),
        OrderStatus.PAYMENT_AUTHORIZED: frozenset({OrderStatus.CONFIRMED, OrderStatus.FAILED}),
        OrderStatus.CONFIRMED: frozenset(
            {OrderStatus.CANCELLED, OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED}
        ),
        OrderStatus.PARTIALLY_REFUNDED: frozenset(
            {OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED}
        ),
        OrderStatus.CANCELLED: frozenset(),
        OrderStatus.FAILED: frozenset(),
        OrderStatus.REFUNDED: frozenset(),
    },
)


def check_transition(current: OrderStatus, target: OrderStatus) -> None:
    """FailedPrecondition (ILLEGAL_TRANSITION) unless ``current -> target`` is a legal move."""
    ORDER_TRANSITIONS.check(current, target)


class PaymentStatus(StrEnum):
    """Where a payment is with the provider; names match ``PAYMENT_STATUS_*``."""

    PENDING = "PENDING"
    AUTHORIZED = "AUTHORIZED"
    CAPTURED = "CAPTURED"
    FAILED = "FAILED"
    VOIDED = "VOIDED"
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"
    REFUNDED = "REFUNDED"


# Every legal move of a payment; the saga and refunds ask ``check_payment_transition`` first.
PAYMENT_TRANSITIONS = Transitions[PaymentStatus](
    "payment",
    {
        PaymentStatus.PENDING: frozenset(
            {PaymentStatus.PENDING, PaymentStatus.AUTHORIZED, PaymentStatus.FAILED}
        ),
        PaymentStatus.AUTHORIZED: frozenset({PaymentStatus.CAPTURED, PaymentStatus.VOIDED}),
        # REFUNDED straight from CAPTURED also covers an unsold order's full refund.
        PaymentStatus.CAPTURED: frozenset(
            {PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED}
        ),
        PaymentStatus.PARTIALLY_REFUNDED: frozenset(
            {PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED}
        ),
        PaymentStatus.FAILED: frozenset(),
        PaymentStatus.VOIDED: frozenset(),
        PaymentStatus.REFUNDED: frozenset(),
    },
)


def check_payment_transition(current: PaymentStatus, target: PaymentStatus) -> None:
    """FailedPrecondition (ILLEGAL_TRANSITION) unless ``current -> target`` is a legal move."""
    PAYMENT_TRANSITIONS.check(current, target)


class FailureReason(StrEnum):
    """Why the provider did not take a payment; names match ``PAYMENT_FAILURE_REASON_*``."""

    CARD_DECLINED = "CARD_DECLINED"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    PROCESSOR_ERROR = "PROCESSOR_ERROR"


class RefundStatus(StrEnum):
    """A refund is PENDING from when its amount is set aside until the provider answers."""

    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class RefundKind(StrEnum):
    """Why money goes back: an admin's refund, or a cancel (which also restocks)."""

    REFUND = "refund"
    CANCEL = "cancel"


@dataclass(frozen=True)
class Caller:
    """Who is asking: a user id and whether they administer the shop."""

    user_id: str
    is_admin: bool = False


def orders_listed_for(caller: Caller, user_filter: str) -> str | None:
    """Whose orders a listing shows; None means everyone's.

    The caller's own when the filter is empty or their id; an administrator may name another
    user, or ``-`` for everyone. Anyone else naming another user is PERMISSION_DENIED.
    """
    if user_filter in ("", caller.user_id):
        return caller.user_id
    if not caller.is_admin:
        raise PermissionDenied("only administrators may list other users' orders")
    return None if user_filter == "-" else user_filter


# ---- audit trail -------------------------------------------------------------------------


class ChangeKind(StrEnum):
    """What happened to an order, as its audit trail tells it."""

    PLACED = "PLACED"
    STOCK_RESERVED = "STOCK_RESERVED"
    PAYMENT_AUTHORIZED = "PAYMENT_AUTHORIZED"
    PAYMENT_CAPTURED = "PAYMENT_CAPTURED"
    PAYMENT_FAILED = "PAYMENT_FAILED"
    PAYMENT_VOIDED = "PAYMENT_VOIDED"
    PAYMENT_REFUNDED = "PAYMENT_REFUNDED"
    CONFIRMED = "CONFIRMED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    REFUNDED = "REFUNDED"
    HELD = "HELD"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    UNKNOWN = "UNKNOWN"


class ActorKind(StrEnum):
    USER = "USER"
    ADMIN = "ADMIN"
    SYSTEM = "SYSTEM"


def actor_of(acting_user: str, owner: str) -> ActorKind:
    """Who made a change: nobody named is the system, the owner is the user, anyone else an
    administrator (only administrators may act on another user's order)."""
    if not acting_user:
        return ActorKind.SYSTEM
    return ActorKind.USER if acting_user == owner else ActorKind.ADMIN


@dataclass(frozen=True)
class OrderChange:
    """One entry of an order's audit trail, read back from the event recorded with it."""

    id: str
    kind: ChangeKind
    time: datetime
    actor: ActorKind
    actor_id: str = ""
    reason: str = ""
    amount: Money | None = None
    event_type: str = ""


# ---- cards -------------------------------------------------------------------------------


class CardBrand(StrEnum):
    VISA = "visa"
    MASTERCARD = "mastercard"
    AMEX = "amex"
    DISCOVER = "discover"
    UNKNOWN = "unknown"


_CARD_FIELD = "payment_method.card"
_SEPARATORS = re.compile(r"[ -]")


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check every card number carries in its last digit."""
    if not digits.isdigit():
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def detect_brand(digits: str) -> CardBrand:
    """The card network from the number's prefix (IIN ranges) and length."""
    length = len(digits)
    two, three, four = int(digits[:2] or 0), int(digits[:3] or 0), int(digits[:4] or 0)
    six = int(digits[:6] or 0)
    if digits.startswith("4") and length in (13, 16, 19):
        return CardBrand.VISA
    if (51 <= two <= 55 or 2221 <= four <= 2720) and length == 16:
        return CardBrand.MASTERCARD
    if two in (34, 37) and length == 15:
        return CardBrand.AMEX
    if (
        four == 6011 or 644 <= three <= 649 or two == 65 or 622126 <= six <= 622925
    ) and 16 <= length <= 19:
        return CardBrand.DISCOVER
    return CardBrand.UNKNOWN


def cvc_length(brand: CardBrand) -> int:
    return 4 if brand is CardBrand.AMEX else 3


@dataclass(frozen=True)
class CardInput:
    """A card as the shopper typed it. Lives only for the call: never stored or logged."""

    number: str = field(repr=False)
    exp_month: int
    exp_year: int
    cvc: str = field(repr=False)
    holder_name: str


@dataclass(frozen=True)
class ValidCard:
    """A card that passed validation; still holds the number, for the provider's tokenizer."""

    number: str = field(repr=False)
    exp_month: int
    exp_year: int
    cvc: str = field(repr=False)
    holder_name: str
    brand: CardBrand

    @property
    def last4(self) -> str:
        return self.number[-4:]


def validate_card(card: CardInput, *, today: date) -> ValidCard:
    """Luhn, brand, expiry and CVC length; ``InvalidArgument`` naming the field otherwise.

    Messages never repeat the number or the CVC.
    """
    number = _SEPARATORS.sub("", card.number)
    if not number:
        raise InvalidArgument("the card number is required", field=f"{_CARD_FIELD}.number")
    if not number.isdigit() or not 12 <= len(number) <= 19:
        raise InvalidArgument(
            "the card number must be 12 to 19 digits", field=f"{_CARD_FIELD}.number"
        )
    if not luhn_valid(number):
        raise InvalidArgument(
            "the card number is not valid (Luhn check)", field=f"{_CARD_FIELD}.number"
        )
    if not 1 <= card.exp_month <= 12:
        raise InvalidArgument("exp_month must be 1 to 12", field=f"{_CARD_FIELD}.exp_month")
    if not 1000 <= card.exp_year <= 9999:
        raise InvalidArgument("exp_year must have four digits", field=f"{_CARD_FIELD}.exp_year")
    # A card is valid through the last day of its expiry month.
    if (card.exp_year, card.exp_month) < (today.year, today.month):
        raise InvalidArgument("the card has expired", field=f"{_CARD_FIELD}.exp_year")
    brand = detect_brand(number)
    expected = cvc_length(brand)
    if not card.cvc.isdigit() or len(card.cvc) != expected:
        raise InvalidArgument(
            f"the CVC must be {expected} digits for this card", field=f"{_CARD_FIELD}.cvc"
        )
    holder = card.holder_name.strip()
    if not holder or len(holder) > 100:
        raise InvalidArgument(
            "holder_name must be 1 to 100 characters", field=f"{_CARD_FIELD}.holder_name"
        )
    return ValidCard(number, card.exp_month, card.exp_year, card.cvc, holder, brand)


@dataclass(frozen=True)
class CardOnFile:
    """All that is kept of a card: the provider's token and what may be shown."""

    token: str = field(repr=False)
    brand: CardBrand
    last4: str
    exp_month: int
    exp_year: int
    holder_name: str
    # The keyed hash fraud screening counts the card by (screening.card_fingerprint); set by
    # the use case that has the key, empty from the provider.
    fingerprint: str = field(default="", repr=False)


# ---- checkout ------------------------------------------------------------------------------

MAX_ITEMS = 100
MAX_QUANTITY = 10_000


@dataclass(frozen=True)
class RequestedItem:
    product_id: str
    quantity: int


def validate_items(items: list[RequestedItem]) -> list[RequestedItem]:
    """At least one item, each product once, quantities 1..MAX_QUANTITY."""
    if not items:
        raise InvalidArgument("an order needs at least one item", field="items")
    if len(items) > MAX_ITEMS:
        raise InvalidArgument(f"an order holds at most {MAX_ITEMS} items", field="items")
    seen: set[str] = set()
    for index, item in enumerate(items):
        if not item.product_id.strip():
            raise InvalidArgument("product_id is required", field=f"items[{index}].product_id")
        if item.product_id in seen:
            raise InvalidArgument(
                "each product may appear once per order", field=f"items[{index}].product_id"
            )
        seen.add(item.product_id)
        if not 1 <= item.quantity <= MAX_QUANTITY:
            raise InvalidArgument(
                f"quantity must be 1 to {MAX_QUANTITY}", field=f"items[{index}].quantity"
            )
    return items


def checkout_fingerprint(items: list[RequestedItem], card: CardOnFile) -> str:
    """What makes two checkout requests "the same body" for idempotency.

    Built from the items and the card's visible details, never the number or CVC: the
    fingerprint is stored, and a digest of a card number is still card data.
    """
    canonical = json.dumps(
        {
            "items": [[i.product_id, i.quantity] for i in items],
            "card": [card.brand.value, card.last4, card.exp_month, card.exp_year, card.holder_name],
        },
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class OrderLine:
    """An order's product line, frozen at reservation time."""

    product_id: str
    quantity: int
    sku: str = ""
    name: str = ""
    unit_price: Money | None = None
    # Units the catalog had available when the checkout failed for lack of stock, on the lines
    # it could not fill: what the out-of-stock answer tells the buyer. None on every other line.
    available: int | None = None


@dataclass(frozen=True)
class ProductFacts:
    """What the catalog says about a product now: for showing the lines of a failed checkout."""

    product_id: str
    sku: str
    name: str
    unit_price: Money | None
    available: int | None = None


def order_total(lines: list[OrderLine]) -> Money:
    """Sum of quantity x unit price; every line priced, all in one currency."""
    total: Money | None = None
    for line in lines:
        if line.unit_price is None:
            raise FailedPrecondition(f"product {line.product_id} has no price yet")
        subtotal = line.unit_price.times(line.quantity)
        total = subtotal if total is None else total + subtotal
    if total is None:
        raise FailedPrecondition("an order needs at least one line")
    return total


@dataclass(frozen=True)
class Refund:
    id: str
    amount: Money
    reason: str
    status: RefundStatus
    create_time: datetime
    requested_by: str = ""
    kind: RefundKind = RefundKind.REFUND


@dataclass(frozen=True)
class Payment:
    id: str
    order_id: str
    status: PaymentStatus
    amount: Money
    card_brand: CardBrand
    card_last4: str
    create_time: datetime
    failure_reason: FailureReason | None = None
    authorization_id: str | None = None
    refunds: tuple[Refund, ...] = ()

    @property
    def refunded(self) -> Money:
        """Refunds made or under way: both count against the captured amount."""
        total = Money(0, self.amount.currency)
        for refund in self.refunds:
            if refund.status is not RefundStatus.FAILED:
                total = total + refund.amount
        return total

    @property
    def refunded_so_far(self) -> Money:
        """Refunds the provider made: what decides the payment's and the order's status."""
        total = Money(0, self.amount.currency)
        for refund in self.refunds:
            if refund.status is RefundStatus.SUCCEEDED:
                total = total + refund.amount
        return total

    @property
    def pending_cancel(self) -> Refund | None:
        """The cancel whose refund is under way, if one is."""
        return next(
            (
                r
                for r in self.refunds
                if r.kind is RefundKind.CANCEL and r.status is RefundStatus.PENDING
            ),
            None,
        )

    def moved(self, target: PaymentStatus, **changes: object) -> Payment:
        """This payment in ``target`` (a legal move) with ``changes`` applied."""
        check_payment_transition(self.status, target)
        return replace(self, status=target, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Order:
    id: str
    user_id: str
    status: OrderStatus
    lines: tuple[OrderLine, ...]
    total: Money | None
    payment: Payment | None
    create_time: datetime
    update_time: datetime
    failure_reason: str | None = None
    # Recorded before the card is authorized; None until then (and for orders placed before
    # screening existed).
    screening: Screening | None = None

    def visible_to(self, caller: Caller) -> bool:
        """Its owner and administrators see an order; to anyone else it does not exist."""
        return caller.is_admin or self.user_id == caller.user_id

    @property
    def paid_by(self) -> Payment:
        """The order's payment: every order is created with one."""
        if self.payment is None:
            raise FailedPrecondition(f"order {self.id} has no payment")
        return self.payment

    def _moved(
        self, target: OrderStatus, now: datetime, payment: Payment | None = None, **changes: object
    ) -> Order:
        check_transition(self.status, target)
        return replace(
            self,
            status=target,
            update_time=now,
            payment=payment or self.payment,
            **changes,  # type: ignore[arg-type]
        )

    # The checkout saga's steps, each the order after one remote call's outcome.

    def priced(self, lines: list[OrderLine], now: datetime) -> Order:
        """Stock reserved at these prices: the order gets its total, the payment its amount."""
        total = order_total(lines)
        payment = self.paid_by.moved(PaymentStatus.PENDING, amount=total)
        return self._moved(
            OrderStatus.STOCK_RESERVED, now, payment, lines=tuple(lines), total=total
        )

    def screened(self, screening: Screening, now: datetime) -> Order:
        """The screening decided, before any money moves; the status stays STOCK_RESERVED."""
        if self.status is not OrderStatus.STOCK_RESERVED or self.screening is not None:
            raise FailedPrecondition(f"order {self.id} cannot be screened now")
        return replace(self, screening=screening, update_time=now)

    def denied(self, now: datetime) -> Order:
        """Screening refused the checkout: nothing was asked of the card, the order fails."""
        payment = self.paid_by.moved(PaymentStatus.FAILED)
        return self._moved(OrderStatus.FAILED, now, payment, failure_reason=SCREENING_DENIED)

    def authorized(self, authorization_id: str, now: datetime) -> Order:
        """The card holds the amount; a screening that asked for review puts the order on hold."""
        payment = self.paid_by.moved(PaymentStatus.AUTHORIZED, authorization_id=authorization_id)
        held = self.screening is not None and self.screening.decision is Decision.REVIEW
        return self._moved(
            OrderStatus.ON_HOLD if held else OrderStatus.PAYMENT_AUTHORIZED, now, payment
        )

    def approved(self, now: datetime) -> Order:
        """An administrator let a held order through: it is captured and committed next."""
        return self._moved(OrderStatus.PAYMENT_AUTHORIZED, now)

    def rejected(self, reason: str, now: datetime) -> Order:
        """A held order refused (by an administrator, or its hold ran out): voided, released."""
        payment = self.paid_by.moved(PaymentStatus.VOIDED)
        return self._moved(OrderStatus.FAILED, now, payment, failure_reason=reason)

    def declined(self, failure: FailureReason, now: datetime) -> Order:
        """The card was refused: the order fails for the provider's reason."""
        payment = self.paid_by.moved(PaymentStatus.FAILED, failure_reason=failure)
        return self._moved(OrderStatus.FAILED, now, payment, failure_reason=failure.value)

    def captured(self) -> Order:
        """The money was taken; the order stays PAYMENT_AUTHORIZED until stock is committed."""
        return replace(self, payment=self.paid_by.moved(PaymentStatus.CAPTURED))

    def capture_refused(self, now: datetime) -> Order:
        """The capture failed: the authorization is voided and the order fails."""
        payment = self.paid_by.moved(PaymentStatus.VOIDED)
        return self._moved(OrderStatus.FAILED, now, payment, failure_reason=CAPTURE_FAILED)

    def unsold(self, refund: Refund, now: datetime) -> Order:
        """The reservation was lost after the capture: ``refund`` gives the money back in full
        and is kept on the payment like any other refund, so what the payment reports as
        refunded is what went back to the card; the order fails."""
        paid = self.paid_by
        payment = replace(paid.moved(PaymentStatus.REFUNDED), refunds=(*paid.refunds, refund))
        return self._moved(OrderStatus.FAILED, now, payment, failure_reason=RESERVATION_LOST)

    def confirmed(self, now: datetime) -> Order:
        return self._moved(OrderStatus.CONFIRMED, now)

    def failed(self, reason: str, now: datetime, described: Sequence[ProductFacts] = ()) -> Order:
        """The checkout failed before any money moved. ``described``: what the catalog said
        about the products meanwhile, so the failed order still shows what was asked for; when
        it failed for lack of stock, the lines the catalog could not fill keep what it had."""
        by_product = {facts.product_id: facts for facts in described}
        lines = tuple(
            _described_line(line, by_product.get(line.product_id), reason == OUT_OF_STOCK)
            for line in self.lines
        )
        return self._moved(OrderStatus.FAILED, now, failure_reason=reason, lines=lines)

    # After the sale.

    def refund_settled(self, refund_id: str, succeeded: bool, now: datetime) -> Order:
        """The order once the provider answered a refund set aside; a settled one stays as is.

        A refund that went through moves the payment and the order to (partially) refunded,
        or the order to CANCELLED when it was a cancel.
        """
        payment = self.paid_by
        refund = next(r for r in payment.refunds if r.id == refund_id)
        if refund.status is not RefundStatus.PENDING:
            return self
        settled = replace(
            refund, status=RefundStatus.SUCCEEDED if succeeded else RefundStatus.FAILED
        )
        refunds = tuple(settled if r.id == refund_id else r for r in payment.refunds)
        payment = replace(payment, refunds=refunds)
        if not succeeded:
            return replace(self, payment=payment)
        order_status, payment_status = status_after_refunds(payment.amount, payment.refunded_so_far)
        if refund.kind is RefundKind.CANCEL:
            order_status = OrderStatus.CANCELLED
        return self._moved(order_status, now, payment.moved(payment_status))


def _described_line(line: OrderLine, facts: ProductFacts | None, short: bool) -> OrderLine:
    if facts is None:
        return line
    if not line.sku:
        line = replace(line, sku=facts.sku, name=facts.name, unit_price=facts.unit_price)
    if short and facts.available is not None and facts.available < line.quantity:
        line = replace(line, available=facts.available)
    return line


def new_order(
    order_id: str,
    payment_id: str,
    user_id: str,
    items: list[RequestedItem],
    card: CardOnFile,
    now: datetime,
) -> Order:
    """A PENDING order for the items, with its PENDING payment by the card; not priced yet."""
    payment = Payment(
        id=payment_id,
        order_id=order_id,
        status=PaymentStatus.PENDING,
        amount=Money(0, ""),
        card_brand=card.brand,
        card_last4=card.last4,
        create_time=now,
    )
    lines = tuple(OrderLine(item.product_id, item.quantity) for item in items)
    return Order(order_id, user_id, OrderStatus.PENDING, lines, None, payment, now, now)


def start_refund(
    order: Order,
    requested: Money | None,
    *,
    reason: str,
    refund_id: str,
    requested_by: str,
    now: datetime,
) -> Refund:
    """A PENDING refund of ``requested`` (the rest when None), set aside against the capture."""
    if order.status not in (OrderStatus.CONFIRMED, OrderStatus.PARTIALLY_REFUNDED):
        raise FailedPrecondition(
            f"an order that is {order.status.value} cannot be refunded",
            reason=Reason.NOT_REFUNDABLE,
        )
    amount = refund_amount(order.paid_by, requested)
    return Refund(refund_id, amount, reason, RefundStatus.PENDING, now, requested_by)


def start_cancel(
    order: Order, *, refund_id: str, requested_by: str, now: datetime
) -> Refund | None:
    """The refund a cancel waits for: the one under way, or a new one of everything left.

    None when the order is cancelled already: a cancel is answered with the order as it is.
    """
    if order.status is OrderStatus.CANCELLED:
        return None
    under_way = order.paid_by.pending_cancel
    if under_way is not None:
        return under_way
    check_cancellable(order)
    amount = refund_amount(order.paid_by, None)
    return Refund(
        refund_id,
        amount,
        "order cancelled",
        RefundStatus.PENDING,
        now,
        requested_by,
        RefundKind.CANCEL,
    )


@dataclass(frozen=True)
class IdempotencyKey:
    """A checkout's key: which order it started and, once answered, the first answer."""

    user_id: str
    key: str
    fingerprint: str
    order_id: str
    create_time: datetime
    expire_time: datetime
    reply: CheckoutReply | None = None

    def same_body(self, fingerprint: str) -> None:
        """FailedPrecondition (IDEMPOTENCY_KEY_REUSED) unless the request is the first one's."""
        if fingerprint != self.fingerprint:
            raise IdempotencyKeyReused("this Idempotency-Key was used with a different request")


def refund_amount(payment: Payment, requested: Money | None) -> Money:
    """The amount a new refund may take: the rest when none is asked, never above it.

    Refunds of a payment never add up to more than what was captured.
    """
    if payment.status not in (PaymentStatus.CAPTURED, PaymentStatus.PARTIALLY_REFUNDED):
        raise FailedPrecondition(
            f"a payment that is {payment.status.value} cannot be refunded",
            reason=Reason.NOT_REFUNDABLE,
        )
    remaining = payment.amount - payment.refunded
    if requested is None:
        if remaining.amount <= 0:
            raise OutOfRange("everything captured has already been refunded", field="amount")
        return remaining
    if requested.currency != payment.amount.currency:
        raise InvalidArgument(
            f"the refund must be in {payment.amount.currency}", field="amount.currency"
        )
    if requested.amount <= 0:
        raise InvalidArgument("the refund amount must be positive", field="amount.amount")
    if requested.amount > remaining.amount:
        raise OutOfRange(
            f"only {remaining.amount} {remaining.currency} is left to refund",
            field="amount.amount",
        )
    return requested


def status_after_refunds(captured: Money, refunded: Money) -> tuple[OrderStatus, PaymentStatus]:
    """An order's and its payment's status once ``refunded`` of ``captured`` went back."""
    if refunded.amount >= captured.amount:
        return OrderStatus.REFUNDED, PaymentStatus.REFUNDED
    return OrderStatus.PARTIALLY_REFUNDED, PaymentStatus.PARTIALLY_REFUNDED


def check_cancellable(order: Order) -> None:
    """Only a confirmed order can be cancelled (a cancelled one is answered as it is)."""
    if order.status in SAGA_STATUSES:
        raise FailedPrecondition(
            "the order's checkout is still in progress", reason=Reason.CHECKOUT_IN_PROGRESS
        )
    if order.status is not OrderStatus.CONFIRMED:
        raise FailedPrecondition(
            f"an order that is {order.status.value} cannot be cancelled",
            reason=Reason.NOT_CANCELLABLE,
        )


# Why a checkout failed, as stored on the order (``failure_reason``) and sent in OrderFailed.
OUT_OF_STOCK = "OUT_OF_STOCK"
PRODUCT_NOT_FOUND = "PRODUCT_NOT_FOUND"
RESERVATION_REFUSED = "RESERVATION_REFUSED"
INVENTORY_UNAVAILABLE = "INVENTORY_UNAVAILABLE"
CAPTURE_FAILED = "CAPTURE_FAILED"
RESERVATION_LOST = "RESERVATION_LOST"
SCREENING_DENIED = "SCREENING_DENIED"  # fraud screening said DENY
SCREENING_REJECTED = "SCREENING_REJECTED"  # an administrator rejected a held order
HOLD_EXPIRED = "HOLD_EXPIRED"  # nobody decided on a held order before its deadline
# Failure reasons a customer sees as a plain decline: naming them would teach the rules.
SCREENING_FAILURES = frozenset({SCREENING_DENIED, SCREENING_REJECTED, HOLD_EXPIRED})


class PaymentDeclined(FailedPrecondition):
    """The card was declined or short of funds; nothing was charged (HTTP 402)."""

    reason = Reason.PAYMENT_DECLINED


class NotOnHold(FailedPrecondition):
    """Approve or reject of an order that fraud screening did not hold (or no longer holds)."""

    reason = Reason.NOT_ON_HOLD


class IdempotencyKeyReused(FailedPrecondition):
    """An Idempotency-Key came back with a different request body (HTTP 422)."""

    reason = Reason.IDEMPOTENCY_KEY_REUSED


def checkout_error(order: Order) -> DomainError:
    """The error a FAILED checkout answers, derived from the order so every replay matches."""
    reason = order.failure_reason or ""
    if reason == OUT_OF_STOCK:
        return _out_of_stock(order)
    if reason == PRODUCT_NOT_FOUND:
        return NotFound("a product of this order does not exist", field="items")
    if reason in SCREENING_FAILURES:
        # The same words whichever rule fired, and no rule named: nothing to learn from.
        return PaymentDeclined("the payment was declined; nothing was charged")
    if reason in (FailureReason.CARD_DECLINED.value, FailureReason.INSUFFICIENT_FUNDS.value):
        detail = "declined" if reason == FailureReason.CARD_DECLINED.value else "short of funds"
        return PaymentDeclined(f"the card was {detail}; nothing was charged")
    if reason == FailureReason.PROCESSOR_ERROR.value:
        return Unavailable(
            "the payment processor failed; nothing was charged, try again with a new key",
            reason=Reason.PAYMENT_PROCESSOR_ERROR,
        )
    if reason == INVENTORY_UNAVAILABLE:
        return Unavailable("the inventory could not be reached; nothing was charged")
    return Aborted(
        f"checkout failed ({reason or 'unknown'}); nothing was charged", reason=Reason.named(reason)
    )


def _out_of_stock(order: Order) -> DomainError:
    """Out of stock, naming each product the catalog could not fill and what it had.

    A line's index is the request's (lines keep the order of ``items``), so each shortage is
    also a field violation on that item's quantity. When no line says what was available (the
    catalog could not be read, or its stock came back meanwhile) the answer stays general.
    """
    short = [(index, line) for index, line in enumerate(order.lines) if line.available is not None]
    violations = tuple(
        FieldViolation(f"items[{index}].quantity", _shortage(line, named=True))
        for index, line in short
    )
    # The message is kept with the idempotency key (at most 1000 characters): it names the
    # first few products by id; the violations name every one with its sku and name.
    named = "; ".join(_shortage(line, named=False) for _, line in short[:_NAMED_IN_MESSAGE])
    if len(short) > _NAMED_IN_MESSAGE:
        named += f"; and {len(short) - _NAMED_IN_MESSAGE} more"
    return Aborted(
        f"not enough stock for this order: {named}; nothing was charged"
        if named
        else "not enough stock for this order; nothing was charged",
        reason=Reason.OUT_OF_STOCK,
        violations=violations,
    )


_NAMED_IN_MESSAGE = 3


def _shortage(line: OrderLine, *, named: bool) -> str:
    known = ", ".join(part for part in (line.sku, f'"{line.name}"' if line.name else "") if part)
    product = f"product {line.product_id}"
    if named and known:
        product += f" ({known})"
    units = "unit" if line.available == 1 else "units"
    only = "only " if line.available else ""
    return f"{product} has {only}{line.available} {units} available, {line.quantity} requested"


# ---- the first answer of a checkout, for replays ------------------------------------------------

_ERRORS_BY_STATUS: dict[str, type[DomainError]] = {
    kind.status_name: kind
    for kind in (
        InvalidArgument,
        FailedPrecondition,
        OutOfRange,
        NotFound,
        AlreadyExists,
        Aborted,
        Unauthenticated,
        PermissionDenied,
        ResourceExhausted,
        Unavailable,
    )
}


@dataclass(frozen=True)
class RecordedError:
    """A domain error as it was answered: its status, message and details, kept to repeat."""

    status: str
    message: str
    reason: str | None = None
    field: str | None = None
    retry_after_s: float | None = None
    # Every offending field when there were several (an out-of-stock answer's short items).
    violations: tuple[FieldViolation, ...] = ()

    @classmethod
    def of(cls, error: DomainError) -> RecordedError:
        return cls(
            error.status_name,
            error.message,
            error.reason,
            error.field,
            error.retry_after_s,
            error.violations,
        )

    def rebuild(self) -> DomainError:
        """The error again, carrying the same status, message, reason, fields and retry time."""
        kind = _ERRORS_BY_STATUS.get(self.status, DomainError)
        error = kind(
            self.message,
            field=self.field,
            reason=Reason.named(self.reason or ""),
            retry_after_s=self.retry_after_s,
            violations=self.violations,
        )
        error.status_name = self.status
        return error


@dataclass(frozen=True)
class CheckoutReply:
    """The first answer to a checkout, kept with its idempotency key and replayed as it was.

    A replay within the key's retention answers exactly this, even if the order changed
    since (cancelled, refunded): payment APIs promise the stored first response. ``body`` is
    the servicer's serialized success response, opaque to the domain; a failed checkout keeps
    its ``error`` instead.
    """

    order_id: str
    body: bytes = b""
    error: RecordedError | None = None

    def answer(self) -> CheckoutReply:
        """This reply when it is a success; raises the recorded error when it is a failure."""
        if self.error is not None:
            raise self.error.rebuild()
        return self


def first_reply(order: Order, render: Callable[[Order], bytes]) -> CheckoutReply:
    """The answer a checkout gives once its saga is over: the order, or why it failed."""
    if order.status.in_checkout:
        raise FailedPrecondition(
            "the order's checkout is still in progress", reason=Reason.CHECKOUT_IN_PROGRESS
        )
    if order.status is OrderStatus.FAILED:
        return CheckoutReply(order.id, error=RecordedError.of(checkout_error(order)))
    return CheckoutReply(order.id, body=render(order))


def attempt_outcome(order: Order) -> AttemptOutcome:
    """How the order's checkout attempt counts for screening, from where the order is."""
    if order.status is OrderStatus.FAILED:
        reason = order.failure_reason or ""
        if reason in (FailureReason.CARD_DECLINED.value, FailureReason.INSUFFICIENT_FUNDS.value):
            return AttemptOutcome.DECLINED
        if reason in SCREENING_FAILURES:
            return AttemptOutcome.DENIED
        return AttemptOutcome.FAILED
    if order.status in (OrderStatus.PENDING, OrderStatus.STOCK_RESERVED):
        return AttemptOutcome.PENDING
    return AttemptOutcome.AUTHORIZED
