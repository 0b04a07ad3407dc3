"""Messages to and from JSON as CONTRACT.md wants it.

That is proto3 JSON (``google.protobuf.json_format``) with the proto field names (snake_case),
fields at their default value printed, 64-bit integers as JSON numbers rather than strings,
field masks in snake_case, and unknown input fields rejected with a readable message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from google.protobuf import descriptor_pool, duration_pb2, json_format, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from common.descriptors import (
    INPUT_ONLY,
    WRAPPER_TYPES,
    descriptor_of,
    field_behaviors,
    find_field,
    is_map,
    message_type,
)
from common.proto_json_fast import Fallback, writer_for

_T = FieldDescriptor
_INT64_TYPES = frozenset(
    (_T.TYPE_INT64, _T.TYPE_UINT64, _T.TYPE_SINT64, _T.TYPE_FIXED64, _T.TYPE_SFIXED64)
)
_INT64_WRAPPERS = frozenset(("google.protobuf.Int64Value", "google.protobuf.UInt64Value"))
_ANY = "google.protobuf.Any"
_FIELD_MASK = "google.protobuf.FieldMask"
# Well-known types whose JSON form is not an object of their fields: json_format handles them
# whole, and neither walk below looks inside them (beyond the cases named above).
_SPECIAL_JSON = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        _FIELD_MASK,
        _ANY,
        *WRAPPER_TYPES,
    }
)


class JsonMappingError(ValueError):
    """JSON that does not fit the message: unknown field, wrong type, bad value.

    ``field`` is the offending field's path in the request (``items[0].quantity``; empty for
    the body itself) and ``description`` what was expected there, in words.
    """

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field or 'body'}: {description}")
        self.field = field
        self.description = description


# --- Output -------------------------------------------------------------------------------


def message_to_json(message: Message) -> Any:
    """The message as a JSON value (usually a dict) in the contract's flavour of proto3 JSON.

    Through the compiled writer of its type when there is one (``proto_json_fast``, the same
    output several times faster), else through json_format and the adjusting walk below.
    """
    write = writer_for(descriptor_of(message))
    if write is not None:
        try:
            return write(message)
        except Fallback:
            pass
    return slow_message_to_json(message)


def slow_message_to_json(message: Message) -> Any:
    """``message_to_json`` through json_format and the adjusting walk, for any message."""
    value = json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        # "reserved": 0 rather than a missing key; fields with presence stay absent when unset.
        always_print_fields_with_no_presence=True,
    )
    return _adjust_message(message, value)


def _adjust_message(message: Message, value: Any) -> Any:
    descriptor = descriptor_of(message)
    name = descriptor.full_name
    if name in _INT64_WRAPPERS:
        return int(value) if isinstance(value, str) else value
    if name == _FIELD_MASK:
        # json_format writes lowerCamel paths; our API names fields in snake_case.
        return ",".join(getattr(message, "paths"))  # noqa: B009  # FieldMask, typed as Message
    if name == _ANY:
        return _adjust_any(message, value)
    if name in _SPECIAL_JSON or not isinstance(value, dict) or not _needs_output_walk(descriptor):
        return value
    for field in descriptor.fields:
        if INPUT_ONLY in field_behaviors(field):
            # Never returned (AIP-203), whatever the service sent: card numbers, passwords.
            value.pop(field.name, None)
        elif field.name in value:
            value[field.name] = _adjust_field(
                field, getattr(message, field.name), value[field.name]
            )
    return value


def _adjust_field(field: FieldDescriptor, native: Any, value: Any) -> Any:
    if is_map(field):
        value_field = message_type(field).fields_by_name["value"]
        key_field = message_type(field).fields_by_name["key"]
        return {
            key: _adjust_single(value_field, native[_map_key(key_field, key)], item)
            for key, item in value.items()
        }
    if field.is_repeated:
        return [_adjust_single(field, n, v) for n, v in zip(native, value, strict=True)]
    return _adjust_single(field, native, value)


def _adjust_single(field: FieldDescriptor, native: Any, value: Any) -> Any:
    if field.type == _T.TYPE_MESSAGE:
        return _adjust_message(native, value)
    if field.type in _INT64_TYPES and isinstance(value, str):
        return int(value)
    return value


def _map_key(key_field: FieldDescriptor, key: str) -> Any:
    # JSON object keys are strings; the map's own keys may be integers or booleans.
    if key_field.type == _T.TYPE_BOOL:
        return key == "true"
    if key_field.type == _T.TYPE_STRING:
        return key
    return int(key)


def _adjust_any(message: Message, value: Any) -> Any:
    type_url = str(value.get("@type", "")) if isinstance(value, dict) else ""
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(type_url.rpartition("/")[2])
    except KeyError:
        return value  # a type this process does not know: json_format printed what it could
    inner = GetMessageClass(descriptor)()
    if not message.Unpack(inner):  # type: ignore[attr-defined]  # Any, typed as Message
        return value
    if descriptor.full_name in _SPECIAL_JSON or descriptor.full_name in _INT64_WRAPPERS:
        return {"@type": type_url, "value": _adjust_message(inner, value.get("value"))}
    fields = {k: v for k, v in value.items() if k != "@type"}
    return {"@type": type_url, **_adjust_message(inner, fields)}


_walk_needed: dict[str, bool] = {}


def _needs_output_walk(descriptor: Descriptor) -> bool:
    """Whether anything under the type prints differently from json_format: 64-bit integers,
    field masks, Any, input-only fields. Most types have none, and skip the walk."""
    name = descriptor.full_name
    if name not in _walk_needed:
        _walk_needed[name] = _reaches(descriptor, _prints_differently, set())
    return _walk_needed[name]


def _prints_differently(field: FieldDescriptor) -> bool:
    if field.type in _INT64_TYPES or INPUT_ONLY in field_behaviors(field):
        return True
    return field.type == _T.TYPE_MESSAGE and message_type(field).full_name in (
        _INT64_WRAPPERS | {_FIELD_MASK, _ANY}
    )


def _reaches(
    descriptor: Descriptor, wanted: Callable[[FieldDescriptor], bool], seen: set[str]
) -> bool:
    # Depth-first over the message graph; `seen` stops at recursive types.
    seen.add(descriptor.full_name)
    for field in descriptor.fields:
        if wanted(field):
            return True
        nested = field.message_type
        if nested is not None and nested.full_name not in seen and _reaches(nested, wanted, seen):
            return True
    return False


# --- Input --------------------------------------------------------------------------------


def merge_json(data: Any, message: Message, *, where: str = "") -> None:
    """Merge a JSON object into ``message``; ``where`` names it in errors (e.g. ``widget``).

    Every value is checked against its field's JSON form first, so a mismatch is reported
    with its path and what was expected ("expected an integer from 0 to 4294967295"), never in
    the words of the Python parser underneath.
    """
    _check_object(descriptor_of(message), data, where)
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=False)
    except (json_format.ParseError, ValueError, TypeError) as error:
        field, description = _readable(str(error), where)
        raise JsonMappingError(field, description) from None


def _check_object(descriptor: Descriptor, data: Any, where: str) -> None:
    """Reject what json_format would accept or report badly, and normalise field masks.

    json_format names unknown fields with lowerCamel suggestions, takes ``[]`` for a message
    and words type errors as Python does; it also wants lowerCamel field masks, while our
    clients write snake_case.
    """
    if not isinstance(data, dict):
        raise JsonMappingError(where, f"expected a JSON object, got {_json_kind(data)}")
    for key, value in data.items():
        field = find_field(descriptor, key)
        if field is None:
            raise JsonMappingError(where, f"unknown field {key!r}")
        inner = f"{where}.{field.name}" if where else field.name
        if value is None:
            continue  # the field's default, as proto3 JSON says
        if is_map(field):
            if not isinstance(value, dict):
                raise JsonMappingError(inner, f"expected a JSON object, got {_json_kind(value)}")
            value_field = message_type(field).fields_by_name["value"]
            for item_key, item in value.items():
                _check_single(value_field, item, f"{inner}[{item_key}]")
            continue
        if field.is_repeated:
            if not isinstance(value, list):
                raise JsonMappingError(inner, f"expected a JSON array, got {_json_kind(value)}")
            if field.type == _T.TYPE_MESSAGE and message_type(field).full_name == _FIELD_MASK:
                data[key] = [_camel_mask(v) for v in value]
            for index, item in enumerate(value):
                _check_single(field, item, f"{inner}[{index}]")
            continue
        if field.type == _T.TYPE_MESSAGE and message_type(field).full_name == _FIELD_MASK:
            _check_single(field, value, inner)
            data[key] = _camel_mask(value)
            continue
        _check_single(field, value, inner)


def _check_single(field: FieldDescriptor, value: Any, where: str) -> None:
    """One value (not a list or map) of ``field``: refused with what was expected."""
    if value is None:
        if field.is_repeated or is_map(field):
            raise JsonMappingError(where, "expected a value, got null")
        return
    if field.type == _T.TYPE_MESSAGE:
        name = message_type(field).full_name
        if _is_plain_message(field):
            _check_object(message_type(field), value, where)
            return
        expected = _check_well_known(name, value)
    else:
        expected = _check_scalar(field, value)
    if expected is not None:
        raise JsonMappingError(where, f"expected {expected}, got {_json_kind(value)}")


_INT_RANGES: dict[int, tuple[int, int]] = {
    **dict.fromkeys((_T.TYPE_INT32, _T.TYPE_SINT32, _T.TYPE_SFIXED32), (-(2**31), 2**31 - 1)),
    **dict.fromkeys((_T.TYPE_UINT32, _T.TYPE_FIXED32), (0, 2**32 - 1)),
    **dict.fromkeys((_T.TYPE_INT64, _T.TYPE_SINT64, _T.TYPE_SFIXED64), (-(2**63), 2**63 - 1)),
    **dict.fromkeys((_T.TYPE_UINT64, _T.TYPE_FIXED64), (0, 2**64 - 1)),
}
_INTEGER_TEXT = re.compile(r"-?[0-9]+")
_FLOAT_WORDS = frozenset(("NaN", "Infinity", "-Infinity"))
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
_WRAPPED: dict[str, int] = {
    "google.protobuf.DoubleValue": _T.TYPE_DOUBLE,
    "google.protobuf.FloatValue": _T.TYPE_FLOAT,
    "google.protobuf.Int64Value": _T.TYPE_INT64,
    "google.protobuf.UInt64Value": _T.TYPE_UINT64,
    "google.protobuf.Int32Value": _T.TYPE_INT32,
    "google.protobuf.UInt32Value": _T.TYPE_UINT32,
    "google.protobuf.BoolValue": _T.TYPE_BOOL,
    "google.protobuf.StringValue": _T.TYPE_STRING,
    "google.protobuf.BytesValue": _T.TYPE_BYTES,
}


def _check_scalar(field: FieldDescriptor, value: Any) -> str | None:
    """What the field expects when ``value`` does not fit it, else None."""
    if field.type == _T.TYPE_ENUM:
        enum = field.enum_type
        assert enum is not None  # an enum field always has its type
        if isinstance(value, str) and value in enum.values_by_name:
            return None
        if _is_int(value) and value in enum.values_by_number:
            return None
        return "one of " + ", ".join(enum.values_by_name)
    return _check_kind(field.type, value)


def _check_kind(kind: int, value: Any) -> str | None:
    if kind == _T.TYPE_STRING:
        return None if isinstance(value, str) else "a string"
    if kind == _T.TYPE_BOOL:
        return None if isinstance(value, bool) else "true or false"
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        number: Any = value
        text_integer = isinstance(value, str) and _INTEGER_TEXT.fullmatch(value)
        if text_integer or (isinstance(value, float) and value.is_integer()):
            number = int(value)
        if _is_int(number) and low <= number <= high:
            return None
        return f"an integer from {low} to {high}"
    if kind in (_T.TYPE_DOUBLE, _T.TYPE_FLOAT):
        if _is_number(value) or value in _FLOAT_WORDS:
            return None
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                return "a number"
            return None
        return "a number"
    if kind == _T.TYPE_BYTES:
        ok = isinstance(value, str) and _BASE64.fullmatch(value.replace("\n", "")) is not None
        return None if ok else "a base64 string"
    return None


def _check_well_known(name: str, value: Any) -> str | None:
    if name in _WRAPPED:
        return _check_kind(_WRAPPED[name], value)
    if name == "google.protobuf.Timestamp":
        return _parses(
            timestamp_pb2.Timestamp(), value, "an RFC 3339 time such as 2026-01-31T12:00:00Z"
        )
    if name == "google.protobuf.Duration":
        return _parses(duration_pb2.Duration(), value, 'a duration in seconds such as "1.5s"')
    if name == _FIELD_MASK:
        return None if isinstance(value, str) else "a comma-separated list of field names"
    if name in ("google.protobuf.Struct", _ANY):
        return None if isinstance(value, dict) else "a JSON object"
    if name == "google.protobuf.ListValue":
        return None if isinstance(value, list) else "a JSON array"
    return None  # google.protobuf.Value holds any JSON


def _parses(holder: Any, value: Any, expected: str) -> str | None:
    if not isinstance(value, str):
        return expected
    try:
        holder.FromJsonString(value)
    except ValueError:
        return expected
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_kind(value: Any) -> str:
    """A JSON value named for a person: 'a string ("x")', 'an object', 'null'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {json.dumps(shown, ensure_ascii=False)}"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _is_plain_message(field: FieldDescriptor) -> bool:
    return field.type == _T.TYPE_MESSAGE and message_type(field).full_name not in _SPECIAL_JSON


def _camel_mask(value: Any) -> Any:
    # "display_name,size.width_mm" -> "displayName,size.widthMm", which json_format turns
    # back into snake_case paths; lowerCamel input passes through unchanged.
    if not isinstance(value, str):
        return value
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), value)


_FAILED_FIELD = re.compile(r"Failed to parse (\w+) field: ")
_LOCATION = re.compile(r"\s+at [\w.\[\]]+\.*$")


def _readable(message: str, where: str) -> tuple[str, str]:
    # "Failed to parse widget field: Failed to parse price field: Couldn't parse integer: 1.5
    # at CreateWidgetRequest.widget.price.." -> ("widget.price", "Couldn't parse integer: 1.5").
    # Only values the checks above let through reach here, which json_format rarely refuses.
    names = [where] if where else []
    while match := _FAILED_FIELD.match(message):
        names.append(match.group(1))
        message = message[match.end() :]
    message = _LOCATION.sub("", message.strip()).rstrip(".")
    return ".".join(names), message
