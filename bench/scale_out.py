"""Scale-out under kills: the figures of tests/e2e/test_scale_out.py's scenario, longer and wider.

Two gateways and two replicas of each service (PostgreSQL databases made for the run, the real
Redis, the embedded broker) serve a mixed load of registrations, sign-ins, refreshes, catalog
walks across both gateways and checkouts on scarce stock, while one replica of every service and
one gateway are SIGKILLed together and replaced. Reported: requests sent (by kind, per second),
the errors clients saw during the kills (by kind and status) and outside them, how soon
``/health`` showed the loss and the replacements, and what was lost (accepted orders not
CONFIRMED, oversold or misplaced units, double captures, orders left mid-saga): the goal is
nothing. Results in ``bench/results/scale_out.json``, the processes' logs beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from localrun.broker import EmbeddedBroker
from tests.support.scale_scenario import run_scenario
from tests.support.scale_stack import (
    DEFAULT_REDIS_URL,
    close_scale_stack,
    create_databases,
    drop_databases,
    open_scale_stack,
    postgres_server,
)

RESULTS = Path(__file__).resolve().parent / "results"
RESULTS_FILE = RESULTS / "scale_out.json"
RUN_DIR = RESULTS / "scale_out"


async def _run(options: argparse.Namespace) -> dict[str, Any]:
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    broker = EmbeddedBroker.start()
    databases = await create_databases(options.postgres, uuid.uuid4().hex[:10])
    try:
        stack = open_scale_stack(
            RUN_DIR, bootstrap=broker.bootstrap, databases=databases, redis_url=options.redis
        )
        try:
            await stack.wait_until_whole(within=180)
            scenario = await run_scenario(
                stack,
                clients=options.clients,
                warmup_s=options.warmup,
                after_s=options.after,
                stocks=options.stocks,
            )
        finally:
            await close_scale_stack(stack)
    finally:
        await drop_databases(options.postgres, databases)
        broker.stop()
    return scenario.summary()


def _report(summary: dict[str, Any]) -> str:
    lines = [
        f"load: {summary['requests_sent']} requests in {summary['load_seconds']} s "
        f"({summary['requests_per_second']}/s): {summary['requests_by_kind']}",
        f"kill window: {summary['kill_window_s']} s (kill -> every replacement UP)",
        f"errors during the kills: {summary['errors_during_kills'] or 'none'}",
        f"errors outside the kills: {summary['errors_outside_kills'] or 'none'}",
        f"/health showed the loss after (s): {summary['health_loss_shown_after_s']}",
        f"replacements UP after (s): {summary['replacement_up_after_s']}",
        f"checkouts: {summary['checkouts']}",
        f"orders: {summary['orders']}",
        f"catalog walks: {summary['catalog_walks']}",
        f"lost or wrong: {summary['lost_or_wrong'] or 'nothing'}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_out", description=__doc__)
    parser.add_argument("--clients", type=int, default=12, help="shoppers in flight")
    parser.add_argument("--warmup", type=float, default=10.0, help="load seconds before the kills")
    parser.add_argument("--after", type=float, default=10.0, help="load seconds after them")
    parser.add_argument(
        "--stocks",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[10, 150, 150],
        help="comma-separated initial stock of each scarce product",
    )
    parser.add_argument("--postgres", default=postgres_server(), help="server URL (trust auth)")
    parser.add_argument("--redis", default=os.environ.get("MC_TEST_REDIS_URL", DEFAULT_REDIS_URL))
    options, _unknown = parser.parse_known_args(argv)
    summary = asyncio.run(_run(options))
    RESULTS.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(summary, indent=2))
    sys.stdout.write(f"{_report(summary)}\nresults in {RESULTS_FILE}\n")
    return 1 if summary["lost_or_wrong"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
