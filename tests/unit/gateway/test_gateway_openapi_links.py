"""OpenAPI links: from each create to the operations on what it created, valid OpenAPI 3.1."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from google.api import http_pb2
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from gateway.openapi import build_openapi
from gateway.openapi_links import DeclaredLink
from gateway.routes import build_route_table, discover_services
from tests.support.descriptors import service_with
from tests.support.openapi_checks import problems_of
from tests.support.widget_service import WIDGET_SERVICE

BY_ID = "$response.body#/id"


@pytest.fixture(scope="module")
def real() -> dict[str, Any]:
    return build_openapi(build_route_table(discover_services()), title="MicroCommerce", version="0")


@pytest.fixture(scope="module")
def widgets() -> dict[str, Any]:
    return build_openapi(build_route_table([WIDGET_SERVICE]), title="Test", version="1")


def links_of(document: dict[str, Any], method: str, path: str, status: str) -> dict[str, Any]:
    response = document["paths"][path][method]["responses"][status]
    links: dict[str, Any] = response.get("links", {})
    return links


def targets(links: dict[str, Any]) -> dict[str, Any]:
    """operationId → what the link passes (its parameters, else its body)."""
    return {
        link["operationId"]: link.get("parameters") or link.get("requestBody")
        for link in links.values()
    }


def test_a_create_links_to_every_operation_on_the_resource_it_created(
    widgets: dict[str, Any],
) -> None:
    links = targets(links_of(widgets, "post", "/v1/widgets", "201"))

    assert links == {
        "WidgetService_GetWidget": {"path.id": BY_ID},
        # Bound as {widget.id}, shown as {id}: the link names the document's parameter.
        "WidgetService_UpdateWidget": {"path.id": BY_ID},
        "WidgetService_DeleteWidget": {"path.id": BY_ID},
        "WidgetService_CancelWidget": {"path.id": BY_ID},
        "WidgetService_ReplaceWidgetLabels": {"path.id": BY_ID},
        "WidgetService_ListWidgetParts": {"path.id": BY_ID},
    }


def test_operations_that_create_nothing_carry_no_links(widgets: dict[str, Any]) -> None:
    with_links = [
        f"{method.upper()} {path}"
        for path, item in widgets["paths"].items()
        for method, operation in item.items()
        if any("links" in response for response in operation["responses"].values())
    ]

    # widget-orders has no routes under /v1/widget-orders/{id} to link to.
    assert with_links == ["POST /v1/widgets"]


def test_the_products_create_links_to_get_update_delete_price_history_recommendations_and_stock(
    real: dict[str, Any],
) -> None:
    links = targets(links_of(real, "post", "/api/v1/products", "201"))

    assert links == {
        "ProductService_GetProduct": {"path.id": BY_ID},
        "ProductService_UpdateProduct": {"path.id": BY_ID},
        "ProductService_DeleteProduct": {"path.id": BY_ID},
        "ProductService_SetProductPrice": {"path.id": BY_ID},
        "ProductService_ListPriceHistory": {"path.id": BY_ID},
        "ProductService_ListRecommendations": {"path.id": BY_ID},
        "ProductService_AdjustStock": {"path.id": BY_ID},
    }


def test_a_checkout_links_to_its_order_and_through_the_order_to_its_payment(
    real: dict[str, Any],
) -> None:
    links = targets(links_of(real, "post", "/api/v1/orders", "201"))

    assert links["OrderService_GetOrder"] == {"path.id": BY_ID}
    assert links["OrderService_CancelOrder"] == {"path.id": BY_ID}
    assert links["OrderService_CreateRefund"] == {"path.id": BY_ID}
    assert links["PaymentService_GetPayment"] == {"path.id": "$response.body#/payment/id"}
    assert not {"OrderService_ListOrders", "OrderService_CreateOrder"} & set(links)


def test_a_new_category_links_to_the_products_filtered_by_it_and_to_a_product_in_it(
    real: dict[str, Any],
) -> None:
    links = targets(links_of(real, "post", "/api/v1/categories", "201"))

    assert links == {
        "ProductService_ListProducts": {"query.category_id": BY_ID},
        "ProductService_CreateProduct": {"category_id": BY_ID},
    }


def test_a_registration_links_to_roles_the_users_orders_and_signing_in(
    real: dict[str, Any],
) -> None:
    links = targets(links_of(real, "post", "/api/v1/users", "201"))

    assert links == {
        "UserService_SetUserRoles": {"path.id": BY_ID},
        "OrderService_ListOrders": {"query.user_id": BY_ID},
        "UserService_IssueToken": {
            "email": "$response.body#/email",
            "password": "$request.body#/password",
        },
    }


@pytest.mark.parametrize("path", ["/api/v1/auth/token", "/api/v1/auth/refresh"])
def test_a_token_pair_links_to_refreshing_and_logging_out_with_its_refresh_token(
    real: dict[str, Any], path: str
) -> None:
    links = targets(links_of(real, "post", path, "200"))

    spend = {"refresh_token": "$response.body#/refresh_token"}
    assert links == {"UserService_RefreshToken": spend, "UserService_Logout": spend}


def test_a_declared_link_applies_only_when_both_operations_are_in_the_document() -> None:
    service = service_with(
        {
            "MakeThing": http_pb2.HttpRule(post="/v1/things", body="*"),
            "CheckThing": http_pb2.HttpRule(post="/v1/thing-checks", body="*"),
        },
        request="CancelWidgetRequest",
        success_status=201,
    )
    package = service.full_name
    declared = [
        DeclaredLink(f"{package}.MakeThing", f"{package}.CheckThing", {"id": BY_ID}, "Check it."),
        DeclaredLink(f"{package}.MakeThing", "no.such.Service.Rpc", {"id": BY_ID}, "Gone."),
    ]

    doc = build_openapi(
        build_route_table([service]), title="T", version="1", declared_links=declared
    )

    links = links_of(doc, "post", "/v1/things", "201")
    assert list(links.values()) == [
        {
            "operationId": "TestService_CheckThing",
            "requestBody": {"id": BY_ID},
            "description": "Check it.",
        }
    ]
    assert problems_of(doc) == []


def test_requests_taking_the_created_resources_id_in_query_or_body_are_linked() -> None:
    service = service_with(
        {
            "MakeWidget": http_pb2.HttpRule(post="/v1/gadgets", body="*"),
            # CreateWidgetRequest has a top-level `widget_id`: a filter once in a query.
            "FindGadgets": http_pb2.HttpRule(get="/v1/gadget-finds"),
            "TagGadget": http_pb2.HttpRule(post="/v1/gadget-tags", body="*"),
            "TagGadgetByPath": http_pb2.HttpRule(post="/v1/gadget-tags/{widget_id}", body="*"),
        },
        request="CreateWidgetRequest",
        success_status=201,
    )

    doc = build_openapi(build_route_table([service]), title="T", version="1")

    links = targets(links_of(doc, "post", "/v1/gadgets", "201"))
    # Not the create itself, nor a route whose path already sets `widget_id`.
    assert links == {
        "TestService_FindGadgets": {"query.widget_id": BY_ID},
        "TestService_TagGadget": {"widget_id": BY_ID},
    }


@pytest.mark.parametrize("which", ["real", "widgets"])
def test_the_documents_with_links_are_valid_openapi_3_1(
    which: str, request: pytest.FixtureRequest
) -> None:
    document: dict[str, Any] = request.getfixturevalue(which)

    OPENAPI_31_VALIDATOR.validate(document)
    assert problems_of(document) == []


def test_schemathesis_reads_every_link_into_its_state_machine(real: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_dict(real)

    # Raises InvalidStateMachine naming any link whose target or parameter does not resolve.
    machine = schema.as_state_machine()

    transitions = [name for name in dir(machine) if "___201_" in name or "___200_User" in name]
    assert any("ProductService_GetProduct" in name for name in transitions)
    assert any("PaymentService_GetPayment" in name for name in transitions)
    assert any("UserService_RefreshToken" in name for name in transitions)
