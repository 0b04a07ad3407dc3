"""The scale-out test's shoppers: a mixed REST load through both gateways, and its audit.

Each shopper behaves as a careful client behind a client-side balancer: it sends each request
to the other gateway than its last one, and after an answer that says nothing final (no
connection, a 5xx, a 429) it repeats the request at the other gateway, a checkout with the
same ``Idempotency-Key``. Every request and its answer are recorded, so the report can say
what clients saw; the audit then checks what the system kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from sqlalchemy import select

from common.db import Database
from payment_svc.provider import sandbox_ledger
from tests.support.checkout_stack import APPROVED, DECLINED, checkout_body
from tests.support.processes import wait_for
from tests.support.scale_stack import ADMIN_EMAIL, ScaleStack

FINAL_STATUSES = {"ORDER_STATUS_CONFIRMED", "ORDER_STATUS_FAILED"}
PAGE_SIZE = 5
ATTEMPTS = 8

# (action, weight) of what a shopper does next.
ACTIONS = (("checkout", 4), ("browse", 3), ("refresh", 2), ("register", 1), ("sign_in", 1))


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no HTTP answer at all (see ``error``)
    body: dict[str, Any]
    error: str = ""

    @property
    def label(self) -> str:
        """What the client saw: the status, or how the connection failed."""
        return self.error or str(self.status)

    @property
    def reason(self) -> str:
        return str(self.body.get("reason", ""))

    @property
    def says_nothing_final(self) -> bool:
        """No connection, a server error or a refusal to try now: send it again."""
        retry_later = self.status == 409 and self.reason == "CHECKOUT_IN_PROGRESS"
        return self.status == 0 or self.status >= 500 or self.status == 429 or retry_later


@dataclass(frozen=True)
class Sent:
    """One request as the client saw it."""

    kind: str
    gateway: str
    label: str
    at: float  # time.monotonic()
    expected: bool


def _expected(kind: str, answer: Answer) -> bool:
    if kind == "checkout":
        return answer.status in (201, 402) or (
            answer.status == 409 and answer.reason == "OUT_OF_STOCK"
        )
    return answer.status in {"register": (201,), "setup": (200, 201)}.get(kind, (200,))


def _transport_label(error: BaseException) -> str:
    if isinstance(error, aiohttp.ClientConnectorError):
        return "connection-refused"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "disconnected"
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, aiohttp.ClientOSError):
        return "connection-reset"
    return type(error).__name__


class Shop:
    """REST calls through the gateways, every one recorded in ``sent``."""

    def __init__(self, stack: ScaleStack) -> None:
        self.stack = stack
        self.sent: list[Sent] = []

    async def call(
        self,
        kind: str,
        gateway: int,
        method: str,
        path: str,
        *,
        token: str = "",
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        member = self.stack.gateways[gateway % len(self.stack.gateways)]
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {token}"
        try:
            async with self.stack.http.request(
                method, f"{member.url}{path}", json=json, params=params, headers=sent
            ) as response:
                body = await response.json(content_type=None) if response.content_length else {}
                answer = Answer(response.status, body if isinstance(body, dict) else {})
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            answer = Answer(0, {}, _transport_label(error))
        self.sent.append(
            Sent(kind, member.name, answer.label, time.monotonic(), _expected(kind, answer))
        )
        return answer

    async def persist(
        self, kind: str, gateway: int, method: str, path: str, **kwargs: Any
    ) -> tuple[Answer, int]:
        """Send until an answer says something final, alternating gateways; (answer, tries)."""
        answer = Answer(0, {}, "not-sent")
        for attempt in range(ATTEMPTS):
            answer = await self.call(kind, gateway + attempt, method, path, **kwargs)
            if not answer.says_nothing_final:
                return answer, attempt + 1
            await asyncio.sleep(min(2.0, 0.2 * (attempt + 1)))
        return answer, ATTEMPTS


@dataclass
class Customer:
    email: str
    password: str
    token: str = ""
    refresh_token: str = ""


@dataclass
class Checkout:
    """One checkout as its client lived it: the key, what was asked, every answer."""

    key: str
    customer: int
    product: str
    quantity: int
    card: str
    started_at: float  # time.monotonic()
    answers: list[str] = field(default_factory=list)
    final: Answer | None = None


@dataclass
class World:
    """What the load works on, made by the admin before it starts."""

    browse_category: str
    browse_ids: frozenset[str]
    scarce: dict[str, int]  # product id → initial stock
    customers: list[Customer]
    checkouts: list[Checkout] = field(default_factory=list)
    walks: list[list[str]] = field(default_factory=list)
    broken_walks: list[str] = field(default_factory=list)
    registrations: int = 0


async def created(shop: Shop, path: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST something as the admin (sent again after an answer that says nothing final)."""
    answer, _ = await shop.persist("setup", 0, "POST", path, token=token, json=body)
    assert answer.status in (200, 201), (path, answer)
    return answer.body


