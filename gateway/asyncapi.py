"""The AsyncAPI 3.0 document of the Kafka topics, generated from the event protos.

As /openapi.json comes from the service protos, /asyncapi.json comes from the messages that
declare the ``(microcommerce.common.v1.event)`` option: one channel per contract topic
(``common.topics``), each event type a message of its topic's channel whose payload is the
CloudEvents 1.0 structured envelope with that message as ``data``, the Kafka key, and an
example built from the message itself (so it has the wire format exactly). The health stream's
two topics carry plain JSON records (``common.health_stream``), described from their fields.
"""

from __future__ import annotations

import importlib
import pkgutil
import typing
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from faust import Record
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from common.descriptors import EventSpec, descriptor_of, enum_type, event_spec, is_map
from common.health_stream import Ping, Pong
from common.proto_json import message_to_json
from common.topics import Topic
from gateway.openapi import ProtoSchemas
from gateway.routes import DEFAULT_PACKAGES

ASYNCAPI_VERSION = "3.0.0"
_KAFKA_BINDING = "0.5.0"
_MESSAGES = "#/components/messages/"
_ENVELOPE = "CloudEvent"
# A structured-mode CloudEvent (CloudEvents JSON format, section 3): the record value.
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"
_EXAMPLE_TIME = datetime(2026, 12, 1, 9, 30, 0, 123456, tzinfo=UTC)
_EXAMPLE_DEPTH = 4

_TOPIC_DESCRIPTIONS = {
    Topic.SERVICE_PING: "The gateway's health question to every service instance "
    "(each instance reads every ping: a consumer group per instance).",
    Topic.SERVICE_PONG: "Each instance's answer to a ping: who it is, where it listens, and "
    "how its own checks went.",
    Topic.USER_EVENTS: "Domain events of user accounts, published by user_svc.",
    Topic.INVENTORY_EVENTS: "Stock reserved, released, committed, adjusted and running low, "
    "published by product_svc.",
    Topic.PAYMENT_EVENTS: "Payments authorized, captured, failed, voided and refunded, "
    "published by payment_svc.",
    Topic.ORDER_EVENTS: "Orders placed, confirmed, failed, cancelled and refunded, published "
    "by payment_svc (which runs the checkout saga).",
}

_ENVELOPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A CloudEvents 1.0 event in structured JSON mode; `data` is the event's "
    "message. Delivery is at least once: drop duplicates by `id`.",
    "properties": {
        "specversion": {"type": "string", "const": "1.0"},
        "id": {"type": "string", "description": "Unique per event; the deduplication key."},
        "source": {"type": "string", "description": "`/microcommerce/<service>`."},
        "type": {
            "type": "string",
            "description": "The event type, e.g. `microcommerce.order.placed`.",
        },
        "time": {
            "type": "string",
            "format": "date-time",
            "description": "When the change "
            "that caused the event was committed (RFC 3339, microseconds).",
        },
        "subject": {"type": "string", "description": "The aggregate id: also the Kafka key."},
        "datacontenttype": {"type": "string", "const": "application/json"},
        "traceparent": {
            "type": "string",
            "description": "W3C trace context of the change "
            "(CloudEvents distributed-tracing extension), when it was traced.",
        },
        "tracestate": {"type": "string"},
        "data": {"type": "object"},
    },
    "required": [
        "specversion",
        "id",
        "source",
        "type",
        "time",
        "subject",
        "datacontenttype",
        "data",
    ],
}


def discover_events(
    packages: Iterable[str] = DEFAULT_PACKAGES,
) -> list[tuple[Descriptor, EventSpec]]:
    """Every message of the generated ``*_pb2`` modules that declares the event option."""
    found: list[tuple[Descriptor, EventSpec]] = []
    for package in packages:
        module = importlib.import_module(package)
        for info in sorted(pkgutil.iter_modules(module.__path__), key=lambda i: i.name):
            if not info.name.endswith("_pb2"):
                continue
            generated = importlib.import_module(f"{package}.{info.name}")
            for descriptor in generated.DESCRIPTOR.message_types_by_name.values():
                spec = event_spec(descriptor)
                if spec is not None:
                    found.append((descriptor, spec))
    return found


def build_asyncapi(
    *, title: str, version: str, packages: Iterable[str] = DEFAULT_PACKAGES
) -> dict[str, Any]:
    """The document: servers, a channel per topic, a send operation per producing topic."""
    schemas = ProtoSchemas()
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {topic.value: _channel(topic) for topic in Topic}
    for descriptor, spec in discover_events(packages):
        if spec.topic not in channels:
            raise ValueError(f"{descriptor.full_name} is published on unknown topic {spec.topic}")
        messages[spec.type] = _event_message(descriptor, spec, schemas)
        channels[spec.topic]["messages"][spec.type] = {"$ref": f"{_MESSAGES}{spec.type}"}
    for topic, record in ((Topic.SERVICE_PING, Ping), (Topic.SERVICE_PONG, Pong)):
        name = record.__name__.lower()
        messages[name] = _record_message(record)
        channels[topic.value]["messages"][name] = {"$ref": f"{_MESSAGES}{name}"}
    operations = {
        f"send.{topic}": {
            "action": "send",
            "channel": {"$ref": f"#/channels/{topic}"},
            "summary": f"Publish to {topic}.",
            "messages": [
                {"$ref": f"#/channels/{topic}/messages/{name}"} for name in channel["messages"]
            ],
        }
        for topic, channel in channels.items()
        if channel["messages"]
    }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": "The Kafka topics and event types of MicroCommerce, generated from "
            "the event protos. Domain events are CloudEvents 1.0 in structured JSON mode, "
            "keyed by their aggregate id so one aggregate's events stay ordered; each is "
            "published at least once through a transactional outbox.",
        },
        "servers": {
            "kafka": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "The broker named by MC_KAFKA_BOOTSTRAP; `make run` starts an "
                "embedded one here.",
            }
        },
        "defaultContentType": CLOUDEVENTS_CONTENT_TYPE,
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": {_ENVELOPE: _ENVELOPE_SCHEMA, **schemas.defined},
        },
    }


