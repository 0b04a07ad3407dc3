"""JSON as the contract wants it: snake_case, defaults printed, 64-bit integers as numbers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import any_pb2, field_mask_pb2, wrappers_pb2

from common.proto_json import JsonMappingError, merge_json, message_to_json
from microcommerce.testing.v1 import widgets_pb2
from tests.support.widget_service import BIG_PRICE, MAX_UINT64, sample_widget


def test_every_64_bit_integer_is_a_json_number_wherever_it_sits() -> None:
    out = message_to_json(sample_widget("w-1"))

    assert out["price"] == BIG_PRICE
    assert out["view_count"] == MAX_UINT64
    assert out["balance"] == -(2**40)
    assert out["serial"] == 7
    assert out["part_numbers"] == [1, BIG_PRICE]
    assert out["stock_by_warehouse"] == {"north": 3, "south": BIG_PRICE}
    assert out["dimensions"]["width_mm"] == 120
    assert out["limit"] == BIG_PRICE  # google.protobuf.Int64Value
    assert '"9007199254740993"' not in json.dumps(out)


def test_fields_at_their_default_are_printed_and_unset_optional_ones_are_not() -> None:
    out = message_to_json(widgets_pb2.Widget(id="w-1"))

    assert out["reserved_count"] == 0
    assert out["active"] is False
    assert out["price"] == 0
    assert out["tags"] == []
    assert out["labels"] == {}
    assert out["color"] == "COLOR_UNSPECIFIED"
    assert "nickname" not in out
    assert "create_time" not in out


def test_names_are_snake_case_enums_names_and_timestamps_rfc_3339() -> None:
    out = message_to_json(sample_widget("w-1"))

    assert "reserved_count" in out
    assert "reservedCount" not in out
    assert out["color"] == "COLOR_GREEN"
    assert out["create_time"] == "2026-11-25T06:39:00.500Z"


def test_input_only_fields_are_never_returned() -> None:
    assert "secret" not in message_to_json(sample_widget("w-1"))


def test_field_masks_print_in_snake_case() -> None:
    request = widgets_pb2.UpdateWidgetRequest(
        update_mask=field_mask_pb2.FieldMask(paths=["reserved_count", "dimensions.width_mm"])
    )

    assert message_to_json(request)["update_mask"] == "reserved_count,dimensions.width_mm"


def test_int64_inside_an_any_is_a_number_too() -> None:
    packed = any_pb2.Any()
    packed.Pack(widgets_pb2.WidgetPart(number=BIG_PRICE, name="axle"))
    wrapped = any_pb2.Any()
    wrapped.Pack(wrappers_pb2.Int64Value(value=BIG_PRICE))

    assert message_to_json(packed) == {
        "@type": "type.googleapis.com/microcommerce.testing.v1.WidgetPart",
        "number": BIG_PRICE,
        "name": "axle",
    }
    assert message_to_json(wrapped)["value"] == BIG_PRICE


def test_json_numbers_and_numeric_strings_both_parse_into_int64() -> None:
    request = widgets_pb2.CreateWidgetRequest()

    merge_json({"widget": {"price": BIG_PRICE, "view_count": str(MAX_UINT64)}}, request)

    assert (request.widget.price, request.widget.view_count) == (BIG_PRICE, MAX_UINT64)


def test_snake_case_field_masks_are_accepted_in_a_body() -> None:
    request = widgets_pb2.UpdateWidgetRequest()

    merge_json({"update_mask": "reserved_count,dimensions.width_mm"}, request)

    assert list(request.update_mask.paths) == ["reserved_count", "dimensions.width_mm"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"nope": 1}, "body: unknown field 'nope'"),
        ({"widget": {"nope": 1}}, "widget: unknown field 'nope'"),
        ({"widget": {"dimensions": {"depth": 1}}}, "widget.dimensions: unknown field 'depth'"),
        ({"widget": []}, "widget: expected a JSON object"),
        ({"widget": {"price": "cheap"}}, "widget.price:"),
        ({"widget": {"price": 1.5}}, "widget.price:"),
        ({"widget": {"price": 2**64}}, "widget.price:"),
        ({"widget": {"name": 5}}, "widget.name:"),
        ({"widget": {"active": "yes"}}, "widget.active:"),
        ({"widget": {"color": "COLOR_PINK"}}, "widget.color:"),
        ({"widget": {"tags": "one"}}, "widget.tags:"),
        ({"widget": {"create_time": "yesterday"}}, "widget.create_time:"),
    ],
)
def test_json_that_does_not_fit_the_message_is_refused_naming_the_field(
    body: dict[str, Any], message: str
) -> None:
    with pytest.raises(JsonMappingError) as error:
        merge_json(body, widgets_pb2.CreateWidgetRequest())

    assert str(error.value).startswith(message)
    assert "Available Fields" not in str(error.value)


def test_unknown_fields_inside_repeated_and_map_values_are_refused() -> None:
    with pytest.raises(JsonMappingError, match=r"lines\[1\]: unknown field 'qty'"):
        merge_json({"lines": [{"quantity": 1}, {"qty": 2}]}, widgets_pb2.OrderWidgetsRequest())


def test_a_body_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(JsonMappingError, match="expected a JSON object"):
        merge_json([1, 2], widgets_pb2.OrderWidgetsRequest())
