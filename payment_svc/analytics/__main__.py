"""``python -m payment_svc.analytics rebuild``: recompute the sales read model from scratch.

It replays the order and payment events kept for good in ``payment_order_changes`` (Kafka's
retention may be shorter than the shop's history), in the database the payment service uses
(``MC_PAYMENT_DATABASE_URL``, else SQLite under ``MC_DATA_DIR``), migrated first.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from common.db import Database, database_url
from common.logging import configure_logging
from common.migrations import script_location_of, upgrade_to_head
from common.outbox import Outbox
from payment_svc.analytics.service import SalesAnalytics
from payment_svc.analytics.store import AnalyticsStore
from payment_svc.settings import PaymentSettings


async def rebuild(url: str) -> int:
    database = Database.from_url(url, application_name="payment-analytics-rebuild")
    try:
        await upgrade_to_head(database.engine, script_location_of("payment"))
        return await SalesAnalytics(AnalyticsStore(database, Outbox("payment"))).rebuild()
    finally:
        await database.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m payment_svc.analytics")
    parser.add_argument("command", choices=["rebuild"])
    parser.parse_args(argv)
    settings = PaymentSettings()
    configure_logging("payment-analytics", settings.log_level)
    events = asyncio.run(rebuild(database_url("payment", settings)))
    sys.stdout.write(f"sales read model rebuilt from {events} events\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