async def sign_in(shop: Shop, customer: Customer, gateway: int) -> Answer:
    answer, _ = await shop.persist(
        "sign_in",
        gateway,
        "POST",
        "/api/v1/auth/token",
        json={"email": customer.email, "password": customer.password},
    )
    if answer.status == 200:
        customer.token = str(answer.body["access_token"])
        customer.refresh_token = str(answer.body["refresh_token"])
    return answer


async def register(shop: Shop, gateway: int) -> Customer:
    customer = Customer(f"shopper-{uuid.uuid4().hex[:12]}@example.com", uuid.uuid4().hex)
    answer, tries = await shop.persist(
        "register",
        gateway,
        "POST",
        "/api/v1/users",
        json={"email": customer.email, "password": customer.password, "name": "Shopper"},
    )
    # 409 after a lost answer: the first attempt created the account.
    assert answer.status == 201 or (answer.status == 409 and tries > 1), answer
    await sign_in(shop, customer, gateway + 1)
    return customer


async def make_world(
    shop: Shop, *, customers: int, browse_products: int, stocks: Sequence[int]
) -> World:
    admin = Customer(ADMIN_EMAIL, shop.stack.admin_password)
    assert (await sign_in(shop, admin, 0)).status == 200
    categories = [
        await created(
            shop,
            "/api/v1/categories",
            admin.token,
            {"name": name, "slug": f"{name}-{uuid.uuid4().hex[:8]}"},
        )
        for name in ("browse", "scarce")
    ]

    async def product(category: dict[str, Any], units: int) -> str:
        made = await created(
            shop,
            "/api/v1/products",
            admin.token,
            {
                "sku": f"SCALE-{uuid.uuid4().hex[:10]}",
                "name": "Scale-out item",
                "description": "made by the scale-out test",
                "category_id": category["id"],
                "price": {"amount": 700, "currency": "USD"},
                "stock": units,
            },
        )
        return str(made["id"])

    browse = [await product(categories[0], 100) for _ in range(browse_products)]
    scarce = {await product(categories[1], stock): stock for stock in stocks}
    shoppers = [await register(shop, index) for index in range(customers)]
    return World(str(categories[0]["id"]), frozenset(browse), scarce, shoppers)


class Shopper:
    """One client doing a random mix of things until told to stop."""

    def __init__(self, shop: Shop, world: World, index: int, seed: int) -> None:
        self.shop = shop
        self.world = world
        self.index = index
        self.customer = world.customers[index]
        self.random = random.Random(seed)
        self.turn = index  # which gateway next: shoppers start on different ones

    def next_gateway(self) -> int:
        self.turn += 1
        return self.turn

    async def run(self, stop: asyncio.Event) -> None:
        names = [name for name, _ in ACTIONS]
        weights = [weight for _, weight in ACTIONS]
        while not stop.is_set():
            action = self.random.choices(names, weights)[0]
            await getattr(self, action)()

    async def checkout(self) -> None:
        product = self.random.choice(sorted(self.world.scarce))
        card = DECLINED if self.random.random() < 0.15 else APPROVED
        record = Checkout(
            uuid.uuid4().hex,
            self.index,
            product,
            self.random.choice((1, 1, 2)),
            card,
            time.monotonic(),
        )
        self.world.checkouts.append(record)
        for attempt in range(ATTEMPTS):
            answer = await self.shop.call(
                "checkout",
                self.next_gateway(),
                "POST",
                "/api/v1/orders",
                token=self.customer.token,
                headers={"Idempotency-Key": record.key},
                json=checkout_body([(product, record.quantity)], card),
            )
            record.answers.append(answer.label)
            if not answer.says_nothing_final:
                record.final = answer
                return
            await asyncio.sleep(min(2.0, 0.25 * (attempt + 1)))

    async def browse(self) -> None:
        """Walk a category page by page, each page asked of the other gateway."""
        ids: list[str] = []
        token = ""
        while True:
            params = {"category_id": self.world.browse_category, "page_size": str(PAGE_SIZE)}
            if token:
                params["page_token"] = token
            answer, _ = await self.shop.persist(
                "browse", self.next_gateway(), "GET", "/api/v1/products", params=params
            )
            if answer.status != 200:
                self.world.broken_walks.append(f"{answer.label} {answer.body.get('detail')}")
                return
            ids += [str(p["id"]) for p in answer.body.get("products", [])]
            token = str(answer.body.get("next_page_token") or "")
            if not token:
                self.world.walks.append(ids)
                return

    async def refresh(self) -> None:
        answer = await self.shop.call(
            "refresh",
            self.next_gateway(),
            "POST",
            "/api/v1/auth/refresh",
            json={"refresh_token": self.customer.refresh_token},
        )
        if answer.status == 200:
            self.customer.token = str(answer.body["access_token"])
            self.customer.refresh_token = str(answer.body["refresh_token"])
        else:
            # The answer may have been lost after the token was spent (then the session is
            # revoked, as it must be): a new session, as a client app would open.
            await sign_in(self.shop, self.customer, self.next_gateway())

    async def sign_in(self) -> None:
        await sign_in(self.shop, self.customer, self.next_gateway())

    async def register(self) -> None:
        await register(self.shop, self.next_gateway())
        self.world.registrations += 1


