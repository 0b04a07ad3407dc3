"""Reading domain events back from the broker, as a downstream consumer would."""

from __future__ import annotations

import json
from typing import Any

from aiokafka import AIOKafkaConsumer

from tests.support.processes import wait_for

CHECKOUT_TOPICS = ("order-events", "payment-events")


async def checkout_events(
    bootstrap: str, order_ids: set[str], expected: int
) -> list[dict[str, Any]]:
    """The CloudEvents of ``order_ids`` on the checkout topics, each id once, first seen first.

    Waits until ``expected`` distinct events arrived. Duplicates (delivery is at least once)
    are dropped by event id, as a consumer must.
    """
    consumer = AIOKafkaConsumer(
        *CHECKOUT_TOPICS,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
    )
    await consumer.start()
    seen: dict[str, dict[str, Any]] = {}
    try:

        async def collected() -> bool:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    event = json.loads(record.value or b"{}")
                    if event.get("subject") in order_ids:
                        seen.setdefault(event["id"], event)
            return len(seen) >= expected

        await wait_for(collected, within=60, interval=0)
    finally:
        await consumer.stop()
    return list(seen.values())
