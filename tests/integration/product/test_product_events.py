"""Inventory events leave through the outbox relay and reach Kafka as CloudEvents."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer

from common.db import Database
from common.kafka import declare_topics
from common.outbox import Outbox, OutboxRelay
from common.settings import CommonSettings
from localrun.broker import EmbeddedBroker
from product_svc.service import Catalog
from tests.integration.product.conftest import Clients
from tests.support.processes import wait_for


async def test_a_reservation_is_published_on_inventory_events_keyed_by_order(
    clients: Clients,
    catalog: Catalog,
    product_db: Database,
    outbox: Outbox,
    broker: EmbeddedBroker,
) -> None:
    settings = CommonSettings(kafka_bootstrap=broker.bootstrap)
    await declare_topics(settings)
    category = await clients.category()
    product = await clients.product(category.id, stock=3)
    order_id = f"order-{uuid.uuid4().hex}"
    await catalog.reserve(order_id, [(product.id, 1)])

    relay = asyncio.create_task(OutboxRelay(product_db, outbox, settings).run())
    consumer = AIOKafkaConsumer(
        "inventory-events",
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        group_id=f"test-{uuid.uuid4().hex}",
        fetch_max_wait_ms=20,
    )
    await consumer.start()
    seen: list[dict[str, Any]] = []

    async def published() -> dict[str, Any] | None:
        batches = await consumer.getmany(timeout_ms=200)
        for records in batches.values():
            for record in records:
                if record.key == order_id.encode():
                    seen.append(json.loads(record.value or b"{}"))
        return seen[0] if seen else None

    try:
        event = await wait_for(published, within=30)
    finally:
        await consumer.stop()
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)

    assert event["type"] == "microcommerce.inventory.reserved"
    assert event["specversion"] == "1.0"
    assert event["subject"] == order_id
    assert event["data"]["order_id"] == order_id
    assert event["data"]["items"] == [{"product_id": product.id, "quantity": 1}]
