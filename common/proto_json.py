"""Messages to and from JSON as CONTRACT.md wants it.

That is proto3 JSON (``google.protobuf.json_format``) with the proto field names (snake_case),
fields at their default value printed, 64-bit integers as JSON numbers rather than strings,
field masks in snake_case, and unknown input fields rejected with a readable message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from google.protobuf import descriptor_pool, json_format
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
    """JSON that does not fit the message: unknown field, wrong type, bad value."""


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
    """Merge a JSON object into ``message``; ``where`` names it in errors (e.g. ``widget``)."""
    _check_object(descriptor_of(message), data, where)
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=False)
    except (json_format.ParseError, ValueError, TypeError) as error:
        raise JsonMappingError(_readable(str(error), where)) from None


def _check_object(descriptor: Descriptor, data: Any, where: str) -> None:
    """Reject what json_format would accept or report badly, and normalise field masks.

    json_format names unknown fields with lowerCamel suggestions and takes ``[]`` for a
    message; it also wants lowerCamel field masks, while our clients write snake_case.
    """
    if not isinstance(data, dict):
        raise JsonMappingError(f"{where or 'body'}: expected a JSON object")
    for key, value in data.items():
        field = find_field(descriptor, key)
        if field is None:
            raise JsonMappingError(f"{where or 'body'}: unknown field {key!r}")
        if value is None or field.type != _T.TYPE_MESSAGE:
            continue
        inner = f"{where}.{field.name}" if where else field.name
        if is_map(field):
            value_field = message_type(field).fields_by_name["value"]
            if isinstance(value, dict) and _is_plain_message(value_field):
                for item_key, item in value.items():
                    if item is not None:
                        _check_object(message_type(value_field), item, f"{inner}[{item_key}]")
            continue
        if message_type(field).full_name == _FIELD_MASK:
            if field.is_repeated and isinstance(value, list):
                data[key] = [_camel_mask(v) for v in value]
            else:
                data[key] = _camel_mask(value)
            continue
        if not _is_plain_message(field):
            continue
        if field.is_repeated:
            if isinstance(value, list):
                for index, item in enumerate(value):
                    if item is not None:
                        _check_object(message_type(field), item, f"{inner}[{index}]")
            continue
        _check_object(message_type(field), value, inner)


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


def _readable(message: str, where: str) -> str:
    # "Failed to parse widget field: Failed to parse price field: Couldn't parse integer: 1.5
    # at CreateWidgetRequest.widget.price.." -> "widget.price: Couldn't parse integer: 1.5"
    names = [where] if where else []
    while match := _FAILED_FIELD.match(message):
        names.append(match.group(1))
        message = message[match.end() :]
    message = _LOCATION.sub("", message.strip()).rstrip(".")
    return f"{'.'.join(names)}: {message}" if names else message
