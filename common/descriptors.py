"""Small facts about proto descriptors that transcoding and OpenAPI both need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from microcommerce.common.v1 import annotations_pb2

WRAPPER_TYPES = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
# Message types with a one-string JSON form, which therefore fit in a path or query value.
TEXT_MESSAGE_TYPES = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        *WRAPPER_TYPES,
    }
)

REQUIRED: int = field_behavior_pb2.REQUIRED
OUTPUT_ONLY: int = field_behavior_pb2.OUTPUT_ONLY
INPUT_ONLY: int = field_behavior_pb2.INPUT_ONLY

_behaviors: dict[str, frozenset[int]] = {}


def is_map(field: FieldDescriptor) -> bool:
    """Whether the field is a ``map<K, V>``."""
    message_type = field.message_type
    return message_type is not None and message_type.GetOptions().map_entry


def is_text_field(field: FieldDescriptor) -> bool:
    """Whether one value of the field can be written as one string: a scalar, an enum or one of
    the well-known types with a string JSON form."""
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return True
    return not is_map(field) and message_type(field).full_name in TEXT_MESSAGE_TYPES


def find_field(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    """A field by its proto name, or else by its JSON (lowerCamel) name, as proto3 JSON does."""
    field = descriptor.fields_by_name.get(name)
    if field is not None:
        return field
    return next((f for f in descriptor.fields if f.json_name == name), None)


def field_behaviors(field: FieldDescriptor) -> frozenset[int]:
    """The field's ``google.api.field_behavior`` values (REQUIRED, OUTPUT_ONLY, ...)."""
    name = field.full_name
    if name not in _behaviors:
        options = field.GetOptions()
        _behaviors[name] = frozenset(options.Extensions[field_behavior_pb2.field_behavior])
    return _behaviors[name]


def descriptor_of(message: Message) -> Descriptor:
    """The message's descriptor."""
    # One class at run time (upb); the stubs tell its two import paths apart.
    return cast(Descriptor, message.DESCRIPTOR)


def message_type(field: FieldDescriptor) -> Descriptor:
    """The type of a message (or map) field."""
    if field.message_type is None:
        raise TypeError(f"{field.full_name} is not a message field")
    return field.message_type


def enum_type(field: FieldDescriptor) -> EnumDescriptor:
    """The type of an enum field."""
    if field.enum_type is None:
        raise TypeError(f"{field.full_name} is not an enum field")
    return field.enum_type


@dataclass(frozen=True)
class EventSpec:
    """How an event message is published (the ``microcommerce.common.v1.event`` option)."""

    type: str
    topic: str
    key: str


def event_spec(descriptor: Descriptor) -> EventSpec | None:
    """The message's event option; None for a message that is no event's ``data``."""
    options = descriptor.GetOptions()
    if not options.HasExtension(annotations_pb2.event):
        return None
    declared = options.Extensions[annotations_pb2.event]
    return EventSpec(declared.type, declared.topic, declared.key)


def event_type(message: type[Message]) -> str:
    """The CloudEvents ``type`` that ``message`` is published under, read from its event option.

    Consumers name the types they take with this, so a producer and its consumers read one
    definition (the proto) and a renamed type cannot leave a consumer waiting for the old one.
    """
    spec = event_spec(cast(Descriptor, message.DESCRIPTOR))
    if spec is None:
        raise ValueError(f"{message.DESCRIPTOR.full_name} declares no event option")
    return spec.type
