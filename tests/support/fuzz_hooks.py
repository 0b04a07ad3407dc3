"""Schemathesis hooks for the fuzz test: creates sometimes send a body the services accept.

The document cannot say what the services check beyond the schema (an email's shape, a
password's length, a Luhn-valid card, a category that exists), so random bodies for the
creates are nearly always refused with 400 and the stateful phase never gets a resource whose
links it could follow. Here each create's body is either the fuzzer's own or a realistic one,
and hypothesis draws between them: the refusals are still tested, the links now are too.

Loaded by the schemathesis process (its config names this module); the ids of the category
and product the test made beforehand come through the environment (``fuzz_seed``).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import schemathesis
from hypothesis import strategies as st
from schemathesis import Case, HookContext
from schemathesis.generation.modes import GenerationMode

from tests.support.fuzz_seed import CATEGORY_ENV, ORDER_ENV, PRODUCT_ENV

APPROVED_CARD = "4242424242424242"


def _user(key: uuid.UUID) -> dict[str, Any]:
    return {
        "email": f"fuzz-{key.hex[:16]}@example.com",
        "password": "a fuzzing passphrase",
        "name": "Fuzz",
    }


def _category(key: uuid.UUID) -> dict[str, Any]:
    return {"name": "Fuzzed", "slug": f"fuzz-{key.hex[:16]}"}


def _product(key: uuid.UUID) -> dict[str, Any]:
    return {
        "sku": f"FUZZ-{key.hex[:12]}",
        "name": "Fuzzed product",
        "description": "made by the fuzz test",
        "category_id": os.environ.get(CATEGORY_ENV, ""),
        "price": {"amount": 1999, "currency": "USD"},
        "stock": 1000,
    }


def _order(_key: uuid.UUID) -> dict[str, Any]:
    return {
        "items": [{"product_id": os.environ.get(PRODUCT_ENV, ""), "quantity": 1}],
        "payment_method": {
            "card": {
                "number": APPROVED_CARD,
                "exp_month": 12,
                "exp_year": datetime.now(UTC).year + 3,
                "cvc": "123",
                "holder_name": "Fuzz Tester",
            }
        },
    }


REALISTIC: dict[str, Callable[[uuid.UUID], dict[str, Any]]] = {
    "POST /api/v1/users": _user,
    "POST /api/v1/categories": _category,
    "POST /api/v1/products": _product,
    "POST /api/v1/orders": _order,
}


def flatmap_body(context: HookContext, body: Any) -> st.SearchStrategy[Any]:
    """The fuzzer's body, or for a create a realistic one with fresh unique values."""
    make = REALISTIC.get(context.operation.label) if context.operation is not None else None
    if make is None:
        return st.just(body)
    return st.one_of(st.just(body), st.uuids().map(make))


# Registered by call, not as a decorator: schemathesis types its decorator as a bare Callable.
schemathesis.hook(flatmap_body)


# ---- valid data where JSON Schema cannot say what valid is -----------------------------------
#
# Schemathesis warns of a "schema validation mismatch" when an operation refused every valid
# (positive) case with a 400. Some rules the document states only in words, because JSON
# Schema cannot: a card number passes the Luhn check and the card has not expired, its CVC has
# the length of its brand; a report's end comes after its start, within the longest range; an
# order names each product once; an email is more than blanks; a PATCH's mask names what its
# body changes; a page token is one the service issued; a product's category exists; the order
# a cancel names is in a state that allows it. Before a positive case is sent,
# these are made true of it (everything else it carries is left as generated), so what it
# tests is the rest of its data; negative cases go as generated.

_LONGEST_RANGE = timedelta(days=30)


def _positive(case: Case[Any]) -> bool:
    meta = case.meta
    return meta is not None and meta.generation.mode is GenerationMode.POSITIVE


def _valid_card(body: dict[str, Any]) -> None:
    method = body.get("payment_method")
    card = method.get("card") if isinstance(method, dict) else None
    if not isinstance(card, dict):
        return
    today = datetime.now(UTC).date()
    # The sandbox approves this number; any other valid one is declined (a 402).
    card["number"] = APPROVED_CARD
    card["cvc"] = (str(card.get("cvc", "")) + "000")[:3]  # a Visa CVC has three digits
    if (card.get("exp_year", 0), card.get("exp_month", 0)) < (today.year, today.month):
        card["exp_year"] = today.year + 1
    if not str(card.get("holder_name", "")).strip():
        card["holder_name"] = "Fuzz Tester"


def _each_product_once(body: dict[str, Any]) -> None:
    items = body.get("items")
    if not isinstance(items, list):
        return
    seen: set[Any] = set()
    kept = []
    for item in items:
        product = item.get("product_id") if isinstance(item, dict) else None
        if product not in seen:
            seen.add(product)
            kept.append(item)
    body["items"] = kept


