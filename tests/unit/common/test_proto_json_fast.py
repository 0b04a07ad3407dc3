"""The compiled JSON writer prints exactly what json_format and the adjusting walk print."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from common.descriptors import is_map, message_type
from common.proto_json import message_to_json, slow_message_to_json
from common.proto_json_fast import writer_for
from gateway.routes import discover_services
from microcommerce.testing.v1 import widgets_pb2
from tests.support.widget_service import sample_widget

_T = FieldDescriptor


def _bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _response_types() -> list[Descriptor]:
    """Every message an RPC of ours answers, and every message type they contain."""
    found: dict[str, Descriptor] = {}

    def visit(descriptor: Descriptor) -> None:
        if descriptor.full_name in found:
            return
        found[descriptor.full_name] = descriptor
        for field in descriptor.fields:
            if field.message_type is not None:
                visit(field.message_type)

    for service in discover_services():
        for method in service.methods:
            visit(method.output_type)
    visit(widgets_pb2.Widget.DESCRIPTOR)
    return [d for d in found.values() if not d.GetOptions().map_entry]


def _scalar(field: FieldDescriptor, variant: int) -> Any:
    kind = field.type
    if kind == _T.TYPE_STRING:
        return ["", "plain", 'ünïcödé "quoted" \\ / \n 4242 4242 4242 4242'][variant % 3]
    if kind == _T.TYPE_BYTES:
        return [b"", b"\x00\xffbytes"][variant % 2]
    if kind == _T.TYPE_BOOL:
        return variant % 2 == 1
    if kind in (_T.TYPE_DOUBLE, _T.TYPE_FLOAT):
        return [0.0, 1.5, -2.25e10][variant % 3]
    if kind == _T.TYPE_ENUM:
        values = field.enum_type.values  # type: ignore[union-attr]
        return values[variant % len(values)].number
    if kind in (_T.TYPE_UINT32, _T.TYPE_FIXED32):
        return [0, 7, 2**32 - 1][variant % 3]
    if kind in (_T.TYPE_UINT64, _T.TYPE_FIXED64):
        return [0, 7, 2**64 - 1][variant % 3]
    if kind in (_T.TYPE_INT32, _T.TYPE_SINT32, _T.TYPE_SFIXED32):
        return [0, -7, 2**31 - 1][variant % 3]
    return [0, -(2**40), 2**53 + 1][variant % 3]  # the 64-bit signed ones


def _fill(message: Message, variant: int, depth: int = 0) -> Message:
    """Every field set (oneofs: the variant's member), nested messages too, to a few levels."""
    descriptor: Descriptor = message.DESCRIPTOR  # type: ignore[assignment]
    full_name = descriptor.full_name
    if full_name == "google.protobuf.Timestamp":
        message.FromSeconds(1_764_054_321 + variant)  # type: ignore[attr-defined]
        message.nanos = [0, 250_000_000, 123_456_789][variant % 3]  # type: ignore[attr-defined]
        return message
    if full_name.startswith("google.protobuf.") or depth > 3:
        return message  # left at their defaults: the general path prints those
    oneofs_done: set[str] = set()
    for index, field in enumerate(descriptor.fields):
        oneof = field.containing_oneof
        if oneof is not None:
            if oneof.name in oneofs_done or (index + variant) % 2:
                continue
            oneofs_done.add(oneof.name)
        if is_map(field):
            entry = message_type(field)
            key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
            target = getattr(message, field.name)
            for n in range(2):
                key = _scalar(key_field, variant + n + 1)
                if value_field.type == _T.TYPE_MESSAGE:
                    _fill(target[key], variant + n, depth + 1)
                else:
                    target[key] = _scalar(value_field, variant + n)
        elif field.is_repeated:
            target = getattr(message, field.name)
            for n in range(2):
                if field.type == _T.TYPE_MESSAGE:
                    _fill(target.add(), variant + n, depth + 1)
                else:
                    target.append(_scalar(field, variant + n))
        elif field.type == _T.TYPE_MESSAGE:
            _fill(getattr(message, field.name), variant, depth + 1)
        elif variant != 2 or not field.has_presence:  # variant 2 leaves optional ones unset
            setattr(message, field.name, _scalar(field, variant))
    return message


def _instances() -> Iterator[tuple[str, Message]]:
    for descriptor in _response_types():
        cls = GetMessageClass(descriptor)
        yield f"{descriptor.full_name}/empty", cls()
        for variant in range(3):
            yield f"{descriptor.full_name}/{variant}", _fill(cls(), variant)
    yield "Widget/sample", sample_widget("w-1")


@pytest.mark.parametrize(("name", "message"), list(_instances()), ids=lambda v: str(v)[:80])
def test_compiled_writer_prints_the_same_bytes_as_json_format(name: str, message: Message) -> None:
    assert _bytes(message_to_json(message)) == _bytes(slow_message_to_json(message)), name


def test_every_response_message_of_the_api_is_compiled() -> None:
    # The gateway's answers all take the fast path: none of them needs json_format.
    slow = [
        d.full_name
        for d in _response_types()
        if not d.full_name.startswith("google.")
        and d.full_name != widgets_pb2.Widget.DESCRIPTOR.full_name
        and d.containing_type is None
        and writer_for(d) is None
    ]
    assert slow == []


def test_an_enum_number_the_descriptor_does_not_name_is_printed_as_json_format_does() -> None:
    # An open enum keeps an unknown number (a newer server's value): the compiled writer hands
    # the message to json_format, which prints the number.
    descriptor, field = next(
        (d, f)
        for d in _response_types()
        if writer_for(d) is not None
        for f in d.fields
        if f.type == _T.TYPE_ENUM and not f.is_repeated
    )
    message = GetMessageClass(descriptor)()
    setattr(message, field.name, 97)

    assert _bytes(message_to_json(message)) == _bytes(slow_message_to_json(message))
    assert message_to_json(message)[field.name] == 97
