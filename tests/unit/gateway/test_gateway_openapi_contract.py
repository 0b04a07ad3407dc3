"""The OpenAPI document states what the services enforce: rules, descriptions, statuses."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.openapi import build_openapi
from gateway.routes import build_route_table, discover_services

SCHEMAS = "microcommerce.{}"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_openapi(build_route_table(discover_services()), title="MicroCommerce", version="0")


def schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = document["components"]["schemas"][SCHEMAS.format(name)]
    return found


def test_every_property_carries_its_proto_comment(document: dict[str, Any]) -> None:
    undocumented = [
        f"{name}.{prop}"
        for name, body in document["components"]["schemas"].items()
        for prop, value in body.get("properties", {}).items()
        if not value.get("description")
    ]

    assert undocumented == []
    card = schema(document, "payment.v1.CardDetails")["properties"]
    assert card["number"]["description"].startswith("The full card number")


def test_declared_rules_become_json_schema_keywords(document: dict[str, Any]) -> None:
    card = schema(document, "payment.v1.CardDetails")
    order = schema(document, "payment.v1.CreateOrderRequest")
    registration = document["paths"]["/api/v1/users"]["post"]["requestBody"]
    registration_schema = schema(document, "user.v1.CreateUserRequest")
    money = schema(document, "common.v1.Money")["properties"]

    assert card["properties"]["number"] | {"description": ""} == {
        "type": "string",
        "minLength": 1,
        "maxLength": 32,
        "pattern": "^[0-9]([ -]?[0-9]){11,18}$",
        "writeOnly": True,
        "description": "",
    }
    assert (
        card["properties"]["exp_month"]["minimum"],
        card["properties"]["exp_month"]["maximum"],
    ) == (1, 12)
    assert order["properties"]["items"]["minItems"] == 1
    assert order["properties"]["items"]["maxItems"] == 100
    assert "payment_method" in order["required"]
    assert registration["required"] is True
    assert registration_schema["properties"]["email"]["format"] == "email"
    assert registration_schema["properties"]["password"]["minLength"] == 8
    assert money["currency"]["pattern"] == "^[A-Z]{3}$"
    # The services check the code against ISO 4217: a well-shaped "AAA" is refused.
    assert {"USD", "EUR", "JPY"} <= set(money["currency"]["enum"])
    assert "AAA" not in money["currency"]["enum"]
    assert money["amount"]["minimum"] == 0


def test_what_a_request_must_hold_is_required_even_where_the_proto_cannot_say_required(
    document: dict[str, Any],
) -> None:
    method = schema(document, "payment.v1.PaymentMethod")
    sent_money = schema(document, "common.v1.MoneyInput")
    returned_money = schema(document, "common.v1.Money")

    # `{}` sets no member of the required oneof: the services refuse it.
    assert method["required"] == ["card"]
    # Absent means "": the currency's pattern refuses it, so a Money sent must carry one.
    assert sent_money["required"] == ["currency"]
    # An amount of 0 is allowed, so it may be left out.
    assert "amount" not in sent_money["required"]
    # What the services answer is described as it is, not as what they accept.
    assert "required" not in returned_money


def test_a_rule_that_lets_the_empty_value_through_says_so(document: dict[str, Any]) -> None:
    preferences = schema(document, "user.v1.Preferences")["properties"]

    # Empty means "the default" (IGNORE_IF_ZERO_VALUE): the pattern admits it.
    assert preferences["currency"]["pattern"] == "^$|^[A-Za-z]{3}$"


def test_query_parameters_carry_rules_and_descriptions(document: dict[str, Any]) -> None:
    parameters = {p["name"]: p for p in document["paths"]["/api/v1/products"]["get"]["parameters"]}

    assert parameters["page_size"]["schema"]["minimum"] == 0
    assert parameters["q"]["schema"]["maxLength"] == 200
    assert parameters["order_by"]["schema"]["enum"] == [
        "",
        "price",
        "-price",
        "-create_time",
        "relevance",
    ]
    assert parameters["q"]["description"]


def statuses(document: dict[str, Any], method: str, path: str) -> set[str]:
    return set(document["paths"][path][method]["responses"]) - {"default"}


def test_every_operation_lists_the_statuses_its_rpc_declares(document: dict[str, Any]) -> None:
    checkout = statuses(document, "post", "/api/v1/orders")
    product_read = statuses(document, "get", "/api/v1/products/{id}")
    product_patch = statuses(document, "patch", "/api/v1/products/{id}")

    # 402 PAYMENT_DECLINED, 409 out of stock / replay in progress, 422 key reused, 503.
    assert {"201", "400", "401", "402", "403", "404", "409", "422", "503"} <= checkout
    # public: no 401/403; cached: 304
    assert {"200", "304", "400", "404", "429", "503", "504"} == product_read
    assert {"409", "412", "413"} <= product_patch


def test_resources_with_an_etag_document_the_etag_header(document: dict[str, Any]) -> None:
    read = document["paths"]["/api/v1/products/{id}"]["get"]["responses"]["200"]
    order = document["paths"]["/api/v1/orders/{id}"]["get"]["responses"]["200"]

    assert "ETag" in read["headers"]
    assert "headers" not in order  # orders carry no etag


def test_a_400_that_depends_on_the_resources_state_says_so(document: dict[str, Any]) -> None:
    cancel = document["paths"]["/api/v1/orders/{id}:cancel"]["post"]["responses"]["400"]
    read = document["paths"]["/api/v1/orders/{id}"]["get"]["responses"]["400"]

    # Cancelling a FAILED order is a valid request refused for the order's state: the document
    # tells a client how to tell it from its own mistake.
    assert "FAILED_PRECONDITION" in cancel["description"]
    assert "`NOT_CANCELLABLE`" in cancel["description"]
    assert cancel["content"]["application/problem+json"]["schema"] == {
        "$ref": "#/components/schemas/Problem"
    }
    assert read == {"$ref": "#/components/responses/Problem"}
    assert "reason" in document["components"]["schemas"]["Problem"]["properties"]
