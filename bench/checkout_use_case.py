"""What one checkout costs inside payment_svc: CPU and transactions, SQLite and PostgreSQL.

The end-to-end ``checkout`` benchmark shares two cores with four Python processes and the
broker, so its figures move with whatever else runs on the machine. This one isolates the
payment service's own work, the part issue 13's changes to the database layer and the saga
touch: ``Payments.checkout`` on a real migrated database (a fresh SQLite file, or a fresh
PostgreSQL database), with product_svc replaced by the tests' in-memory inventory and the
sandbox provider on the same database, as ``make run`` wires it. ``--concurrency`` checkouts
run at once for ``--checkouts`` in total.

Reported per backend: checkouts/s, CPU ms per checkout of this process (all its threads, so
aiosqlite's worker threads count too), and the transactions begun on the payment database per
checkout, the sandbox's two ledger writes (authorize, capture) included. CPU per checkout is
the figure to compare between runs on a shared machine: waiting for the cores does not inflate
it much. Any checkout that does not end CONFIRMED is an error: the run says so and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from common.db import Database
from common.migrations import script_location_of, upgrade_to_head
from common.outbox import Outbox
from payment_svc.domain import Caller, CardInput, Order, RequestedItem
from payment_svc.provider import ResilientProvider, SandboxProvider
from payment_svc.saga import CheckoutSaga
from payment_svc.service import Payments
from payment_svc.store import PaymentStore
from tests.support.payment_fakes import FakeInventory

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "checkout_use_case.json"
DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


@dataclass
class Row:
    backend: str
    concurrency: int
    checkouts: int
    per_second: float
    cpu_ms_per_checkout: float
    transactions_per_checkout: float
    errors: int


def _render(order: Order) -> bytes:
    return json.dumps({"id": order.id, "status": order.status.value}).encode()


async def _url(backend: str, server: str) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp(prefix='bench-uc-')) / 'payment.db'}"
    name = f"mc_bench_uc_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()
    return server.rsplit("/", 1)[0] + f"/{name}"


async def _measure(backend: str, options: argparse.Namespace) -> Row:
    url = await _url(backend, options.postgres)
    database = Database.from_url(url)
    await upgrade_to_head(database.engine, script_location_of("payment"))
    store = PaymentStore(database, Outbox("payment"))
    inventory = FakeInventory()
    inventory.add_product("p-1", 10**9, 500)
    provider = ResilientProvider(SandboxProvider(database))
    payments = Payments(store, CheckoutSaga(store, inventory, provider), provider)
    card = payments.accept_card(CardInput("4242424242424242", 12, 2099, "123", "Ada"))
    callers = [Caller(f"user-{i}") for i in range(8)]
    begun = 0
    errors = 0

    def count(_connection: object) -> None:
        nonlocal begun
        begun += 1

    async def one(index: int) -> None:
        nonlocal errors
        reply = await payments.checkout(
            callers[index % len(callers)],
            uuid.uuid4().hex,
            [RequestedItem("p-1", 1)],
            card,
            _render,
        )
        if reply.error is not None or b"CONFIRMED" not in reply.body:
            errors += 1

    async def worker(indexes: list[int]) -> None:
        for index in indexes:
            await one(index)

    try:
        await asyncio.gather(*(one(i) for i in range(options.concurrency)))  # warm-up
        event.listen(database.engine.sync_engine, "begin", count)
        total = options.checkouts
        shares = [list(range(i, total, options.concurrency)) for i in range(options.concurrency)]
        cpu = time.process_time()
        began = time.perf_counter()
        await asyncio.gather(*(worker(share) for share in shares))
        elapsed = time.perf_counter() - began
        cpu = time.process_time() - cpu
        event.remove(database.engine.sync_engine, "begin", count)
    finally:
        await database.dispose()
    return Row(
        backend,
        options.concurrency,
        total,
        round(total / elapsed, 1),
        round(cpu * 1000 / total, 2),
        round(begun / total, 2),
        errors,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.checkout_use_case", description=__doc__)
    parser.add_argument("--checkouts", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--backends", type=lambda v: v.split(","), default=["sqlite", "postgres"])
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="server URL (trust auth)")
    options, _unknown = parser.parse_known_args(argv)
    rows = [asyncio.run(_measure(backend, options)) for backend in options.backends]
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps([asdict(row) for row in rows], indent=2))
    print(  # noqa: T201
        f"{'backend':8} {'in flight':>9} {'checkouts':>9} {'done/s':>7} {'cpu ms/checkout':>15} "
        f"{'transactions/checkout':>21} {'errors':>6}"
    )
    for row in rows:
        print(  # noqa: T201
            f"{row.backend:8} {row.concurrency:>9} {row.checkouts:>9} {row.per_second:>7} "
            f"{row.cpu_ms_per_checkout:>15} {row.transactions_per_checkout:>21} {row.errors:>6}"
        )
    if any(row.errors for row in rows):
        print("!!! CHECKOUT USE CASE BENCHMARK FAILED: some checkouts did not confirm")  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
