"""Wrong JSON types in every field of every REST request: a 400 in the caller's words.

For each request message a route reads from JSON, every field (nested ones included) gets each
JSON type it cannot hold. The error must name the field's exact path and say what was
expected, never in the words of the Python parser underneath ("int() argument ...",
"expected string or bytes-like object").
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message_factory import GetMessageClass

from common.descriptors import is_map, message_type
from common.proto_json import JsonMappingError, merge_json
from gateway.routes import build_route_table, discover_services

_T = FieldDescriptor
PYTHON_WORDING = re.compile(
    r"int\(\)|float\(\)|bytes-like|NoneType|object of type|Traceback|argument must be|"
    r"'(dict|list|int|str|float|bool)'|not subscriptable|has no attribute|Couldn't parse|"
    r"Failed to parse|unhashable",
)
# One JSON value of every type, and values of the right type but the wrong kind.
SAMPLES: tuple[Any, ...] = ({"a": 1}, [1], "text", 1.5, 7, True, "")


def _fields(descriptor: Descriptor, prefix: str, seen: frozenset[str]) -> Iterator[tuple[str, Any]]:
    """(path, field) for every field reachable from the message, maps and lists too."""
    for field in descriptor.fields:
        path = f"{prefix}{field.name}"
        yield path, field
        nested = field.message_type
        if (
            nested is not None
            and not is_map(field)
            and not field.is_repeated
            and nested.full_name not in seen
            and not nested.full_name.startswith("google.protobuf.")
        ):
            yield from _fields(nested, f"{path}.", seen | {nested.full_name})


def _fits(field: FieldDescriptor, value: Any) -> bool:
    """Whether ``value`` has a JSON type proto3 JSON accepts for one value of the field."""
    kind = field.type
    if kind == _T.TYPE_STRING:
        return isinstance(value, str)
    if kind == _T.TYPE_BOOL:
        return isinstance(value, bool)
    if kind == _T.TYPE_MESSAGE:
        name = message_type(field).full_name
        if name == "google.protobuf.FieldMask":
            return isinstance(value, str)
        return isinstance(value, dict) and not name.startswith("google.protobuf.")
    if kind == _T.TYPE_ENUM:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind in (_T.TYPE_DOUBLE, _T.TYPE_FLOAT):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, int) and not isinstance(value, bool)  # integers


def _body(path: str, value: Any) -> dict[str, Any]:
    body: dict[str, Any] = {}
    holder = body
    *parents, leaf = path.split(".")
    for name in parents:
        holder = holder.setdefault(name, {})
    holder[leaf] = value
    return body


def _cases() -> Iterator[Any]:
    table = build_route_table(discover_services())
    seen: set[str] = set()
    for route in table.routes:
        request_type = route.method.input_type
        if not route.body or request_type.full_name in seen:
            continue
        seen.add(request_type.full_name)
        for path, field in _fields(request_type, "", frozenset({request_type.full_name})):
            if is_map(field):
                continue  # none of our requests has one; maps are covered in test_proto_json
            if field.is_repeated:  # a single value where a list belongs
                yield pytest.param(request_type, path, path, {"a": 1}, id=f"{path}=object")
            for value in SAMPLES:
                if _fits(field, value):
                    continue  # the right JSON type: the services judge the value
                if field.is_repeated:
                    # A list holding a wrong item: the item is named.
                    yield pytest.param(request_type, path, f"{path}[0]", [value], id=f"{path}[0]")
                else:
                    yield pytest.param(request_type, path, path, value, id=f"{path}={value!r}")


@pytest.mark.parametrize(("request_type", "path", "named", "value"), list(_cases()))
def test_a_wrong_type_names_the_field_and_says_what_was_expected(
    request_type: Descriptor, path: str, named: str, value: Any
) -> None:
    with pytest.raises(JsonMappingError) as caught:
        merge_json(_body(path, value), GetMessageClass(request_type)())

    error = caught.value
    assert not PYTHON_WORDING.search(str(error)), str(error)
    assert error.field == named, str(error)
    assert error.description.startswith("expected "), str(error)


def test_every_field_of_every_json_request_is_tried() -> None:
    cases = list(_cases())
    named = {case.values[1] for case in cases}

    assert "payment_method.card.number" in named
    assert "items" in named
    assert len(cases) > 300