def _channel(topic: Topic) -> dict[str, Any]:
    return {
        "address": topic.value,
        "title": topic.value,
        "description": _TOPIC_DESCRIPTIONS[topic],
        "messages": {},
        "bindings": {
            "kafka": {
                "topic": topic.value,
                "partitions": topic.partitions,
                "bindingVersion": _KAFKA_BINDING,
            }
        },
    }


def _event_message(descriptor: Descriptor, spec: EventSpec, schemas: ProtoSchemas) -> Any:
    service = descriptor.file.package.split(".")[1]
    source = f"/microcommerce/{service}"
    example = _example(descriptor)
    subject = str(example.get(spec.key, ""))
    return {
        "name": spec.type,
        "title": _humanize(descriptor.name),
        "summary": f"`{spec.type}` from {service}_svc; `data` is {descriptor.full_name}, "
        f"keyed by its `{spec.key}`.",
        "contentType": CLOUDEVENTS_CONTENT_TYPE,
        "payload": {
            "allOf": [
                {"$ref": f"#/components/schemas/{_ENVELOPE}"},
                {
                    "type": "object",
                    "properties": {
                        "type": {"type": "string", "const": spec.type},
                        "source": {"type": "string", "const": source},
                        "data": schemas.ref(descriptor),
                    },
                },
            ]
        },
        "bindings": {
            "kafka": {
                "key": {
                    "type": "string",
                    "description": f"The `{spec.key}` of `data`, also the envelope's `subject`.",
                },
                "bindingVersion": _KAFKA_BINDING,
            }
        },
        "examples": [
            {
                "name": descriptor.name,
                "summary": f"A {spec.type} event as a consumer reads it.",
                "payload": {
                    "specversion": "1.0",
                    "id": "5f0c2a8e-4d1b-4f7a-9c3e-2b6d8a1f0e47",
                    "source": source,
                    "type": spec.type,
                    "time": "2026-12-01T09:30:00.123456Z",
                    "subject": subject,
                    "datacontenttype": "application/json",
                    "data": example,
                },
            }
        ],
    }


def _record_message(record: type[Record]) -> dict[str, Any]:
    # The record's own fields; Faust's base class adds class-level settings (ClassVar).
    hints = {
        name: hint
        for name, hint in typing.get_type_hints(record).items()
        if typing.get_origin(hint) is not typing.ClassVar and not name.startswith("_")
    }
    properties = {name: _python_schema(hint) for name, hint in hints.items()}
    return {
        "name": record.__name__,
        "title": record.__name__,
        "summary": (record.__doc__ or "").strip(),
        "contentType": "application/json",
        "payload": {
            "type": "object",
            "properties": properties,
            "required": sorted(properties),
        },
    }


def _python_schema(hint: Any) -> dict[str, Any]:
    if typing.get_origin(hint) is dict:
        _, value = typing.get_args(hint)
        return {"type": "object", "additionalProperties": _python_schema(value)}
    return {"type": {str: "string", int: "integer", float: "number", bool: "boolean"}[hint]}


def _humanize(name: str) -> str:
    words = "".join(f" {c.lower()}" if c.isupper() else c for c in name).strip()
    return words[:1].upper() + words[1:]


def _example(descriptor: Descriptor) -> dict[str, Any]:
    """The message filled with plausible values, as its JSON goes on the wire."""
    message = GetMessageClass(descriptor)()
    _fill(message, 0)
    example: dict[str, Any] = message_to_json(message)
    return example


def _fill(message: Message, depth: int) -> None:
    descriptor = descriptor_of(message)
    if descriptor.full_name == "google.protobuf.Timestamp":
        message.FromDatetime(_EXAMPLE_TIME)  # type: ignore[attr-defined]
        return
    filled_oneofs: set[str] = set()
    for field in descriptor.fields:
        oneof = field.containing_oneof
        if is_map(field) or (oneof is not None and oneof.name in filled_oneofs):
            continue
        if oneof is not None:
            filled_oneofs.add(oneof.name)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth < _EXAMPLE_DEPTH:
                container = getattr(message, field.name)
                _fill(container.add() if field.is_repeated else container, depth + 1)
            continue
        value = _sample(field)
        if field.is_repeated:
            getattr(message, field.name).append(value)
        else:
            setattr(message, field.name, value)


def _sample(field: FieldDescriptor) -> Any:
    name = field.name
    if field.type == FieldDescriptor.TYPE_ENUM:
        values = enum_type(field).values
        return values[1].number if len(values) > 1 else values[0].number
    if field.type == FieldDescriptor.TYPE_BOOL:
        return False
    if field.type == FieldDescriptor.TYPE_STRING:
        if name == "currency":
            return "USD"
        if name.endswith("_id") or name.endswith("_by") or name == "id":
            return f"{name.removesuffix('_id')}-7f3a9c"
        return name
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return 1.5
    if field.type == FieldDescriptor.TYPE_BYTES:
        return b"\x00"
    return 1999 if name.endswith("amount") else 2
