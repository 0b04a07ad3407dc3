"""The AsyncAPI document of the topics: valid AsyncAPI 3.0, and complete for what services emit.

The AsyncAPI 3.0 JSON schema comes from the npm package @asyncapi/specs, installed pinned into
.tools/ by `make asyncapi-tools` (a prerequisite of `make test`); without npm the schema test
skips, and fails under CI=true where npm must be present.
"""

from __future__ import annotations

import ast
import copy
import json
import os
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from google.protobuf import json_format
from google.protobuf.message_factory import GetMessageClass

from common.descriptors import event_spec
from common.outbox import OutgoingEvent
from common.topics import Topic
from gateway.asyncapi import build_asyncapi, discover_events
from microcommerce.payment.v1 import events_pb2 as payment_events
from microcommerce.product.v1 import events_pb2 as product_events
from microcommerce.user.v1 import events_pb2 as user_events

ROOT = Path(__file__).resolve().parents[3]
SPEC = ROOT / ".tools/asyncapi/node_modules/@asyncapi/specs/schemas/3.0.0-without-$id.json"
EMITTERS = {
    "payment_svc": payment_events,
    "product_svc": product_events,
    "user_svc": user_events,
}

DOCUMENT = build_asyncapi(title="MicroCommerce API events", version="test")


@pytest.fixture(scope="module")
def asyncapi_schema() -> jsonschema_rs.Validator:
    if not SPEC.exists():
        message = "the AsyncAPI 3.0 schema is not installed: run `make asyncapi-tools` (npm)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return jsonschema_rs.validator_for(json.loads(SPEC.read_text()))


def test_the_document_is_valid_asyncapi_3(asyncapi_schema: jsonschema_rs.Validator) -> None:
    errors = [str(error) for error in asyncapi_schema.iter_errors(DOCUMENT)]
    assert errors == []


def test_the_schema_check_rejects_a_broken_document(
    asyncapi_schema: jsonschema_rs.Validator,
) -> None:
    broken = copy.deepcopy(DOCUMENT)
    broken["channels"]["order-events"]["address"] = 4
    del broken["info"]["version"]

    assert len(list(asyncapi_schema.iter_errors(broken))) >= 2


def test_every_contract_topic_is_a_channel_with_its_partitions() -> None:
    channels = DOCUMENT["channels"]

    assert sorted(channels) == sorted(topic.value for topic in Topic)
    for topic in Topic:
        assert channels[topic.value]["address"] == topic.value
        assert channels[topic.value]["bindings"]["kafka"]["partitions"] == topic.partitions
        assert channels[topic.value]["messages"], f"{topic} carries no message"


def emitted_messages(service: str) -> set[str]:
    """Names of the event messages a service's messages.py builds (``events_pb2.X(...)``)."""
    tree = ast.parse((ROOT / service / "messages.py").read_text())
    return {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "events_pb2"
        and node.func.attr[:1].isupper()
    }


@pytest.mark.parametrize("service", sorted(EMITTERS))
def test_every_event_a_service_can_emit_is_a_message_of_its_topics_channel(service: str) -> None:
    module = EMITTERS[service]
    published = {
        name
        for name in emitted_messages(service)
        # Parts of an event (StockQuantity) are built too; the events are what declare a spec.
        if event_spec(module.DESCRIPTOR.message_types_by_name[name]) is not None
    }
    assert published, f"{service} emits nothing?"
    for name in published:
        spec = event_spec(module.DESCRIPTOR.message_types_by_name[name])
        assert spec is not None
        assert spec.type in DOCUMENT["channels"][spec.topic]["messages"], (service, name)
    # And every event message of the service's protos is one it emits, or the doc lies.
    declared = {
        descriptor.name
        for descriptor, _ in discover_events()
        if descriptor.file.name == module.DESCRIPTOR.name
    }
    assert declared == published


def test_an_event_whose_type_or_topic_disagrees_with_its_proto_is_refused() -> None:
    data = payment_events.OrderPlaced(order_id="o-1")
    OutgoingEvent(Topic.ORDER_EVENTS, "microcommerce.order.placed", "o-1", data)

    with pytest.raises(ValueError, match="disagrees"):
        OutgoingEvent(Topic.PAYMENT_EVENTS, "microcommerce.order.placed", "o-1", data)
    with pytest.raises(ValueError, match="disagrees"):
        OutgoingEvent(Topic.ORDER_EVENTS, "microcommerce.order.created", "o-1", data)
    with pytest.raises(ValueError, match="declares no"):
        OutgoingEvent(Topic.INVENTORY_EVENTS, "x", "p-1", product_events.StockQuantity())


def validator_for_payload(message: dict[str, Any]) -> jsonschema_rs.Validator:
    """A validator of one message's payload, its refs resolved within the document."""
    return jsonschema_rs.validator_for({**message["payload"], "components": DOCUMENT["components"]})


@pytest.mark.parametrize("event", [spec.type for _, spec in discover_events()])
def test_each_event_has_a_keyed_example_that_matches_its_schema_and_its_proto(event: str) -> None:
    message = DOCUMENT["components"]["messages"][event]
    [descriptor] = [d for d, spec in discover_events() if spec.type == event]
    spec = event_spec(descriptor)
    assert spec is not None
    [example] = message["examples"]
    payload = example["payload"]

    assert validator_for_payload(message).is_valid(payload)
    assert payload["type"] == event
    assert payload["subject"] == payload["data"][spec.key] != ""
    json_format.ParseDict(payload["data"], GetMessageClass(descriptor)())  # no unknown field
    wrong = {**payload, "type": "microcommerce.something.else"}
    assert not validator_for_payload(message).is_valid(wrong)
