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

import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import schemathesis
from hypothesis import strategies as st
from schemathesis import HookContext

from tests.support.fuzz_seed import CATEGORY_ENV, PRODUCT_ENV

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
