"""Catalog reads through the gateway at 1/16/64/256 in flight, the product service killed mid-run.

Each cell: a fresh product service process (GetProduct answers a fixed product), the real
gateway app in its own process, and N closed-loop aiohttp clients in this process reading
``GET /api/v1/products/{id}``. Half-way through the cell the product process is SIGKILLed; the
numbers are reported for both halves: served (before) and failing (after: 503s from the open
breaker, the bulkhead or the unreachable channel). Between cells the service is restarted at the
same address and the time until the gateway serves it again is recorded. Rate limits are off
(one client address would be throttled at once; they are tested elsewhere).

Results: ``bench/results/gateway_load.{json,txt,png}`` (gitignored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from bench._children import logged_child
from bench.gateway_overhead import (
    PRODUCT_ID,
    REST_PATH,
    RESULTS_DIR,
    SERVICE_NAME,
    FixedProductServicer,
    _percentile,
)
from common.grpc_server import Service, create_server, stop_gracefully
from common.logging import configure_logging
from common.service_runner import wait_for_stop_signal
from gateway.app import create_app, runner_options
from gateway.routes import discover_services
from gateway.settings import GatewaySettings
from localrun.broker import free_port, wait_for_port
from microcommerce.product.v1 import product_service_pb2_grpc

LOOPBACK = "127.0.0.1"
DEFAULT_CONCURRENCIES = (1, 16, 64, 256)
RECOVERY_LIMIT_S = 15.0


@dataclass
class Phase:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[str, int]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass
class Cell:
    concurrency: int
    before: Phase
    after: Phase
    recovery_s: float | None = None
    timeline: list[tuple[float, float, int]] = field(default_factory=list, repr=False)


def _phase(samples: Sequence[tuple[float, float, int]], seconds: float) -> Phase:
    latencies = sorted(int(lat * 1e9) for _, lat, _ in samples)
    statuses = Counter(str(status) for _, _, status in samples)
    return Phase(
        requests=len(samples),
        seconds=seconds,
        p50_ms=_percentile(latencies, 50) / 1e6 if latencies else 0.0,
        p99_ms=_percentile(latencies, 99) / 1e6 if latencies else 0.0,
        max_ms=latencies[-1] / 1e6 if latencies else 0.0,
        statuses=dict(sorted(statuses.items())),
    )


# --- The processes ----------------------------------------------------------------------


async def serve_product(port: int) -> None:
    configure_logging("bench-product")
    service = Service(
        SERVICE_NAME,
        FixedProductServicer(),  # type: ignore[abstract]  # only GetProduct is needed
        product_service_pb2_grpc.add_ProductServiceServicer_to_server,
    )
    bound = await create_server(services=[service], address=f"{LOOPBACK}:{port}")
    await bound.server.start()
    try:
        await wait_for_stop_signal()
    finally:
        await stop_gracefully(bound.server, bound.health, grace=1.0)


async def serve_gateway(port: int, upstream: str) -> None:
    configure_logging("bench-gateway")
    settings = GatewaySettings(host=LOOPBACK, gateway_port=port, rate_limit_enabled=False)
    app = create_app(
        settings, upstream_addresses={s.full_name: upstream for s in discover_services()}
    )
    runner = web.AppRunner(app, access_log=None, **runner_options(settings))
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, port).start()
    try:
        await wait_for_stop_signal()
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def child(name: str, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    with logged_child(
        "bench.gateway_load",
        ["child", name, *args],
        RESULTS_DIR / f"gateway_load.{name}.log",
        stop_timeout_s=5,
    ) as popen:
        yield popen


# --- The load -----------------------------------------------------------------------------


async def run_cell(
    url: str, concurrency: int, seconds: float, kill: subprocess.Popen[bytes]
) -> Cell:
    samples: list[tuple[float, float, int]] = []
    start = time.monotonic()
    end = start + seconds
    kill_at = start + seconds / 2
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def worker() -> None:
            while (begin := time.monotonic()) < end:
                try:
                    async with http.get(url) as response:
                        await response.read()
                        status = response.status
                except aiohttp.ClientError:
                    status = 0
                finished = time.monotonic()
                samples.append((finished - start, finished - begin, status))

        async def killer() -> None:
            await asyncio.sleep(kill_at - time.monotonic())  # the schedule, not a wait-for
            kill.send_signal(signal.SIGKILL)

        await asyncio.gather(killer(), *(worker() for _ in range(concurrency)))
    half = seconds / 2
    return Cell(
        concurrency,
        before=_phase([s for s in samples if s[0] < half], half),
        after=_phase([s for s in samples if s[0] >= half], half),
        timeline=samples,
    )


async def time_to_recover(url: str) -> float | None:
    start = time.monotonic()
    async with aiohttp.ClientSession() as http:
        while time.monotonic() - start < RECOVERY_LIMIT_S:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as response:
                    if response.status == 200:
                        return time.monotonic() - start
            await asyncio.sleep(0.05)
    return None


def run(concurrencies: Sequence[int], seconds: float) -> list[Cell]:
    product_port, gateway_port = free_port(), free_port()
    upstream = f"{LOOPBACK}:{product_port}"
    url = f"http://{LOOPBACK}:{gateway_port}{REST_PATH}"
    cells: list[Cell] = []
    with child("gateway", str(gateway_port), upstream):
        wait_for_port(LOOPBACK, gateway_port, timeout=30)
        recovery: float | None = None
        for concurrency in concurrencies:
            with child("product", str(product_port)) as product:
                wait_for_port(LOOPBACK, product_port, timeout=30)
                recovery = asyncio.run(time_to_recover(url))
                if recovery is None:
                    raise RuntimeError("the gateway never served the restarted product service")
                cell = asyncio.run(run_cell(url, concurrency, seconds, product))
                cell.recovery_s = recovery if cells else None  # the first start is no recovery
                cells.append(cell)
                sys.stderr.write(_row(cell) + "\n")
    return cells


# --- Reporting ------------------------------------------------------------------------------

HEADER = (
    "| in flight | before: req/s | p50 ms | p99 ms | statuses | after kill: req/s | p50 ms "
    "| p99 ms | max ms | statuses | recovery s |\n"
    "| ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: |"
)


def _row(cell: Cell) -> str:
    b, a = cell.before, cell.after
    recovery = f"{cell.recovery_s:.2f}" if cell.recovery_s is not None else "-"
    return (
        f"| {cell.concurrency} | {b.rps:.0f} | {b.p50_ms:.1f} | {b.p99_ms:.1f} "
        f"| {_statuses(b)} | {a.rps:.0f} | {a.p50_ms:.1f} | {a.p99_ms:.1f} | {a.max_ms:.0f} "
        f"| {_statuses(a)} | {recovery} |"
    )


def _statuses(phase: Phase) -> str:
    return ", ".join(f"{k}: {v}" for k, v in phase.statuses.items())


def report(cells: Sequence[Cell], seconds: float) -> str:
    lines = [
        f"GET {REST_PATH} ({PRODUCT_ID} from a fixed product servicer), {seconds:g} s per cell,",
        "the product service SIGKILLed half-way; 'recovery' = restart of the previous cell's",
        "killed service until the first 200 through the same gateway.",
        "",
        HEADER,
        *(_row(c) for c in cells),
    ]
    return "\n".join(lines) + "\n"


def plot(cells: Sequence[Cell], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (throughput, latency, timeline) = plt.subplots(1, 3, figsize=(17, 5))
    labels = [str(c.concurrency) for c in cells]
    positions = range(len(cells))
    width = 0.4
    throughput.bar(
        [p - width / 2 for p in positions],
        [c.before.rps for c in cells],
        width,
        label="served (before kill)",
    )
    throughput.bar(
        [p + width / 2 for p in positions],
        [c.after.rps for c in cells],
        width,
        label="failing fast (after kill)",
    )
    throughput.set_xticks(list(positions), labels)
    throughput.set_xlabel("requests in flight")
    throughput.set_ylabel("requests/s")
    throughput.legend()
    for phase, marker in (("before", "o"), ("after", "x")):
        for quantile in ("p50", "p99"):
            latency.plot(
                labels,
                [getattr(getattr(c, phase), f"{quantile}_ms") for c in cells],
                marker=marker,
                label=f"{quantile} {phase}",
            )
    latency.set_yscale("log")
    latency.set_xlabel("requests in flight")
    latency.set_ylabel("latency, ms")
    latency.legend()
    widest = max(cells, key=lambda c: c.concurrency)
    for ok, color in ((True, "tab:green"), (False, "tab:red")):
        points = [(t, lat * 1000) for t, lat, s in widest.timeline if (s == 200) == ok]
        timeline.scatter(
            [p[0] for p in points],
            [p[1] for p in points],
            s=2,
            color=color,
            label="200" if ok else "error",
        )
    timeline.set_yscale("log")
    timeline.set_xlabel(f"seconds (in flight {widest.concurrency}); kill at the middle")
    timeline.set_ylabel("latency, ms")
    timeline.legend()
    figure.suptitle("Gateway: catalog read, product service killed mid-run")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["child"]:
        return _child(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_load")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per cell (6)")
    parser.add_argument("--warmup", type=float, default=0.0, help="ignored; for `make bench`")
    parser.add_argument(
        "--concurrency",
        default=",".join(map(str, DEFAULT_CONCURRENCIES)),
        help="comma-separated requests in flight (1,16,64,256)",
    )
    options, _ = parser.parse_known_args(argv)
    concurrencies = [int(c) for c in options.concurrency.split(",")]
    cells = run(concurrencies, options.duration)
    text = report(cells, options.duration)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "gateway_load.txt").write_text(text)
    (RESULTS_DIR / "gateway_load.json").write_text(
        json.dumps(
            [
                {
                    "concurrency": c.concurrency,
                    "before": {**asdict(c.before), "rps": c.before.rps},
                    "after": {**asdict(c.after), "rps": c.after.rps},
                    "recovery_s": c.recovery_s,
                }
                for c in cells
            ],
            indent=2,
        )
    )
    plot(cells, RESULTS_DIR / "gateway_load.png")
    sys.stdout.write(text)
    sys.stdout.write(f"plot: {RESULTS_DIR / 'gateway_load.png'}\n")
    return 0


def _child(argv: Sequence[str]) -> int:
    role, *args = argv
    if role == "product":
        asyncio.run(serve_product(int(args[0])))
    elif role == "gateway":
        asyncio.run(serve_gateway(int(args[0]), args[1]))
    else:
        raise SystemExit(f"unknown child role {role!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
