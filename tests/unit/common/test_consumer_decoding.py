"""What a consumer accepts as an event, and how long it waits between tries."""

from __future__ import annotations

import json

import pytest

from common.consumer import PoisonEvent, RetryPolicy, Undecodable, decode_event, event_data
from common.dead_letters import ConsumedRecord
from microcommerce.payment.v1 import events_pb2


def record(value: bytes) -> ConsumedRecord:
    return ConsumedRecord("order-events", 0, 7, b"order-1", value, {})


def envelope(**changes: object) -> bytes:
    base: dict[str, object] = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "/microcommerce/payment",
        "type": "microcommerce.order.failed",
        "subject": "order-1",
        "time": "2026-12-02T00:00:00Z",
        "data": {"order_id": "order-1", "user_id": "u-1", "reason": "PAYMENT_DECLINED"},
    }
    base.update(changes)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


def test_a_cloud_event_decodes_with_its_attributes_and_data() -> None:
    event = decode_event(record(envelope()))
    assert (event.id, event.type, event.subject) == (
        "e-1",
        "microcommerce.order.failed",
        "order-1",
    )
    assert event_data(event, events_pb2.OrderFailed()).reason == "PAYMENT_DECLINED"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (envelope(id=None), "missing CloudEvents attributes: id"),
        (envelope(specversion="0.3"), "unsupported specversion"),
        (envelope(data="text"), "data is not a JSON object"),
    ],
)
def test_anything_else_is_undecodable_with_the_reason(value: bytes, reason: str) -> None:
    with pytest.raises(Undecodable, match=reason):
        decode_event(record(value))


def test_data_that_does_not_fit_its_type_is_a_poison_event() -> None:
    event = decode_event(record(envelope(data={"order_id": 5})))
    with pytest.raises(PoisonEvent, match="does not fit OrderFailed"):
        event_data(event, events_pb2.OrderFailed())


def test_the_back_off_doubles_up_to_its_cap() -> None:
    policy = RetryPolicy(attempts=6, first_delay_s=0.5, max_delay_s=3.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
