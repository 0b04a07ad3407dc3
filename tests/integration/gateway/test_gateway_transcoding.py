"""Every REST mapping form, through a real gateway to a real gRPC server and back."""

from __future__ import annotations

from yarl import URL

from microcommerce.testing.v1 import widgets_pb2
from tests.support.gateway_testing import Client, received
from tests.support.widget_service import BIG_PRICE, MAX_UINT64, WidgetServer

JSON = "application/json"


def as_sent(path: str) -> URL:
    """The path byte for byte: the client would otherwise decode ``%3A`` and the like."""
    return URL(path, encoded=True)


async def test_a_path_variable_sets_its_field_and_the_response_is_snake_case_json(
    gateway: Client, widget_server: WidgetServer
) -> None:
    response = await gateway.get("/v1/widgets/w-42")

    assert response.status == 200
    assert response.content_type == JSON
    body = await response.json()
    assert body["id"] == "w-42"
    assert body["reserved_count"] == 0
    assert body["create_time"] == "2026-11-25T06:39:00.500Z"
    assert received(widget_server, "GetWidget", widgets_pb2.GetWidgetRequest).id == "w-42"


async def test_64_bit_integers_arrive_as_json_numbers_not_strings(gateway: Client) -> None:
    response = await gateway.get("/v1/widgets/w-1")

    text = await response.text()
    body = await response.json()
    assert body["price"] == BIG_PRICE
    assert body["view_count"] == MAX_UINT64
    assert body["stock_by_warehouse"]["south"] == BIG_PRICE
    assert body["limit"] == BIG_PRICE
    assert f'"price":{BIG_PRICE}' in text


async def test_input_only_fields_never_reach_the_client(gateway: Client) -> None:
    body = await (await gateway.get("/v1/widgets/w-1")).json()

    assert "secret" not in body


async def test_an_additional_binding_routes_to_the_same_rpc(
    gateway: Client, widget_server: WidgetServer
) -> None:
    response = await gateway.get("/v0/shelves/s-7/widgets/w-1")

    assert response.status == 200
    request = received(widget_server, "GetWidget", widgets_pb2.GetWidgetRequest)
    assert (request.shelf_id, request.id) == ("s-7", "w-1")


async def test_a_pattern_variable_takes_the_whole_resource_name(
    gateway: Client, widget_server: WidgetServer
) -> None:
    response = await gateway.get("/v1/shelves/s-1/widgets/w-2")

    assert response.status == 200
    assert (await response.json())["id"] == "shelves/s-1/widgets/w-2"
    request = received(widget_server, "GetShelfWidget", widgets_pb2.GetShelfWidgetRequest)
    assert request.name == "shelves/s-1/widgets/w-2"


async def test_a_path_that_does_not_fit_the_pattern_is_not_found(gateway: Client) -> None:
    assert (await gateway.get("/v1/shelves/s-1/gadgets/w-2")).status == 404
    assert (await gateway.get("/v1/shelves/s-1/widgets/w-2/x")).status == 404


async def test_a_percent_encoded_path_segment_is_decoded_into_the_field(
    gateway: Client, widget_server: WidgetServer
) -> None:
    response = await gateway.get("/v1/widgets/a%20b%2Fc")

    assert response.status == 200
    assert received(widget_server, "GetWidget", widgets_pb2.GetWidgetRequest).id == "a b/c"


async def test_an_encoded_colon_in_a_single_segment_is_part_of_the_value_not_a_verb(
    gateway: Client, widget_server: WidgetServer
) -> None:
    plain = await gateway.get(as_sent("/v1/widgets/a%3Ab"))
    before_a_verb = await gateway.post(as_sent("/v1/widgets/x%3Ay%2fz:cancel"))

    assert plain.status == 200
    assert received(widget_server, "GetWidget", widgets_pb2.GetWidgetRequest).id == "a:b"
    assert before_a_verb.status == 200
    assert received(widget_server, "CancelWidget", widgets_pb2.CancelWidgetRequest).id == "x:y/z"


async def test_escaped_unreserved_characters_still_match_the_literal_segments(
    gateway: Client, widget_server: WidgetServer
) -> None:
    response = await gateway.get(as_sent("/v1/%77idgets/w%2D1"))

    assert response.status == 200
    assert received(widget_server, "GetWidget", widgets_pb2.GetWidgetRequest).id == "w-1"


async def test_a_multi_segment_variable_keeps_an_encoded_slash_encoded(
    gateway: Client, widget_server: WidgetServer
) -> None:
    response = await gateway.get(as_sent("/v1/shelves/s%2F1/widgets/w%3A2%20x"))

    assert response.status == 200
    request = received(widget_server, "GetShelfWidget", widgets_pb2.GetShelfWidgetRequest)
    assert request.name == "shelves/s%2F1/widgets/w:2 x"


async def test_an_encoded_slash_is_never_read_as_a_separator_of_a_pattern(
    gateway: Client,
) -> None:
    # `shelves%2Fs-1` is one segment, so the path has too few for shelves/*/widgets/*.
    assert (await gateway.get(as_sent("/v1/shelves%2Fs-1/widgets/w-2"))).status == 404


