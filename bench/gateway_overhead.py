"""What the REST gateway costs: GetProduct by direct gRPC, via the gateway, and bare aiohttp;
and what tracing costs the gateway: off, on without an exporter, on exporting over OTLP."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import os
import platform
import resource
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import google.protobuf
import grpc
from aiohttp import web
from google.protobuf import timestamp_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from common.grpc_server import Service, create_server, stop_gracefully
from common.logging import configure_logging
from common.service_runner import wait_for_stop_signal
from common.telemetry import GATEWAY_LIBRARIES, configure_tracing
from gateway.app import create_app, settle_heap
from gateway.routes import discover_services
from gateway.settings import GatewaySettings
from microcommerce.common.v1 import money_pb2
from microcommerce.product.v1 import product_service_pb2, product_service_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
RESULTS_FILE = RESULTS_DIR / "gateway_overhead.json"

LOOPBACK = "127.0.0.1"
SERVICE_NAME = product_service_pb2.DESCRIPTOR.services_by_name["ProductService"].full_name
PRODUCT_ID = "prd_01JD8Q3M5T7X9B2C4E6G8J0K1N"
REST_PATH = f"/api/v1/products/{PRODUCT_ID}"  # GetProduct's google.api.http rule
# The gateway's upstream deadline, also sent by the direct client, so both calls carry one.
UPSTREAM_TIMEOUT_S = 5.0
DEFAULT_CONCURRENCIES = (1, 16, 64)

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
# A load generator at or above this share of a core is probably what limits the cell.
SATURATED_CPU_PERCENT = 90.0
# wrk runs the Lua `done` hook after its own report; it gives exact numbers instead of its
# rounded, unit-suffixed text.
WRK_MARKER = "BENCH-JSON "
WRK_SCRIPT = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\n%s{"requests":%.0f,"duration_us":%.0f,"p50_us":%.1f,"p99_us":%.1f,'
    .. '"errors":%.0f,"non_2xx":%.0f}\\n',
    "BENCH-JSON ", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""

MODES = {
    "grpc": "(a) gRPC direct",
    "gateway": "(b) REST via gateway",
    "gateway-traced": "(b1) b, traced",
    "gateway-exported": "(b2) b, traced+exported",
    "bare": "(c) bare aiohttp",
}
GATEWAY_MODES = ("gateway", "gateway-traced", "gateway-exported")

# The gateway's OTEL_* variables in each of its modes (tracing is what differs, nothing else).
# Every request is sampled (wrk sends no traceparent): the worst case of tracing's cost.
_SAMPLE_ALL = {"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_SAMPLER": "parentbased_always_on"}
TRACING_ENV: dict[str, dict[str, str]] = {
    "gateway": {"OTEL_SDK_DISABLED": "true"},
    "gateway-traced": {**_SAMPLE_ALL, "OTEL_TRACES_EXPORTER": "none"},
    # The endpoint (the sink child's) is added when the sink is up.
    "gateway-exported": {
        **_SAMPLE_ALL,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    },
}

# The processes of the CPU table, in column order; "load" is the load generator.
CPU_COLUMNS = ("load", "service", "gateway", "sink", "bare")

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


# --- The upstream: a fixed product behind the production gRPC server bootstrap --------------


def sample_product() -> product_service_pb2.Product:
    """A realistic catalog entry: every field set, as a stored product would have them."""
    return product_service_pb2.Product(
        id=PRODUCT_ID,
        sku="MUG-STW-350-BLU",
        name="Stoneware mug, 350 ml, midnight blue",
        description=(
            "Hand-glazed stoneware mug with a wide handle. Holds 350 ml; dishwasher and "
            "microwave safe. Each glaze varies slightly."
        ),
        category_id="cat_01JD8PZ2W4Y6A8C0E2G4J6L8N0",
        price=money_pb2.Money(amount=1899, currency="EUR"),
        stock=product_service_pb2.StockLevel(available=148, reserved=3),
        create_time=timestamp_pb2.Timestamp(seconds=1_761_955_200),
        update_time=timestamp_pb2.Timestamp(seconds=1_764_054_321, nanos=250_000_000),
        etag="W/4c1e9a7b",
    )


class FixedProductServicer(product_service_pb2_grpc.ProductServiceServicer):
    """GetProduct answers one prebuilt product: no store, so only transport and transcoding
    are measured. The other RPCs stay UNIMPLEMENTED, as in the generated base."""

    def __init__(self) -> None:
        self._product = sample_product()

    async def GetProduct(
        self,
        request: product_service_pb2.GetProductRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> product_service_pb2.Product:
        return self._product


async def serve_grpc() -> None:
    """The upstream process: our servicer in ``common.grpc_server`` (production interceptor)."""
    configure_logging("bench-product")
    service = Service(
        SERVICE_NAME,
        FixedProductServicer(),  # type: ignore[abstract]  # only GetProduct is needed
        product_service_pb2_grpc.add_ProductServiceServicer_to_server,
    )
    bound = await create_server(services=[service], address=f"{LOOPBACK}:0")
    await bound.server.start()
    _announce(bound.port)
    try:
        await wait_for_stop_signal()
    finally:
        await stop_gracefully(bound.server, bound.health, grace=1.0)


# --- The OTLP sink: where the exporting gateway sends its spans -----------------------------


class SpanCounter(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that only counts: a collector's cheapest possible stand-in
    (no collector installs here, TOOLS.md), so the gateway's export cost is what is measured."""

    def __init__(self) -> None:
        self.spans = 0
        self.exports = 0

    async def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.exports += 1
        self.spans += sum(
            len(scope.spans)
            for resource in request.resource_spans
            for scope in resource.scope_spans
        )
        return trace_service_pb2.ExportTraceServiceResponse()