async def customer_orders(shop: Shop, customer: Customer) -> list[dict[str, Any]] | None:
    """Every order of the customer (all pages), or None if a page could not be had."""
    orders: list[dict[str, Any]] = []
    token = ""
    while True:
        params = {"page_size": "100", **({"page_token": token} if token else {})}
        answer, _ = await shop.persist(
            "audit", 0, "GET", "/api/v1/orders", token=customer.token, params=params
        )
        if answer.status != 200:
            return None
        orders += answer.body.get("orders", [])
        token = str(answer.body.get("next_page_token") or "")
        if not token:
            return orders


async def ledger_captures(payment_database_url: str) -> Counter[str]:
    """Approved captures per ledger key in the sandbox provider's table."""
    database = Database.from_url(payment_database_url)
    try:
        async with database.session() as session:
            rows = (
                await session.execute(
                    select(sandbox_ledger.c.key).where(
                        sandbox_ledger.c.operation == "capture", sandbox_ledger.c.approved != 0
                    )
                )
            ).all()
    finally:
        await database.dispose()
    return Counter(str(key) for (key,) in rows)


@dataclass
class Audit:
    """What the system kept once the load stopped and the recovery loop had its chance."""

    orders: int = 0
    confirmed: int = 0
    failed: int = 0
    accepted: int = 0  # checkouts answered 201
    settle_s: float = 0.0
    stuck: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    stock: dict[str, dict[str, int]] = field(default_factory=dict)
    stock_errors: list[str] = field(default_factory=list)
    capture_errors: list[str] = field(default_factory=list)
    extra_orders: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return [
            *(f"stuck: {s}" for s in self.stuck),
            *(f"lost: {s}" for s in self.lost),
            *self.stock_errors,
            *self.capture_errors,
            *self.extra_orders,
        ]


async def audit(shop: Shop, world: World, *, settle_within: float) -> Audit:
    """Wait until no order is left mid-saga, then hold every order, unit and capture to account."""
    result = Audit()
    started = time.monotonic()
    latest: dict[int, list[dict[str, Any]]] = {}

    async def settled() -> bool:
        for index, customer in enumerate(world.customers):
            orders = await customer_orders(shop, customer)
            if orders is None:
                return False
            latest[index] = orders
        return all(o["status"] in FINAL_STATUSES for os in latest.values() for o in os)

    with contextlib.suppress(AssertionError):  # what is still unsettled is reported as stuck
        await wait_for(settled, within=settle_within, interval=0.5)
    result.settle_s = round(time.monotonic() - started, 1)
    orders = {o["id"]: o for os in latest.values() for o in os}
    result.orders = len(orders)
    result.stuck = [
        f"{i} {o['status']}" for i, o in orders.items() if o["status"] not in FINAL_STATUSES
    ]
    result.confirmed = sum(o["status"] == "ORDER_STATUS_CONFIRMED" for o in orders.values())
    result.failed = sum(o["status"] == "ORDER_STATUS_FAILED" for o in orders.values())

    for record in world.checkouts:
        final = record.final
        if final is None:
            continue
        order_id = str(final.body.get("id", ""))
        if final.status == 201:
            result.accepted += 1
            status = orders.get(order_id, {}).get("status")
            if status != "ORDER_STATUS_CONFIRMED":
                result.lost.append(f"{order_id or record.key} answered 201, now {status}")

    # One key is one order at most: no customer has more orders than checkouts they started.
    for index in latest:
        started_checkouts = sum(r.customer == index for r in world.checkouts)
        if len(latest[index]) > started_checkouts:
            result.extra_orders.append(
                f"customer {index}: {len(latest[index])} orders from {started_checkouts} keys"
            )

    for product, initial in world.scarce.items():
        sold = sum(
            int(item["quantity"])
            for o in orders.values()
            if o["status"] == "ORDER_STATUS_CONFIRMED"
            for item in o.get("items", [])
            if item["product_id"] == product
        )
        answer, _ = await shop.persist("audit", 0, "GET", f"/api/v1/products/{product}")
        level = answer.body.get("stock", {})
        available, reserved = int(level.get("available", -1)), int(level.get("reserved", -1))
        result.stock[product] = {
            "initial": initial,
            "sold": sold,
            "available": available,
            "reserved": reserved,
        }
        if sold > initial or (available, reserved) != (initial - sold, 0):
            result.stock_errors.append(
                f"stock of {product}: initial {initial}, sold {sold}, "
                f"available {available}, reserved {reserved}"
            )

    captures = await ledger_captures(shop.stack.env["MC_PAYMENT_DATABASE_URL"])
    for order in orders.values():
        payment = str(order.get("payment", {}).get("id", ""))
        count = sum(n for key, n in captures.items() if payment and key.startswith(payment))
        confirmed = order["status"] == "ORDER_STATUS_CONFIRMED"
        if count > 1 or (confirmed and count != 1):
            result.capture_errors.append(
                f"order {order['id']} {order['status']}: {count} captures of payment {payment}"
            )
    return result