async def test_a_double_star_variable_takes_the_rest_of_the_path_with_slashes_kept_apart(
    gateway: Client, widget_server: WidgetServer
) -> None:
    response = await gateway.get(as_sent("/v1/widget-files/plans/2026/a%2fb%20c.svg"))

    assert response.status == 200
    request = received(widget_server, "GetWidgetFile", widgets_pb2.GetWidgetFileRequest)
    assert request.path == "plans/2026/a%2fb c.svg"


async def test_a_path_escape_that_is_not_utf8_is_a_400(gateway: Client) -> None:
    response = await gateway.get(as_sent("/v1/widgets/a%FFb"))

    assert response.status == 400
    assert "UTF-8" in (await response.json())["detail"]


async def test_every_kind_of_query_parameter_sets_its_field(
    gateway: Client, widget_server: WidgetServer
) -> None:
    query = [
        ("page_size", "25"),
        ("page_token", "next page"),
        ("tags", "red"),
        ("tags", "round"),
        ("color", "COLOR_BLUE"),
        ("in_stock", "true"),
        ("min_price", str(BIG_PRICE)),
        ("max_price", "0"),
        ("filter.name_prefix", "Spr"),
        ("filter.min_size.width_mm", "30"),
        ("filter.colors", "COLOR_RED"),
        ("filter.colors", "COLOR_GREEN"),
        ("ids", "3"),
        ("ids", "1"),
        ("created_after", "2026-01-01T00:00:00Z"),
        ("min_weight_kg", "0.25"),
        ("min_views", str(MAX_UINT64)),
        ("min_reserved", "2"),
        ("read_mask", "name,dimensions.width_mm"),
    ]

    response = await gateway.get("/v1/widgets", params=query)

    assert response.status == 200
    request = received(widget_server, "ListWidgets", widgets_pb2.ListWidgetsRequest)
    assert request.page_size == 25
    assert request.page_token == "next page"
    assert list(request.tags) == ["red", "round"]
    assert request.color == widgets_pb2.COLOR_BLUE
    assert request.in_stock is True
    assert request.min_price == BIG_PRICE
    assert request.HasField("max_price")
    assert request.max_price == 0
    assert not request.HasField("featured")
    assert request.filter.name_prefix == "Spr"
    assert request.filter.min_size.width_mm == 30
    assert list(request.filter.colors) == [widgets_pb2.COLOR_RED, widgets_pb2.COLOR_GREEN]
    assert list(request.ids) == [3, 1]
    assert request.created_after.ToJsonString() == "2026-01-01T00:00:00Z"
    assert request.min_weight_kg == 0.25
    assert request.min_views == MAX_UINT64
    assert request.min_reserved.value == 2
    assert list(request.read_mask.paths) == ["name", "dimensions.width_mm"]


async def test_body_field_maps_the_body_to_one_field_and_query_sets_the_others(
    gateway: Client, widget_server: WidgetServer
) -> None:
    response = await gateway.post(
        "/v1/widgets?widget_id=w-new-1&validate_only=true",
        json={"name": "Gear", "price": 1999, "dimensions": {"width_mm": 5}},
    )

    assert response.status == 201
    body = await response.json()
    assert (body["id"], body["name"], body["price"]) == ("w-new-1", "Gear", 1999)
    request = received(widget_server, "CreateWidget", widgets_pb2.CreateWidgetRequest)
    assert request.widget.name == "Gear"
    assert request.widget.dimensions.width_mm == 5
    assert request.widget_id == "w-new-1"
    assert request.validate_only is True


async def test_body_star_maps_the_body_to_the_request_and_the_path_wins(
    gateway: Client, widget_server: WidgetServer
) -> None:
    response = await gateway.put(
        "/v1/widgets/w-9/labels",
        json={"id": "ignored", "labels": {"size": "L"}, "tags": ["a", "b"]},
    )

    assert response.status == 200
    assert (await response.json())["labels"] == {"size": "L"}
    request = received(widget_server, "ReplaceWidgetLabels", widgets_pb2.ReplaceWidgetLabelsRequest)
    assert request.id == "w-9"
    assert dict(request.labels) == {"size": "L"}
    assert list(request.tags) == ["a", "b"]


async def test_patch_fills_update_mask_with_the_leaf_paths_the_body_sets(
    gateway: Client, widget_server: WidgetServer
) -> None:
    response = await gateway.patch(
        "/v1/widgets/w-5", json={"name": "Renamed", "dimensions": {"width_mm": 7}}
    )

    assert response.status == 200
    request = received(widget_server, "UpdateWidget", widgets_pb2.UpdateWidgetRequest)
    assert request.widget.id == "w-5"  # nested path variable
    assert request.widget.name == "Renamed"
    # Not `dimensions`: that would clear height_mm, which the client did not send.
    assert sorted(request.update_mask.paths) == ["dimensions.width_mm", "name"]


