"""Request fields named by dotted paths (``filter.min_size``), set from path and query text."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from common.descriptors import enum_type, find_field, is_text_field, message_type

FieldPath = tuple[FieldDescriptor, ...]

_T = FieldDescriptor
_INT_RANGES: dict[int, tuple[int, int]] = {
    **dict.fromkeys((_T.TYPE_INT32, _T.TYPE_SINT32, _T.TYPE_SFIXED32), (-(2**31), 2**31 - 1)),
    **dict.fromkeys((_T.TYPE_UINT32, _T.TYPE_FIXED32), (0, 2**32 - 1)),
    **dict.fromkeys((_T.TYPE_INT64, _T.TYPE_SINT64, _T.TYPE_SFIXED64), (-(2**63), 2**63 - 1)),
    **dict.fromkeys((_T.TYPE_UINT64, _T.TYPE_FIXED64), (0, 2**64 - 1)),
}
_WELL_KNOWN_PREFIX = "google.protobuf."
_INTEGER = re.compile(r"[+-]?[0-9]+")
_TRUE = frozenset(("true", "1"))
_FALSE = frozenset(("false", "0"))


class FieldPathError(ValueError):
    """A dotted name that does not lead to a settable field, or a value it cannot hold."""


def resolve(descriptor: Descriptor, dotted: str) -> FieldPath:
    """The fields along ``a.b.c``: each but the last a singular message, the last settable
    from text."""
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = descriptor
    for name in dotted.split("."):
        if current is None:
            raise FieldPathError(f"{dotted!r}: {fields[-1].name!r} has no fields")
        field = find_field(current, name)
        if field is None:
            raise FieldPathError(f"{dotted!r}: {current.full_name} has no field {name!r}")
        fields.append(field)
        nested = field.type == _T.TYPE_MESSAGE and not is_text_field(field)
        current = field.message_type if nested and not field.is_repeated else None
    if not is_text_field(fields[-1]):
        raise FieldPathError(f"{dotted!r} is a message, not a value")
    return tuple(fields)


def set_from_text(message: Message, path: FieldPath, values: Sequence[str]) -> None:
    """Set the field at ``path`` of ``message`` from its text form: appended one by one for a
    repeated field, exactly one value otherwise.

    A field in a ``oneof`` whose other member is already set (by the body, the path or another
    query parameter) is refused: protobuf would silently clear the other one.
    """
    _check_oneofs(message, path)
    parent = message
    for field in path[:-1]:
        # Reading a singular message field yields the live sub-message: setting on it sets it.
        parent = getattr(parent, field.name)
    leaf = path[-1]
    if leaf.is_repeated:
        container = getattr(parent, leaf.name)
        for text in values:
            if leaf.type == _T.TYPE_MESSAGE:
                container.add().CopyFrom(_message_from_text(message_type(leaf), text))
            else:
                container.append(scalar_from_text(leaf, text))
        return
    if len(values) != 1:
        raise FieldPathError("takes one value, not several")
    if leaf.type == _T.TYPE_MESSAGE:
        getattr(parent, leaf.name).CopyFrom(_message_from_text(message_type(leaf), values[0]))
    else:
        setattr(parent, leaf.name, scalar_from_text(leaf, values[0]))


def _check_oneofs(message: Message, path: FieldPath) -> None:
    parent = message
    for depth, field in enumerate(path):
        oneof = field.containing_oneof
        if oneof is not None:
            chosen = parent.WhichOneof(oneof.name)
            if chosen is not None and chosen != field.name:
                prefix = "".join(f"{f.name}." for f in path[:depth])
                raise FieldPathError(
                    f"{prefix}{field.name} and {prefix}{chosen} are members of the oneof "
                    f"{prefix}{oneof.name}: set only one of them"
                )
        if depth < len(path) - 1:
            # Reading a singular message field has no effect on its parent's oneofs.
            parent = getattr(parent, field.name)


def update_mask_paths(descriptor: Descriptor, body: Mapping[str, Any]) -> list[str]:
    """The leaf field paths a PATCH body sets, for an absent ``update_mask`` (AIP-134).

    ``{"sub": {"a": 1}, "text": "x"}`` gives ``sub.a, text``, so an update of one nested field
    leaves its siblings alone. Leaves, as in grpc-gateway: scalars, repeated fields and maps
    (a mask path cannot go inside a list or map), well-known types (``google.protobuf.*``:
    Timestamp, Struct, wrappers... have JSON forms of their own), an explicit ``null`` (the
    field is cleared) and ``{}`` (the message is replaced by an empty one). Other messages,
    Money included, are walked into: ``{"price": {"amount": 5}}`` changes the amount alone.
    """
    paths: list[str] = []
    for key, value in body.items():
        field = find_field(descriptor, key)
        if field is None:
            continue  # the JSON mapping has refused it already
        if (
            isinstance(value, dict)
            and value
            and field.type == _T.TYPE_MESSAGE
            and not field.is_repeated
            and not message_type(field).full_name.startswith(_WELL_KNOWN_PREFIX)
        ):
            nested = update_mask_paths(message_type(field), value)
            paths.extend(f"{field.name}.{path}" for path in nested)
        else:
            paths.append(field.name)
    return paths


def scalar_from_text(field: FieldDescriptor, text: str) -> Any:
    """The Python value of a scalar or enum field written as text (path or query value)."""
    kind = field.type
    if kind == _T.TYPE_STRING:
        return text
    if kind == _T.TYPE_BOOL:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise FieldPathError(f"expected true or false, got {text!r}")
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        if not _INTEGER.fullmatch(text) or not low <= int(text) <= high:
            raise FieldPathError(f"expected an integer from {low} to {high}, got {text!r}")
        return int(text)
    if kind in (_T.TYPE_DOUBLE, _T.TYPE_FLOAT):
        try:
            if text != text.strip():
                raise ValueError(text)
            return float(text)
        except ValueError:
            raise FieldPathError(f"expected a number, got {text!r}") from None
    if kind == _T.TYPE_ENUM:
        value = enum_type(field).values_by_name.get(text)
        if value is not None:
            return value.number
        if _INTEGER.fullmatch(text) and int(text) in enum_type(field).values_by_number:
            return int(text)
        names = ", ".join(enum_type(field).values_by_name)
        raise FieldPathError(f"expected one of {names}, got {text!r}")
    if kind == _T.TYPE_BYTES:
        return _bytes_from_text(text)
    raise FieldPathError(f"{field.full_name} cannot be set from text")


def _bytes_from_text(text: str) -> bytes:
    # Standard or URL-safe base64, padding optional, as proto3 JSON accepts.
    padded = text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise FieldPathError(f"expected base64, got {text!r}") from None


def _message_from_text(descriptor: Descriptor, text: str) -> Message:
    name = descriptor.full_name
    try:
        if name == "google.protobuf.Timestamp":
            timestamp = timestamp_pb2.Timestamp()
            timestamp.FromJsonString(text)
            return timestamp
        if name == "google.protobuf.Duration":
            duration = duration_pb2.Duration()
            duration.FromJsonString(text)
            return duration
    except ValueError:
        raise FieldPathError(f"expected {descriptor.name} in its JSON form, got {text!r}") from None
    if name == "google.protobuf.FieldMask":
        # Field names as the API spells them (snake_case), comma-separated.
        return field_mask_pb2.FieldMask(paths=[p.strip() for p in text.split(",") if p.strip()])
    # A wrapper: its only field, `value`, holds the scalar.
    wrapper = GetMessageClass(descriptor)()
    value_field = descriptor.fields_by_name["value"]
    setattr(wrapper, "value", scalar_from_text(value_field, text))  # noqa: B010  # dynamic class
    return wrapper
