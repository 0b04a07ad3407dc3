"""The Kafka topics of CONTRACT.md and their partition counts: the one place that names them."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class Topic(StrEnum):
    """A contract topic (its name on the wire) and the partition count it is declared with."""

    partitions: int

    def __new__(cls, value: str, partitions: int) -> Topic:
        member = str.__new__(cls, value)
        member._value_ = value
        member.partitions = partitions
        return member

    # One partition: every instance reads every ping, and pongs stay few.
    SERVICE_PING = "service-ping", 1
    SERVICE_PONG = "service-pong", 1
    # Keyed by aggregate id: four partitions let a consumer group of up to four share the work
    # while one aggregate's events stay in order.
    USER_EVENTS = "user-events", 4
    INVENTORY_EVENTS = "inventory-events", 4
    PAYMENT_EVENTS = "payment-events", 4
    ORDER_EVENTS = "order-events", 4


# Every topic a process declares at start-up, by name.
TOPIC_PARTITIONS: Mapping[str, int] = MappingProxyType(
    {topic.value: topic.partitions for topic in Topic}
)
