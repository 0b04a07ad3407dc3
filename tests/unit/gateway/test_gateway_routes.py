"""The route table read from google.api.http options, and the options it refuses."""

from __future__ import annotations

import pytest
from google.api import http_pb2

from gateway.routes import Route, RouteError, build_route_table, discover_services
from tests.support.descriptors import service_with
from tests.support.widget_service import WIDGET_SERVICE


def route(method: str, binding: int = 0) -> Route:
    table = build_route_table([WIDGET_SERVICE])
    return next(r for r in table.routes if r.method.name == method and r.binding == binding)


def test_every_rpc_with_an_http_option_gets_a_route_except_service_only_ones() -> None:
    table = build_route_table([WIDGET_SERVICE])

    routed = {r.method.name for r in table.routes}
    expected = {m.name for m in WIDGET_SERVICE.methods} - {"ReindexWidgets", "CountWidgets"}
    assert routed == expected


def test_an_additional_binding_is_a_second_route_of_the_same_rpc() -> None:
    primary, extra = route("GetWidget", 0), route("GetWidget", 1)

    assert (primary.template.text, extra.template.text) == (
        "/v1/widgets/{id}",
        "/v0/shelves/{shelf_id}/widgets/{id}",
    )
    assert (primary.operation_id, extra.operation_id) == (
        "WidgetService_GetWidget",
        "WidgetService_GetWidget_1",
    )


def test_success_status_is_the_option_or_204_for_empty_or_200() -> None:
    assert route("CreateWidget").success_status == 201
    assert route("DeleteWidget").success_status == 204
    assert not route("DeleteWidget").has_body
    assert route("GetWidget").success_status == 200


def test_body_idempotency_access_and_rpc_path_come_from_the_options() -> None:
    order = route("OrderWidgets")

    assert order.body == "*"
    assert order.requires_idempotency_key
    assert order.access_name == "ACCESS_USER"
    assert not order.public
    assert order.rpc_path == "/microcommerce.testing.v1.WidgetService/OrderWidgets"
    assert route("CreateWidget").body == "widget"
    assert route("GetWidget").public


def test_revalidation_on_every_use_is_read_from_the_option_declared_next_to_the_rpc() -> None:
    table = build_route_table(discover_services())

    revalidated = {r.rpc_path for r in table.routes if r.revalidate_every_use}
    assert revalidated == {"/microcommerce.user.v1.UserService/GetJwks"}
    assert not route("GetWidget").revalidate_every_use


def test_only_a_patch_with_a_body_field_and_update_mask_fills_the_mask() -> None:
    assert route("UpdateWidget").fills_update_mask
    assert not route("CreateWidget").fills_update_mask


def test_fields_set_by_the_path_or_under_the_body_field_are_not_query_parameters() -> None:
    update = route("UpdateWidget")

    assert update.bound_by_path("widget.id")
    assert update.bound_by_path("widget.name")
    assert not update.bound_by_path("update_mask")


def test_the_table_lists_every_rpc_name_per_service_routed_or_not() -> None:
    table = build_route_table([WIDGET_SERVICE])

    names = table.rpc_names()[WIDGET_SERVICE.full_name]
    assert "CountWidgets" in names
    assert "ReindexWidgets" in names
    assert len(table.routes_of(WIDGET_SERVICE.full_name)) == len(table.routes)


def test_services_are_discovered_in_the_generated_modules_of_a_package() -> None:
    services = discover_services(["microcommerce.testing.v1"])

    assert [s.full_name for s in services] == [WIDGET_SERVICE.full_name]


def test_a_package_that_was_not_generated_is_reported_with_the_fix() -> None:
    with pytest.raises(RouteError, match="make proto"):
        discover_services(["microcommerce.nonexistent.v1"])


def test_the_default_services_build_a_route_table() -> None:
    # The real protos: a broken HTTP option there fails here, not at gateway start-up.
    table = build_route_table(discover_services())

    assert table.routes
    assert all(r.service.file.package.startswith("microcommerce.") for r in table.routes)


# --- Options the gateway refuses at start-up ------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "request_type", "message"),
    [
        ({"A": http_pb2.HttpRule(get="/v1/{nope}")}, "GetWidgetRequest", "has no field 'nope'"),
        ({"A": http_pb2.HttpRule(get="v1/x")}, "GetWidgetRequest", "expected '/'"),
        (
            {"A": http_pb2.HttpRule(post="/v1/x", body="nope")},
            "GetWidgetRequest",
            "body field 'nope'",
        ),
        (
            {"A": http_pb2.HttpRule(get="/v1/x", response_body="nope")},
            "GetWidgetRequest",
            "response_body 'nope'",
        ),
        ({"A": http_pb2.HttpRule(get="/v1/{tags}")}, "ListWidgetsRequest", "is repeated"),
        ({"A": http_pb2.HttpRule(get="/v1/{filter}")}, "ListWidgetsRequest", "is a message"),
        (
            {"A": http_pb2.HttpRule(get="/v1/{id}"), "B": http_pb2.HttpRule(get="/v1/{shelf_id}")},
            "GetWidgetRequest",
            "both bind GET",
        ),
        (
            {
                "A": http_pb2.HttpRule(get="/v1/shelves/{shelf_id}/widgets/{id}"),
                "B": http_pb2.HttpRule(get="/v1/{id=shelves/*/widgets/*}"),
            },
            "GetWidgetRequest",
            "both bind GET",
        ),
        ({"A": http_pb2.HttpRule()}, "GetWidgetRequest", "without a method and path"),
    ],
)
def test_an_http_option_the_gateway_cannot_serve_fails_at_start_up_naming_the_rpc(
    rules: dict[str, http_pb2.HttpRule], request_type: str, message: str
) -> None:
    service = service_with(rules, request=request_type)

    with pytest.raises(RouteError, match=message) as error:
        build_route_table([service])

    assert service.full_name in str(error.value)


def test_a_success_status_outside_2xx_is_refused() -> None:
    service = service_with({"A": http_pb2.HttpRule(get="/v1/x")}, success_status=302)

    with pytest.raises(RouteError, match="not a 2xx status"):
        build_route_table([service])


def test_a_custom_http_method_is_served_under_its_own_name() -> None:
    rule = http_pb2.HttpRule(custom=http_pb2.CustomHttpPattern(kind="search", path="/v1/x"))

    (only,) = build_route_table([service_with({"A": rule})]).routes

    assert (only.http_method, only.template.text) == ("SEARCH", "/v1/x")
