"""A compiled message → JSON writer: the same dict as ``proto_json``'s json_format path, faster.

``json_format.MessageToDict`` interprets every descriptor on every call, and our contract's
adjustments (64-bit integers as numbers, input-only fields dropped) walk the result a second
time: about 90 µs for one product, most of the gateway's transcoding cost. This builds, once per
message type, one closure per field that writes the field's final JSON value directly.

It covers the types our responses are made of (strings, booleans, integers, enums, nested
messages, repeated and map fields, Timestamp and Duration). Anything else (floats, bytes, the
other well-known types, extensions, an enum value the descriptor does not name, an enum with
JSON options) is handed to the general path, whole or for that one sub-message, so the output
is always what ``proto_json`` writes; ``tests/unit/common/test_proto_json_fast.py`` checks it
byte for byte over every response message of the API.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from common.descriptors import INPUT_ONLY, field_behaviors, is_map, message_type

_T = FieldDescriptor
_INTEGERS = frozenset(
    (
        _T.TYPE_INT32,
        _T.TYPE_SINT32,
        _T.TYPE_SFIXED32,
        _T.TYPE_UINT32,
        _T.TYPE_FIXED32,
        _T.TYPE_INT64,
        _T.TYPE_SINT64,
        _T.TYPE_SFIXED64,
        _T.TYPE_UINT64,
        _T.TYPE_FIXED64,
    )
)
# Printed by the message's own ToJsonString, exactly as json_format does for them.
_STRING_FORM = frozenset(("google.protobuf.Timestamp", "google.protobuf.Duration"))

Writer = Callable[[Message], dict[str, Any]]
Convert = Callable[[Any], Any]


class Fallback(Exception):
    """This value needs the general path (``proto_json``)."""


class _NotCompilable(Exception):
    pass


_writers: dict[str, Writer | None] = {}


def writer_for(descriptor: Descriptor) -> Writer | None:
    """The compiled writer of a message type, or None when it needs the general path."""
    name = descriptor.full_name
    if name not in _writers:
        _writers[name] = None  # a recursive type meets itself while compiling: not compiled
        with contextlib.suppress(_NotCompilable):
            _writers[name] = _compile(descriptor)
    return _writers[name]


def _compile(descriptor: Descriptor) -> Writer:
    if descriptor.GetOptions().map_entry or descriptor.full_name.startswith("google.protobuf."):
        raise _NotCompilable
    by_number: dict[int, tuple[str, Convert]] = {}
    defaults: list[tuple[str, Callable[[], Any]]] = []
    for field in descriptor.fields:
        if INPUT_ONLY in field_behaviors(field):
            # Never returned (AIP-203): present or not, the key is not written.
            by_number[field.number] = ("", _drop)
            continue
        by_number[field.number] = (field.name, _field_converter(field))
        if not field.has_presence:
            defaults.append((field.name, _default_of(field)))

    def write(message: Message) -> dict[str, Any]:
        js: dict[str, Any] = {}
        for field, value in message.ListFields():
            if field.is_extension:
                raise Fallback
            entry = by_number.get(field.number)
            if entry is None:
                raise Fallback
            name, convert = entry
            if name:
                js[name] = convert(value)
        # json_format adds the unset fields without presence after the set ones, in
        # declaration order: the same keys in the same order.
        for name, default in defaults:
            if name not in js:
                js[name] = default()
        return js

    return write


def _drop(_value: Any) -> Any:
    return None


def _field_converter(field: FieldDescriptor) -> Convert:
    if is_map(field):
        entry = message_type(field)
        key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
        if key_field.type not in (_T.TYPE_STRING, *_INTEGERS, _T.TYPE_BOOL):
            raise _NotCompilable
        convert_value = _single_converter(value_field)

        def convert_map(value: Any) -> dict[str, Any]:
            return {_map_key(key): convert_value(value[key]) for key in value}

        return convert_map
    convert = _single_converter(field)
    if field.is_repeated:
        return lambda values: [convert(item) for item in values]
    return convert


def _map_key(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _single_converter(field: FieldDescriptor) -> Convert:
    kind = field.type
    if kind == _T.TYPE_STRING:
        return _identity
    if kind == _T.TYPE_BOOL:
        return bool
    if kind in _INTEGERS:
        return int  # 64-bit ones too: the contract prints them as JSON numbers
    if kind == _T.TYPE_ENUM:
        return _enum_converter(field)
    if kind == _T.TYPE_MESSAGE:
        return _message_converter(message_type(field))
    raise _NotCompilable  # floats and bytes: json_format's own formatting rules


def _identity(value: Any) -> Any:
    return value


def _enum_converter(field: FieldDescriptor) -> Convert:
    enum = field.enum_type
    assert enum is not None
    if enum.full_name == "google.protobuf.NullValue":
        raise _NotCompilable
    names: dict[int, str] = {}
    for value in enum.values:
        if value.GetOptions().ListFields():
            raise _NotCompilable  # json_format may print an option's name instead
        names.setdefault(value.number, value.name)

    def convert(number: int) -> str:
        name = names.get(number)
        if name is None:
            raise Fallback  # an unknown value: json_format decides (a number, or an error)
        return name

    return convert


def _message_converter(descriptor: Descriptor) -> Convert:
    if descriptor.full_name in _STRING_FORM:
        return _to_json_string
    compiled = writer_for(descriptor)
    if compiled is not None:
        return compiled
    # Other well-known types, and a type met again while it is being compiled (recursion):
    # the general path for that value alone, which is what it does for a nested message.
    from common.proto_json import slow_message_to_json

    return slow_message_to_json


def _to_json_string(message: Any) -> Any:
    return message.ToJsonString()


def _default_of(field: FieldDescriptor) -> Callable[[], Any]:
    if is_map(field):
        return dict
    if field.is_repeated:
        return list
    convert = _single_converter(field)
    value = convert(field.default_value)
    return lambda: value
