"""Request fields set from path and query text: dotted names and every scalar type."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.field_paths import (
    FieldPathError,
    resolve,
    scalar_from_text,
    set_from_text,
    update_mask_paths,
)
from microcommerce.testing.v1 import widgets_pb2

LIST = widgets_pb2.ListWidgetsRequest.DESCRIPTOR
WIDGET = widgets_pb2.Widget.DESCRIPTOR


def set_query(name: str, *values: str) -> widgets_pb2.ListWidgetsRequest:
    request = widgets_pb2.ListWidgetsRequest()
    set_from_text(request, resolve(LIST, name), list(values))
    return request


@pytest.mark.parametrize(
    ("field", "text", "expected"),
    [
        ("page_size", "20", 20),
        ("page_size", "-3", -3),
        ("min_price", "9007199254740993", 2**53 + 1),
        ("min_views", "18446744073709551615", 2**64 - 1),
        ("in_stock", "true", True),
        ("in_stock", "FALSE", False),
        ("in_stock", "1", True),
        ("in_stock", "0", False),
        ("color", "COLOR_RED", widgets_pb2.COLOR_RED),
        ("color", "2", widgets_pb2.COLOR_GREEN),
        ("min_weight_kg", "1.5", 1.5),
        ("cursor", "aGk", b"hi"),
        ("cursor", "_-8=", b"\xff\xef"),
        ("page_token", "a b", "a b"),
    ],
)
def test_text_becomes_the_fields_type(field: str, text: str, expected: Any) -> None:
    assert scalar_from_text(LIST.fields_by_name[field], text) == expected


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("page_size", "2147483648"),
        ("page_size", "1.0"),
        ("page_size", " 1"),
        ("min_views", "-1"),
        ("min_price", "12abc"),
        ("in_stock", "yes"),
        ("color", "COLOR_PINK"),
        ("color", "99"),
        ("min_weight_kg", "heavy"),
        ("min_weight_kg", " 1"),
        ("cursor", "not base64!"),
    ],
)
def test_text_that_does_not_fit_the_field_is_refused(field: str, text: str) -> None:
    with pytest.raises(FieldPathError):
        scalar_from_text(LIST.fields_by_name[field], text)


def test_a_dotted_name_reaches_into_nested_messages() -> None:
    request = set_query("filter.min_size.width_mm", "30")

    assert request.filter.min_size.width_mm == 30


def test_proto3_json_names_are_accepted_as_well_as_proto_names() -> None:
    assert set_query("filter.namePrefix", "ab").filter.name_prefix == "ab"


def test_a_repeated_field_takes_every_value_in_order() -> None:
    assert list(set_query("ids", "3", "1").ids) == [3, 1]
    assert list(set_query("filter.colors", "COLOR_RED", "COLOR_BLUE").filter.colors) == [1, 3]


def test_a_singular_field_given_twice_is_refused() -> None:
    with pytest.raises(FieldPathError, match="one value"):
        set_query("page_size", "1", "2")


def test_an_optional_field_set_to_its_default_is_present() -> None:
    request = set_query("featured", "false")

    assert request.HasField("featured")
    assert not set_query("page_size", "1").HasField("max_price")


def test_well_known_types_are_set_from_their_json_text() -> None:
    assert set_query("created_after", "2024-01-01T00:00:00Z").created_after.seconds == 1704067200
    assert set_query("min_reserved", "4").min_reserved.value == 4
    assert list(set_query("read_mask", "name,dimensions.width_mm").read_mask.paths) == [
        "name",
        "dimensions.width_mm",
    ]


def test_a_malformed_timestamp_is_refused() -> None:
    with pytest.raises(FieldPathError, match="Timestamp"):
        set_query("created_after", "yesterday")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nope", "has no field 'nope'"),
        ("filter.nope", "has no field 'nope'"),
        ("filter", "is a message"),
        ("page_size.x", "has no fields"),
    ],
)
def test_a_name_that_leads_nowhere_settable_is_refused(name: str, message: str) -> None:
    with pytest.raises(FieldPathError, match=message):
        resolve(LIST, name)


def test_maps_and_repeated_messages_cannot_be_reached_from_text() -> None:
    with pytest.raises(FieldPathError):
        resolve(WIDGET, "labels")
    with pytest.raises(FieldPathError):
        resolve(widgets_pb2.OrderWidgetsRequest.DESCRIPTOR, "lines.quantity")


def test_setting_a_second_member_of_a_oneof_is_refused_naming_both() -> None:
    get = widgets_pb2.GetWidgetRequest.DESCRIPTOR
    request = widgets_pb2.GetWidgetRequest(shelf_id="s-1")

    with pytest.raises(FieldPathError, match=r"bin_id and shelf_id .* oneof location"):
        set_from_text(request, resolve(get, "bin_id"), ["b-1"])
    assert request.shelf_id == "s-1"


def test_setting_the_same_member_of_a_oneof_again_is_allowed() -> None:
    get = widgets_pb2.GetWidgetRequest.DESCRIPTOR
    request = widgets_pb2.GetWidgetRequest(shelf_id="s-1")

    set_from_text(request, resolve(get, "shelf_id"), ["s-2"])

    assert request.shelf_id == "s-2"


@pytest.mark.parametrize(
    ("body", "paths"),
    [
        ({"name": "x", "nickname": None}, ["name", "nickname"]),
        (
            {"dimensions": {"width_mm": 1, "heightMm": 2}},
            ["dimensions.width_mm", "dimensions.height_mm"],
        ),
        ({"dimensions": {}}, ["dimensions"]),
        ({"dimensions": None}, ["dimensions"]),
        ({"labels": {"a": "b"}, "part_numbers": [1]}, ["labels", "part_numbers"]),
        ({"create_time": "2026-01-01T00:00:00Z", "limit": 3}, ["create_time", "limit"]),
        ({"attributes": {"nested": {"deep": 1}}}, ["attributes"]),
    ],
)
def test_update_mask_paths_are_the_leaves_the_body_sets(
    body: dict[str, Any], paths: list[str]
) -> None:
    assert update_mask_paths(WIDGET, body) == paths