async def serve_sink() -> None:
    """The sink process; when stopped it writes what it received as its last stdout line."""
    configure_logging("bench-otlp-sink")
    counter = SpanCounter()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        counter, server
    )
    port = server.add_insecure_port(f"{LOOPBACK}:0")
    await server.start()
    _announce(port)
    try:
        await wait_for_stop_signal()
    finally:
        await server.stop(grace=1.0)
        sys.stdout.write(json.dumps({"spans": counter.spans, "exports": counter.exports}) + "\n")
        sys.stdout.flush()


# --- The two HTTP servers ------------------------------------------------------------------


def gateway_app(upstream: str) -> web.Application:
    """The real gateway app, without the health stream (the RPC path needs no Kafka)."""
    # Rate limits off: one client hammering one route would be refused (429), and a cell of
    # refusals measures the limiter, not the gateway's transcoding path.
    settings = GatewaySettings(
        host=LOOPBACK, gateway_port=0, upstream_timeout_s=UPSTREAM_TIMEOUT_S, rate_limits={}
    )
    # Every service at the bench upstream: the full production route table behind one channel,
    # and no connection attempts to default ports that someone's `make run` may own.
    addresses = {service.full_name: upstream for service in discover_services()}
    return create_app(settings, upstream_addresses=addresses)