def _valid_order(case: Case[Any]) -> None:
    if isinstance(case.body, dict):
        _valid_card(case.body)
        _each_product_once(case.body)
    # One key per request, as the contract asks: generated keys repeat across cases, and a key
    # reused with another body is refused (422).
    if case.headers is not None:
        case.headers["Idempotency-Key"] = uuid.uuid4().hex


def _valid_range(case: Case[Any]) -> None:
    query = case.query
    if not isinstance(query, dict):
        return
    try:
        start = datetime.fromisoformat(str(query["start_time"]).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(query["end_time"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return
    if not timedelta(0) < end - start <= _LONGEST_RANGE:
        query["end_time"] = (start + timedelta(days=1)).isoformat()


def _not_blank_email(case: Case[Any]) -> None:
    if isinstance(case.body, dict) and not str(case.body.get("email", "x")).strip():
        case.body["email"] = "nobody@example.com"


# What UpdateProduct may change (product_svc's update mask); price and stock have RPCs of their own.
_UPDATABLE = ("sku", "name", "description", "category_id", "low_stock_threshold")


def _valid_product_update(case: Case[Any]) -> None:
    """A PATCH whose mask names what its body holds, in the fields a PATCH may change; a sku and
    name are never blank and the category exists (the product's, as far as the fuzzer knows)."""
    body = case.body if isinstance(case.body, dict) else {}
    changes = {name: body[name] for name in _UPDATABLE if name in body}
    if "sku" in changes and not str(changes["sku"]).strip():
        changes["sku"] = f"FUZZ-{uuid.uuid4().hex[:12]}"
    if not str(changes.get("name", "x")).strip() or not changes:
        changes["name"] = "Fuzzed product"
    if "category_id" in changes:
        changes["category_id"] = os.environ.get(CATEGORY_ENV, "")
    case.body = changes
    case.query = {**(case.query or {}), "update_mask": ",".join(changes)}


def _existing_category(case: Case[Any]) -> None:
    if isinstance(case.body, dict):
        case.body["category_id"] = os.environ.get(CATEGORY_ENV, "")


# Cancelling answers 200 for these; any other state is a 400 the document lists as the
# order's state refusing a valid request (FAILED_PRECONDITION, NOT_CANCELLABLE).
_CANCELLABLE = frozenset(("ORDER_STATUS_CONFIRMED", "ORDER_STATUS_CANCELLED"))


def _order_status(case: Case[Any], order_id: str) -> str | None:
    """The status of the caller's order ``order_id``; None when there is no such order."""
    schema = case.operation.schema
    request = urllib.request.Request(
        f"{schema.get_base_url().rstrip('/')}/api/v1/orders/{quote(order_id, safe='')}",
        headers=schema.config.headers_for(operation=case.operation),
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status = json.load(response).get("status")
    except (urllib.error.URLError, TimeoutError, ValueError):
        return None
    return status if isinstance(status, str) else None


def _cancellable_order(case: Case[Any]) -> None:
    """The fuzzer names orders it saw in earlier responses, FAILED and ON_HOLD ones among them;
    cancelling those is refused whatever the request says. Such an id is swapped for the
    customer's cancelled order (seeded by the test); an id that names no order of the caller
    is kept, so its 404 is still tested."""
    seeded = os.environ.get(ORDER_ENV)
    parameters = case.path_parameters
    order_id = parameters.get("id") if isinstance(parameters, dict) else None
    if not seeded or not isinstance(order_id, str) or parameters is None:
        return
    status = _order_status(case, order_id)
    if status is not None and status not in _CANCELLABLE:
        parameters["id"] = seeded


VALID: dict[str, Callable[[Case[Any]], None]] = {
    "POST /api/v1/orders": _valid_order,
    "GET /api/v1/payment/analytics/sales": _valid_range,
    "GET /api/v1/payment/analytics/top-products": _valid_range,
    "POST /api/v1/auth/token": _not_blank_email,
    "PATCH /api/v1/products/{id}": _valid_product_update,
    "POST /api/v1/products": _existing_category,
    "POST /api/v1/orders/{id}:cancel": _cancellable_order,
}


def before_call(context: HookContext, case: Case[Any], **kwargs: Any) -> None:
    """A positive case of an operation above is made valid where the schema cannot say how."""
    if not _positive(case):
        return
    if isinstance(case.query, dict):
        # A page token is opaque and only the service makes one; a made-up one is refused.
        case.query.pop("page_token", None)
    make_valid = VALID.get(case.operation.label)
    if make_valid is not None:
        make_valid(case)


schemathesis.hook(before_call)