async def test_patch_mask_stops_at_maps_lists_well_known_types_nulls_and_empty_objects(
    gateway: Client, widget_server: WidgetServer
) -> None:
    body = {
        "labels": {"size": "L"},
        "tags": ["a"],
        "stockByWarehouse": {"north": 1},
        "attributes": {"fragile": True},
        "warranty": "3600s",
        "limit": 9,
        "nickname": None,
        "dimensions": {},
    }

    response = await gateway.patch("/v1/widgets/w-5", json=body)

    assert response.status == 200
    request = received(widget_server, "UpdateWidget", widgets_pb2.UpdateWidgetRequest)
    assert sorted(request.update_mask.paths) == [
        "attributes",
        "dimensions",
        "labels",
        "limit",
        "nickname",
        "stock_by_warehouse",
        "tags",
        "warranty",
    ]
    assert not request.widget.HasField("nickname")  # null: named in the mask, so cleared


async def test_patch_keeps_an_update_mask_given_explicitly(
    gateway: Client, widget_server: WidgetServer
) -> None:
    response = await gateway.patch(
        "/v1/widgets/w-5?update_mask=reserved_count", json={"name": "Ignored", "reserved_count": 0}
    )

    assert response.status == 200
    request = received(widget_server, "UpdateWidget", widgets_pb2.UpdateWidgetRequest)
    assert list(request.update_mask.paths) == ["reserved_count"]


async def test_an_rpc_returning_empty_answers_204_without_a_body(
    gateway: Client, widget_server: WidgetServer
) -> None:
    response = await gateway.delete("/v1/widgets/w-3?force=true")

    assert response.status == 204
    assert await response.read() == b""
    request = received(widget_server, "DeleteWidget", widgets_pb2.DeleteWidgetRequest)
    assert (request.id, request.force) == ("w-3", True)


async def test_a_custom_method_is_routed_by_its_verb_with_or_without_a_body(
    gateway: Client, widget_server: WidgetServer
) -> None:
    empty = await gateway.post("/v1/widgets/w-4:cancel")
    with_reason = await gateway.post("/v1/widgets/w-4:cancel", json={"reason": "broken"})

    assert (empty.status, with_reason.status) == (200, 200)
    assert (await with_reason.json())["name"] == "broken"
    request = received(widget_server, "CancelWidget", widgets_pb2.CancelWidgetRequest)
    assert (request.id, request.reason) == ("w-4", "broken")


async def test_the_custom_verb_is_not_read_as_part_of_an_id(gateway: Client) -> None:
    response = await gateway.get("/v1/widgets/w-4:cancel")

    assert response.status == 405
    assert response.headers["Allow"] == "POST"


async def test_the_success_status_option_answers_201(gateway: Client) -> None:
    response = await gateway.post(
        "/v1/widget-orders",
        json={"lines": [{"widget_id": "w-1", "quantity": 3}]},
        headers={"Idempotency-Key": "order-1"},
    )

    assert response.status == 201
    assert await response.json() == {
        "id": "o-1",
        "lines": [{"widget_id": "w-1", "quantity": 3}],
        "total": 300,
    }


async def test_response_body_answers_with_that_field_alone(gateway: Client) -> None:
    response = await gateway.get("/v1/widgets/w-1/parts")

    assert response.status == 200
    assert await response.json() == [
        {"number": BIG_PRICE, "name": "axle"},
        {"number": 2, "name": "wheel"},
    ]


async def test_a_service_only_rpc_has_no_route_despite_its_http_option(
    gateway: Client, widget_server: WidgetServer
) -> None:
    response = await gateway.post("/v1/widgets:reindex")

    assert response.status == 404
    assert "ReindexWidgets" not in [call.method for call in widget_server.servicer.calls]


async def test_two_members_of_one_oneof_in_the_query_are_a_400_naming_both(
    gateway: Client, widget_server: WidgetServer
) -> None:
    response = await gateway.get(
        "/v1/widgets/w-1", params={"revision_id": "r-3", "as_of": "2026-01-01T00:00:00Z"}
    )

    assert response.status == 400
    detail = (await response.json())["detail"]
    assert "revision_id" in detail
    assert "as_of" in detail
    assert "GetWidget" not in [call.method for call in widget_server.servicer.calls]


async def test_one_member_of_each_oneof_is_accepted(
    gateway: Client, widget_server: WidgetServer
) -> None:
    response = await gateway.get("/v1/widgets/w-1", params={"bin_id": "b-1", "revision_id": "r"})

    assert response.status == 200
    request = received(widget_server, "GetWidget", widgets_pb2.GetWidgetRequest)
    assert (request.WhichOneof("location"), request.WhichOneof("version")) == (
        "bin_id",
        "revision_id",
    )


async def test_a_query_member_of_a_oneof_the_path_also_sets_is_a_400(
    gateway: Client, widget_server: WidgetServer
) -> None:
    response = await gateway.get("/v0/shelves/s-1/widgets/w-1", params={"bin_id": "b-1"})

    assert response.status == 400
    detail = (await response.json())["detail"]
    assert "shelf_id" in detail
    assert "bin_id" in detail
    assert "GetWidget" not in [call.method for call in widget_server.servicer.calls]