def bare_app(body: bytes) -> web.Application:
    """The ceiling: one handler on the same route shape, answering the gateway's bytes."""

    async def get_product(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v1/products/{id}", get_product)
    return app


async def serve_http(app: web.Application, name: str) -> None:
    """Serve ``app`` on a free loopback port until SIGTERM, with no aiohttp access log and the
    start-up heap frozen, as gateway.main serves it (the gateway writes its own access line)."""
    configure_logging(name)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    settle_heap()
    await web.TCPSite(runner, LOOPBACK, 0).start()
    _announce(int(runner.addresses[0][1]))
    try:
        await wait_for_stop_signal()
    finally:
        await runner.cleanup()


def _announce(port: int) -> None:
    # The one line a server child writes to stdout: the parent waits for it.
    sys.stdout.write(json.dumps({"port": port}) + "\n")
    sys.stdout.flush()


# --- The gRPC load client (no ghz here) ------------------------------------------------------


@dataclass
class _Recorder:
    """Latencies of the calls that complete inside the window (after the warm-up)."""

    start_ns: int
    end_ns: int
    latencies: list[int] = field(default_factory=list)
    errors: int = 0

    def in_window(self, instant_ns: int) -> bool:
        return self.start_ns <= instant_ns < self.end_ns

    async def worker(self, call: Callable[[], Awaitable[object]]) -> None:
        """One closed-loop client: the next call as soon as the previous one answers."""
        while (begin := time.perf_counter_ns()) < self.end_ns:
            try:
                await call()
            except grpc.aio.AioRpcError:
                if self.in_window(time.perf_counter_ns()):
                    self.errors += 1
                continue
            end = time.perf_counter_ns()
            if self.in_window(end):
                self.latencies.append(end - begin)


async def grpc_load(
    target: str, concurrency: int, warmup: int, duration: int, service_pid: int
) -> dict[str, Any]:
    """``concurrency`` workers on one channel, as the gateway has one channel per upstream."""
    async with grpc.aio.insecure_channel(target) as channel:
        await asyncio.wait_for(channel.channel_ready(), READY_TIMEOUT_S)
        stub = product_service_pb2_grpc.ProductServiceStub(channel)
        request = product_service_pb2.GetProductRequest(id=PRODUCT_ID)
        start = time.perf_counter_ns() + warmup * 1_000_000_000
        recorder = _Recorder(start, start + duration * 1_000_000_000)

        def call() -> Awaitable[object]:
            # The same deadline as the gateway's upstream calls.
            return stub.GetProduct(request, timeout=UPSTREAM_TIMEOUT_S)

        cpu = asyncio.create_task(_cpu_in_window(recorder, {"service": service_pid}))
        await asyncio.gather(*(recorder.worker(call) for _ in range(concurrency)))
        cpu_percent = await cpu
    latencies = sorted(recorder.latencies)
    return {
        "requests": len(latencies),
        "seconds": float(duration),
        "p50_ms": _percentile(latencies, 50) / 1e6,
        "p99_ms": _percentile(latencies, 99) / 1e6,
        "errors": recorder.errors,
        "cpu_percent": cpu_percent,
    }


async def _cpu_in_window(window: _Recorder, watched: Mapping[str, int]) -> dict[str, float | None]:
    # Our own CPU (all threads, gRPC's included) and the server's, over the measured window.
    await asyncio.sleep(max(0, window.start_ns - time.perf_counter_ns()) / 1e9)
    before = _CpuSample.take(watched, own=True)
    await asyncio.sleep(max(0, window.end_ns - time.perf_counter_ns()) / 1e9)
    return before.percent_until(_CpuSample.take(watched, own=True), load_key="load")


def _percentile(sorted_values: Sequence[int], q: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


# --- CPU accounting ------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (Linux /proc), None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class _CpuSample:
    """CPU seconds of the watched processes and of the load generator at one instant."""

    wall: float
    by_name: dict[str, float | None]
    load: float

    @classmethod
    def take(cls, watched: Mapping[str, int], *, own: bool) -> _CpuSample:
        # own: the load generator is this process; else it is a child that has not exited yet,
        # counted through RUSAGE_CHILDREN once it has.
        load = time.process_time() if own else _children_cpu_seconds()
        by_name = {name: cpu_seconds(pid) for name, pid in watched.items()}
        return cls(time.perf_counter(), by_name, load)

    def percent_until(self, later: _CpuSample, *, load_key: str) -> dict[str, float | None]:
        """Share of one core each process used between the two samples, in percent."""
        wall = later.wall - self.wall
        percent: dict[str, float | None] = {load_key: 100 * (later.load - self.load) / wall}
        for name, used in self.by_name.items():
            now = later.by_name[name]
            percent[name] = None if used is None or now is None else 100 * (now - used) / wall
        return percent


# --- Child processes -----------------------------------------------------------------------


@dataclass
class Child:
    """A server process of the benchmark and the port it announced."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0
    last_words: bytes = b""  # what it wrote to stdout after its port, read once it stopped

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _stop_with_parent() -> None:
    # preexec_fn: the kernel sends SIGTERM to the child when the benchmark dies, even by
    # SIGKILL, so no server outlives a killed run.
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _child_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench.gateway_overhead", "child", *args]


def _popen_options(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    # A session of its own: Ctrl-C reaches only the parent, which then stops every child in
    # order (and reports) instead of each child dying mid-measurement on its own.
    return {
        "cwd": ROOT,
        "env": {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
        "stdin": subprocess.DEVNULL,
        "start_new_session": True,
        "preexec_fn": _stop_with_parent,
    }


@contextlib.contextmanager
def child_server(name: str, *args: str, env: Mapping[str, str] | None = None) -> Iterator[Child]:
    """Start a server child, wait for its port, and stop it on exit whatever happens."""
    log_path = RESULTS_DIR / f"gateway_overhead.{name}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            _child_command(*args), stdout=subprocess.PIPE, stderr=log, **_popen_options(env)
        )
    child = Child(name, popen, log_path)
    try:
        child.port = _wait_for_port(child)
        yield child
    finally:
        child.last_words = _stop(child.popen)


def _wait_for_port(child: Child) -> int:
    assert child.popen.stdout is not None
    ready, _, _ = select.select([child.popen.stdout], [], [], READY_TIMEOUT_S)
    line = child.popen.stdout.readline() if ready else b""
    if not line:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.popen.wait(1)  # after EOF it is exiting: let it report its exit code
        code = child.popen.poll()
        what = f"exited ({code})" if code is not None else f"sent no port in {READY_TIMEOUT_S:g} s"
        raise RuntimeError(f"{child.name} {what}; its log ({child.log_path}):\n{child.log_tail()}")
    return int(json.loads(line)["port"])


def _stop(popen: subprocess.Popen[bytes]) -> bytes:
    """Stop the child; what it wrote to stdout since its port line."""
    if popen.poll() is None:
        popen.terminate()
        try:
            popen.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
    rest = b""
    if popen.stdout is not None:
        rest = popen.stdout.read()
        popen.stdout.close()
    return rest


# --- Measurements --------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    duration: int
    warmup: int
    concurrencies: tuple[int, ...]
    wrk_threads: int


@dataclass(frozen=True)
class Cell:
    """One mode at one concurrency."""

    mode: str
    concurrency: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_percent: dict[str, float | None]  # of one core, by process; "load" is the generator
    cpu_us_per_request: dict[str, float | None]  # the same CPU divided among the requests
    warmup_requests: int = 0  # answered during the warm-up (wrk modes)

    @classmethod
    def build(
        cls,
        mode: str,
        concurrency: int,
        requests: int,
        seconds: float,
        latency_ms: tuple[float, float],
        errors: int,
        cpu_percent: dict[str, float | None],
        warmup_requests: int = 0,
    ) -> Cell:
        """A cell from what was measured; the rates are derived here."""
        rps = requests / seconds
        per_request = {
            name: None if percent is None or not rps else percent / 100 / rps * 1e6
            for name, percent in cpu_percent.items()
        }
        p50, p99 = latency_ms
        return cls(
            mode,
            concurrency,
            requests,
            seconds,
            rps,
            p50,
            p99,
            errors,
            cpu_percent,
            per_request,
            warmup_requests,
        )


def measure_grpc(service: Child, concurrency: int, options: Options) -> Cell:
    """Mode (a): the Python load client in its own process against the upstream."""
    command = _child_command(
        "grpc-load",
        f"--target={LOOPBACK}:{service.port}",
        f"--concurrency={concurrency}",
        f"--warmup={options.warmup}",
        f"--duration={options.duration}",
        f"--service-pid={service.popen.pid}",
    )
    log_path = RESULTS_DIR / "gateway_overhead.grpc-load.log"
    with log_path.open("ab") as log:
        done = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=log,
            timeout=options.warmup + options.duration + READY_TIMEOUT_S,
            check=False,
            **_popen_options(),
        )
    if done.returncode != 0:
        raise RuntimeError(f"the gRPC load client failed ({done.returncode}); see {log_path}")
    result = json.loads(done.stdout)
    return Cell.build(
        "grpc",
        concurrency,
        result["requests"],
        result["seconds"],
        (result["p50_ms"], result["p99_ms"]),
        result["errors"],
        result["cpu_percent"],
    )


def measure_wrk(
    mode: str,
    server: Child,
    watched: Mapping[str, int],
    concurrency: int,
    options: Options,
    script: Path,
) -> Cell:
    """Modes (b) and (c): wrk against ``server``, CPU of the ``watched`` processes."""
    url = f"http://{LOOPBACK}:{server.port}{REST_PATH}"
    threads = max(1, min(options.wrk_threads, concurrency))  # wrk needs -c >= -t
    warmup_requests = 0
    if options.warmup > 0:
        warmup = _run_wrk(url, threads, concurrency, options.warmup, "-s", str(script))
        warmup_requests = int(_wrk_report(warmup)["requests"])
    before = _CpuSample.take(watched, own=False)
    output = _run_wrk(url, threads, concurrency, options.duration, "--latency", "-s", str(script))
    cpu = before.percent_until(_CpuSample.take(watched, own=False), load_key="load")
    report = _wrk_report(output)
    return Cell.build(
        mode,
        concurrency,
        int(report["requests"]),
        report["duration_us"] / 1e6,
        (report["p50_us"] / 1e3, report["p99_us"] / 1e3),
        int(report["errors"] + report["non_2xx"]),
        cpu,
        warmup_requests,
    )


def _run_wrk(url: str, threads: int, connections: int, seconds: int, *extra: str) -> str:
    # The timeout, well past the run, catches a hung wrk.
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        f"--timeout={UPSTREAM_TIMEOUT_S:g}s",
        *extra,
        url,
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        timeout=seconds + READY_TIMEOUT_S,
        **_popen_options(),
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    output: str = done.stdout  # typed Any: the keyword splat hides which overload applies
    return output


def _wrk_report(output: str) -> dict[str, float]:
    for line in output.splitlines():
        if line.startswith(WRK_MARKER):
            report: dict[str, float] = json.loads(line[len(WRK_MARKER) :])
            return report
    raise RuntimeError(f"no {WRK_MARKER.strip()} line in wrk's output:\n{output}")


def fetch(port: int) -> bytes:
    """One GET of the product over HTTP; retried while the upstream channel connects."""
    url = f"http://{LOOPBACK}:{port}{REST_PATH}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(url, timeout=UPSTREAM_TIMEOUT_S) as response:
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError as error:
            if error.code != 503 or time.monotonic() > deadline:
                detail = error.read().decode(errors="replace")
                raise RuntimeError(f"GET {url}: {error.code} {detail}") from None
        time.sleep(0.1)


@dataclass(frozen=True)
class Export:
    """What the OTLP sink received from the exporting gateway over the whole run."""

    spans: int
    exports: int
    requests: int  # answered by the exporting gateway, warm-ups included

    @property
    def spans_per_request(self) -> float:
        return self.spans / self.requests if self.requests else math.nan


def run_cells(options: Options) -> tuple[list[Cell], int, Export]:
    """Start the servers, measure every cell, stop them; the cells, the body size, the export."""
    script = RESULTS_DIR / "gateway_overhead.wrk.lua"
    script.write_text(WRK_SCRIPT)
    cells: list[Cell] = []
    with contextlib.ExitStack() as stack:
        service = stack.enter_context(child_server("service", "serve-grpc"))
        upstream = f"{LOOPBACK}:{service.port}"
        # Entered before the exporting gateway, so it stops after it and gets its last spans.
        sink = stack.enter_context(child_server("sink", "serve-sink"))
        endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{LOOPBACK}:{sink.port}"}
        gateways: dict[str, Child] = {}
        for mode in GATEWAY_MODES:
            env = {**TRACING_ENV[mode], **(endpoint if mode == "gateway-exported" else {})}
            gateways[mode] = stack.enter_context(
                child_server(mode, "serve-gateway", upstream, env=env)
            )
        body = fetch(gateways["gateway"].port)
        for mode in GATEWAY_MODES[1:]:
            if fetch(gateways[mode].port) != body:
                raise RuntimeError(f"the {mode} gateway does not answer the same bytes")
        bare = stack.enter_context(child_server("bare", "serve-bare", body.decode()))
        if fetch(bare.port) != body:
            raise RuntimeError("the bare server does not answer the gateway's bytes")
        # Concurrency outermost: the cells of a ratio run back to back, so a drift of the
        # machine (a neighbour's load, CPU frequency) skews the ratios less than the rows.
        for concurrency in options.concurrencies:
            cells.append(measure_grpc(service, concurrency, options))
            _progress(cells[-1])
            for mode, gateway in gateways.items():
                watch = {"gateway": gateway.popen.pid, "service": service.popen.pid}
                if mode == "gateway-exported":
                    watch["sink"] = sink.popen.pid
                cells.append(measure_wrk(mode, gateway, watch, concurrency, options, script))
                _progress(cells[-1])
            bare_watch = {"bare": bare.popen.pid}
            cells.append(measure_wrk("bare", bare, bare_watch, concurrency, options, script))
            _progress(cells[-1])
    # Every child has stopped: the exporting gateway flushed its queue, then the sink reported.
    report = sink.last_words.decode().strip().splitlines()
    if not report:
        raise RuntimeError(
            f"the OTLP sink reported nothing; its log ({sink.log_path}):\n" + sink.log_tail()
        )
    received = json.loads(report[-1])
    # +1: the fetch that checked its answer.
    answered = 1 + sum(
        cell.requests + cell.warmup_requests for cell in cells if cell.mode == "gateway-exported"
    )
    return cells, len(body), Export(received["spans"], received["exports"], answered)


def _progress(cell: Cell) -> None:
    sys.stderr.write(
        f"  {MODES[cell.mode]:<22} c={cell.concurrency:<3} {cell.rps:>9,.0f} req/s "
        f"p50 {cell.p50_ms:.3f} ms\n"
    )


# --- Report --------------------------------------------------------------------------------


def ratios(cells: Sequence[Cell]) -> list[dict[str, float | int]]:
    """Per concurrency: gateway vs direct gRPC (b/a) and vs bare aiohttp (b/c)."""
    by_key = {(cell.mode, cell.concurrency): cell for cell in cells}
    rows: list[dict[str, float | int]] = []
    for concurrency in sorted({cell.concurrency for cell in cells}):
        a, b, c = (by_key[(mode, concurrency)] for mode in ("grpc", "gateway", "bare"))
        rows.append(
            {
                "concurrency": concurrency,
                "rps_b_over_a": b.rps / a.rps,
                "p50_b_over_a": b.p50_ms / a.p50_ms,
                "rps_b_over_c": b.rps / c.rps,
                "p50_b_over_c": b.p50_ms / c.p50_ms,
            }
        )
    return rows


def tracing_costs(cells: Sequence[Cell]) -> list[dict[str, float | int]]:
    """Per concurrency: the gateway traced (no export, export) against the gateway untraced."""
    by_key = {(cell.mode, cell.concurrency): cell for cell in cells}
    rows: list[dict[str, float | int]] = []
    for concurrency in sorted({cell.concurrency for cell in cells}):
        off, traced, exported = (by_key[(mode, concurrency)] for mode in GATEWAY_MODES)
        row: dict[str, float | int] = {"concurrency": concurrency}
        for name, cell in (("off", off), ("traced", traced), ("exported", exported)):
            row[f"rps_{name}"] = cell.rps
            row[f"p50_ms_{name}"] = cell.p50_ms
            row[f"gateway_cpu_us_{name}"] = cell.cpu_us_per_request.get("gateway") or math.nan
        for name, cell in (("traced", traced), ("exported", exported)):
            row[f"rps_change_{name}_percent"] = 100 * (cell.rps / off.rps - 1)
        rows.append(row)
    return rows


def _tracing_lines(cells: Sequence[Cell], export: Export) -> list[str]:
    lines = [
        "what tracing costs the gateway: off (b), on without exporter (b1), exporting (b2)",
        f"{'conc':>4} {'b req/s':>9} {'b1 req/s':>9} {'b2 req/s':>9} {'b1/b':>7} {'b2/b':>7}"
        "   gateway CPU us/req b / b1 / b2",
    ]
    for row in tracing_costs(cells):
        lines.append(
            f"{row['concurrency']:>4} {row['rps_off']:>9,.0f} {row['rps_traced']:>9,.0f} "
            f"{row['rps_exported']:>9,.0f} {row['rps_change_traced_percent']:>+6.1f}% "
            f"{row['rps_change_exported_percent']:>+6.1f}%   "
            f"{row['gateway_cpu_us_off']:.0f} / {row['gateway_cpu_us_traced']:.0f} / "
            f"{row['gateway_cpu_us_exported']:.0f}"
        )
    lines.append(
        f"the sink received {export.spans:,} spans in {export.exports:,} exports for "
        f"{export.requests:,} requests answered by (b2): {export.spans_per_request:.2f} per request"
    )
    return lines


def _warnings(cells: Sequence[Cell], export: Export) -> list[str]:
    """Loud lines for what makes figures invalid: errors in a cell, spans that never arrived."""
    lines = [
        f"!!! {MODES[cell.mode]} c={cell.concurrency}: {cell.errors} errors: "
        "this cell's figures are NOT valid"
        for cell in cells
        if cell.errors
    ]
    if export.spans == 0:
        lines.append('!!! the exporting gateway delivered no spans: (b") did NOT export')
    elif export.spans_per_request < 1:
        lines.append(
            f"!!! fewer spans than requests reached the sink ({export.spans_per_request:.2f} "
            'per request): the exporter dropped spans, (b") exported only part of them'
        )
    return lines


def format_table(cells: Sequence[Cell], options: Options, body_size: int, export: Export) -> str:
    """The human-readable report: speed per cell, the ratios, CPU per cell, caveats."""
    warnings = _warnings(cells, export)
    lines = [
        *warnings,
        *([""] if warnings else []),
        f"GetProduct ({body_size} B of JSON), {options.duration} s per cell after "
        f"{options.warmup} s warm-up, {os.cpu_count()} CPUs",
        "",
        *_speed_lines(cells),
        "",
        *_ratio_lines(cells),
        "",
        *_tracing_lines(cells, export),
        "",
        *_cpu_lines(cells),
        "",
        "load = the load generator: wrk (C) for (b) and (c), a Python grpc.aio client for (a),",
        "so (a) is a lower bound of what the gRPC service can do.",
    ]
    if any(_load_saturated(cell) for cell in cells):
        lines.append(
            f"* the load generator used >= {SATURATED_CPU_PERCENT:g}% of a core: "
            "it may be what limits that row."
        )
    return "\n".join(lines) + "\n"


def _speed_lines(cells: Sequence[Cell]) -> list[str]:
    lines = [f"{'mode':<22} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"]
    for cell in cells:
        lines.append(
            f"{MODES[cell.mode]:<22} {cell.concurrency:>4} {cell.rps:>9,.0f} "
            f"{cell.p50_ms:>8.3f} {cell.p99_ms:>8.3f} {cell.errors:>6}"
            + (" *" if _load_saturated(cell) else "")
            + ("  <- ERRORS: figures void" if cell.errors else "")
        )
    return lines


def _ratio_lines(cells: Sequence[Cell]) -> list[str]:
    lines = [
        "gateway (b) vs direct gRPC (a) and vs bare aiohttp (c)",
        f"{'conc':>4} {'b/a req/s':>10} {'b/a p50':>8} {'b/c req/s':>10} {'b/c p50':>8}",
    ]
    for row in ratios(cells):
        lines.append(
            f"{row['concurrency']:>4} {row['rps_b_over_a']:>10.2f} {row['p50_b_over_a']:>8.2f} "
            f"{row['rps_b_over_c']:>10.2f} {row['p50_b_over_c']:>8.2f}"
        )
    return lines


def _cpu_lines(cells: Sequence[Cell]) -> list[str]:
    lines = [
        "CPU by process: % of one core, and microseconds of CPU per request",
        f"{'mode':<22} {'conc':>4}" + "".join(f"{name:>16}" for name in CPU_COLUMNS),
    ]
    for cell in cells:
        columns = "".join(f"{_cpu_text(cell, name):>16}" for name in CPU_COLUMNS)
        lines.append(f"{MODES[cell.mode]:<22} {cell.concurrency:>4}{columns}")
    return lines


def _cpu_text(cell: Cell, name: str) -> str:
    if name not in cell.cpu_percent:
        return "-"
    percent, per_request = cell.cpu_percent[name], cell.cpu_us_per_request[name]
    if percent is None or per_request is None:
        return "?"
    return f"{percent:.0f}% {per_request:.0f} us"


def _load_saturated(cell: Cell) -> bool:
    load = cell.cpu_percent.get("load")
    return load is not None and load >= SATURATED_CPU_PERCENT


def write_json(cells: Sequence[Cell], options: Options, body_size: int, export: Export) -> None:
    """The results for machines, with what is needed to compare runs across commits."""
    document = {
        "benchmark": "gateway_overhead",
        "rpc": f"{SERVICE_NAME}/GetProduct",
        "rest": f"GET {REST_PATH}",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
            "aiohttp": aiohttp.__version__,
            "protobuf": google.protobuf.__version__,
        },
        "settings": asdict(options),
        "response_bytes": body_size,
        "cells": [asdict(cell) for cell in cells],
        "ratios": ratios(cells),
        "tracing": {
            "gateway_env": TRACING_ENV,
            "costs": tracing_costs(cells),
            "export": {**asdict(export), "spans_per_request": export.spans_per_request},
        },
        "warnings": _warnings(cells, export),
    }
    RESULTS_FILE.write_text(json.dumps(document, indent=2) + "\n")


# --- Entry points --------------------------------------------------------------------------


def _parse_options(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gateway_overhead",
        description="GetProduct: direct gRPC vs the REST gateway vs bare aiohttp.",
    )
    # Whole seconds: that is what wrk's -d takes.
    parser.add_argument("--duration", type=int, default=5, help="seconds per cell (5)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up seconds per cell (1)")
    parser.add_argument(
        "--concurrency",
        default=",".join(map(str, DEFAULT_CONCURRENCIES)),
        help="comma-separated in-flight request counts (1,16,64)",
    )
    # One wrk thread is enough for any Python server here, and a second would take CPU from
    # the servers on a 2-core machine.
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk -t (1)")
    args = parser.parse_args(argv)
    concurrencies = tuple(int(part) for part in args.concurrency.split(","))
    if args.duration < 1 or args.warmup < 0 or min(concurrencies) < 1 or args.wrk_threads < 1:
        parser.error("need --duration >= 1, --warmup >= 0, concurrency and wrk threads >= 1")
    return Options(args.duration, args.warmup, concurrencies, args.wrk_threads)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or, with ``child`` first, one of its processes)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["child"]:
        return _child_main(argv[1:])
    options = _parse_options(argv)
    if shutil.which("wrk") is None:
        sys.stderr.write(
            "wrk is not installed: `apt-get install -y wrk` (as root), or run it\n"
            "through `make bench`, which installs it when it can.\n"
        )
        return 2
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    # SIGTERM (make interrupted, CI cancelling) unwinds like Ctrl-C, so the children stop.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        cells, body_size, export = run_cells(options)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; every process of the benchmark is stopped\n")
        return 130
    except RuntimeError as error:  # ours, with the child's log or wrk's output in the text
        sys.stderr.write(f"gateway_overhead failed: {error}\n")
        return 1
    sys.stdout.write("\n" + format_table(cells, options, body_size, export))
    write_json(cells, options, body_size, export)
    sys.stdout.write(f"\nwritten: {RESULTS_FILE.relative_to(ROOT)}\n")
    failed = error_cells(cells)
    if failed:
        # A cell of errors (429s, 5xx, timeouts) measures the error path, not the gateway:
        # its ratio is meaningless, so the run fails instead of printing it quietly.
        sys.stderr.write(_error_banner(failed))
        return 1
    return 0


def error_cells(cells: Sequence[Cell]) -> list[Cell]:
    """The cells with any failed request (transport errors or non-2xx answers)."""
    return [cell for cell in cells if cell.errors]


def _error_banner(failed: Sequence[Cell]) -> str:
    rule = "!" * 78
    lines = [
        "",
        rule,
        f"gateway_overhead FAILED: {len(failed)} cell(s) had errors; their figures are void",
        *(
            f"  {MODES[cell.mode]} c={cell.concurrency}: {cell.errors} errors of "
            f"{cell.requests} (see bench/results/gateway_overhead.*.log)"
            for cell in failed
        ),
        rule,
        "",
    ]
    return "\n".join(lines)


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _child_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway_overhead child")
    roles = parser.add_subparsers(dest="role", required=True)
    roles.add_parser("serve-grpc")
    roles.add_parser("serve-gateway").add_argument("upstream")
    roles.add_parser("serve-bare").add_argument("body")
    roles.add_parser("serve-sink")
    load = roles.add_parser("grpc-load")
    load.add_argument("--target", required=True)
    load.add_argument("--concurrency", type=int, required=True)
    load.add_argument("--warmup", type=int, required=True)
    load.add_argument("--duration", type=int, required=True)
    load.add_argument("--service-pid", type=int, required=True)
    args = parser.parse_args(argv)
    if args.role == "serve-grpc":
        asyncio.run(serve_grpc())
    elif args.role == "serve-gateway":
        # As gateway.main does: the OTEL_* variables of the run decide whether it traces.
        configure_tracing("gateway", GATEWAY_LIBRARIES)
        asyncio.run(serve_http(gateway_app(args.upstream), "bench-gateway"))
    elif args.role == "serve-sink":
        asyncio.run(serve_sink())
    elif args.role == "serve-bare":
        asyncio.run(serve_http(bare_app(args.body.encode()), "bench-bare"))
    else:
        result = asyncio.run(
            grpc_load(args.target, args.concurrency, args.warmup, args.duration, args.service_pid)
        )
        sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
