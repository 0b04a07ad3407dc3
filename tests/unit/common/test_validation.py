"""The protos' declared rules, checked by protovalidate, reported by request path."""

from __future__ import annotations

import pytest

from common.errors import FieldViolation, InvalidArgument
from common.validation import check, violations
from microcommerce.payment.v1 import order_service_pb2 as orders
from microcommerce.user.v1 import user_service_pb2 as users


def test_violations_name_list_items_and_say_what_was_expected() -> None:
    request = orders.CreateOrderRequest(
        items=[
            orders.CreateOrderRequest.Item(product_id="p1", quantity=1),
            orders.CreateOrderRequest.Item(product_id="", quantity=0),
        ],
        payment_method=orders.PaymentMethod(),
    )

    found = violations(request)

    assert found == [
        FieldViolation("items[1].product_id", "is required"),
        FieldViolation("items[1].quantity", "must be from 1 to 10000"),
        FieldViolation("payment_method", "exactly one of card is required"),
    ]


def test_a_valid_request_has_no_violation() -> None:
    request = users.CreateUserRequest(email="ada@example.com", password="long enough", name="A")

    assert violations(request) == []


def test_check_raises_invalid_argument_with_every_violation() -> None:
    request = users.CreateUserRequest(email="not an email", password="short", name="")

    with pytest.raises(InvalidArgument) as caught:
        check(request)

    assert caught.value.field == "email"
    assert [v.field for v in caught.value.field_violations()] == ["email", "password", "name"]
    assert caught.value.message.startswith("email: ")
    assert caught.value.message.endswith("(and 2 more)")
