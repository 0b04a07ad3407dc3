"""`make run`: start the broker, the three services and the gateway as one unit, stop them as one.

The embedded broker keeps everything in memory, so it and the processes using it live and die
together (KAFKA.md): if any process exits on its own, the supervisor stops the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from common.settings import DEFAULT_METRICS_PORTS, DEFAULT_PORTS, SERVICE_NAMES
from localrun.broker import EmbeddedBroker
from localrun.child_process import die_with_parent
from localrun.local_stack import AlreadyRunning, check_free, ensure_local_admin, hold_run_lock

# Local runs want a health stream that is UP within seconds (KAFKA.md); explicit settings win.
LOCAL_KAFKA_DEFAULTS = {
    "MC_KAFKA_FETCH_MAX_WAIT_MS": "250",
    # Event consumers feed read models and safety nets that nobody waits on: Faust's own
    # 1.5 s wait, so an idle one asks the broker 0.7 times a second instead of 4.
    "MC_KAFKA_EVENTS_FETCH_MAX_WAIT_MS": "1500",
    # A ping waits up to this long before a service answers it; the verdict on a silent service
    # waits on the gateway's pong reads (250 ms above), so it is still DOWN within 2.75 s, and a
    # live one's pongs arrive at most 1 + 0.5 + 0.25 s apart, under the 2.5 s threshold.
    "MC_KAFKA_PING_FETCH_MAX_WAIT_MS": "500",
    # A heartbeat a second rather than two: each is a broker request per consumer, and the
    # broker's idle CPU is its clients' requests. Joining takes half the session (1.5 s).
    "MC_KAFKA_SESSION_TIMEOUT_S": "3",
    "MC_KAFKA_HEARTBEAT_INTERVAL_S": "1",
}
STOP_GRACE_S = 10.0
READY_TIMEOUT_S = 90.0


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    # The last line it printed: a process that cannot start says why in it (one line).
    last_line: str = ""
    # Set once all it printed has been relayed (its output closed).
    relayed: asyncio.Event = field(default_factory=asyncio.Event)


def _port(name: str) -> int:
    return int(os.environ.get(f"MC_{name.upper()}_PORT", DEFAULT_PORTS[name]))


def _metrics_env(name: str, env: dict[str, str]) -> dict[str, str]:
    """The service's env with its own MC_METRICS_PORT: one variable per process, as in the
    chart, but three services on one machine each need a port of their own."""
    port = env.get(f"MC_{name.upper()}_METRICS_PORT", str(DEFAULT_METRICS_PORTS[name]))
    return {**env, "MC_METRICS_PORT": port}


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _relay_output(child: Child) -> None:
    """Prefix each line a child prints with its name, as process runners do."""
    assert child.process.stdout is not None
    width = max(len(n) for n in ("gateway", *SERVICE_NAMES))
    async for raw in child.process.stdout:
        line = raw.decode(errors="replace")
        if line.strip():
            child.last_line = line.strip()
        sys.stdout.write(f"{child.name:<{width}} | {line}")
        sys.stdout.flush()
    child.relayed.set()


async def _start(name: str, module: str, env: dict[str, str]) -> Child:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        preexec_fn=die_with_parent(),
    )
    return Child(name, process)


def _health(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            body: dict[str, object] = json.load(response)
            return body
    except OSError:
        return None
    except ValueError:
        return None


async def _wait_until_up(url: str, children: list[Child]) -> float:
    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT_S:
        for child in children:
            if child.process.returncode is not None:
                with contextlib.suppress(TimeoutError):  # its last words may be in the pipe
                    await asyncio.wait_for(child.relayed.wait(), 2)
                reason = child.last_line or "it printed nothing"
                raise RuntimeError(
                    f"{child.name} exited with status {child.process.returncode}: {reason}"
                )
        body = await asyncio.to_thread(_health, url)
        if body is not None and body.get("status") == "UP":
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} was not UP after {READY_TIMEOUT_S:.0f}s")


async def _stop(children: list[Child]) -> None:
    """The gateway first (it stops taking traffic), then the services, each given a grace."""
    for group in (
        [c for c in children if c.name == "gateway"],
        [c for c in children if c.name != "gateway"],
    ):
        for child in group:
            if child.process.returncode is None:
                child.process.terminate()
        for child in group:
            try:
                await asyncio.wait_for(child.process.wait(), STOP_GRACE_S)
            except TimeoutError:
                _say(f"{child.name} did not stop within {STOP_GRACE_S:.0f}s; killing it")
                child.process.kill()
                await child.process.wait()


async def _seed(gateway_url: str, env: dict[str, str]) -> None:
    """Load the demo catalog through the public API, as a shop's admin would."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "localrun.seed",
        "--base-url",
        gateway_url,
        env=env,
        preexec_fn=die_with_parent(),
    )
    if await process.wait() != 0:
        _say(f"seeding failed (exit {process.returncode}); the services keep running")


async def supervise(*, seed: bool = False) -> int:
    host = os.environ.get("MC_HOST", "127.0.0.1")
    data_dir = Path(os.environ.get("MC_DATA_DIR", "var"))
    # Before anything is written or started: a second run must leave the first one (its
    # processes, its data, its logs) exactly as they were.
    try:
        run_lock = hold_run_lock(data_dir)
        check_free(host, os.environ)
    except AlreadyRunning as refused:
        _say(f"make run: refusing to start: {refused}")
        return 1
    with run_lock:
        return await _supervise(host, data_dir, seed=seed)


async def _supervise(host: str, data_dir: Path, *, seed: bool) -> int:
    (data_dir / "log").mkdir(parents=True, exist_ok=True)
    env = {**LOCAL_KAFKA_DEFAULTS, **os.environ, "PYTHONUNBUFFERED": "1"}
    # The services prove themselves to user_svc with a shared credential; a local run makes
    # a fresh one unless the environment brings its own (production: a Kubernetes Secret).
    env.setdefault("MC_SERVICE_CREDENTIAL", secrets.token_urlsafe(32))
    admin_password_file = ensure_local_admin(env)

    broker: EmbeddedBroker | None = None
    if not os.environ.get("MC_KAFKA_BOOTSTRAP"):
        with (data_dir / "log" / "broker.log").open("ab") as broker_log:
            port = int(os.environ.get("MC_EMBEDDED_KAFKA_PORT", "9092"))
            broker = EmbeddedBroker.start(host, port, log=broker_log)
        env["MC_KAFKA_BOOTSTRAP"] = broker.bootstrap

    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_requested.set)

    children: list[Child] = []
    relays: list[asyncio.Task[None]] = []
    exit_code = 0
    try:
        for service in SERVICE_NAMES:
            children.append(await _start(service, f"{service}_svc", _metrics_env(service, env)))
        children.append(await _start("gateway", "gateway", env))
        relays = [asyncio.create_task(_relay_output(c)) for c in children]

        gateway_url = f"http://{host}:{_port('gateway')}"
        up_task = asyncio.create_task(_wait_until_up(f"{gateway_url}/health", children))
        stop_task = asyncio.create_task(stop_requested.wait())
        await asyncio.wait({up_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if up_task.done():
            took = up_task.result()
            _say(f"\nMicroCommerce is UP ({took:.1f}s). Ctrl-C stops everything.")
            _say(f"  gateway  {gateway_url}  (REST /api/v1, /docs, /health, /metrics)")
            for service in SERVICE_NAMES:
                _say(f"  {service:<8} {host}:{_port(service)}  (gRPC)")
            kafka = f"{broker.bootstrap} (embedded Tansu)" if broker else env["MC_KAFKA_BOOTSTRAP"]
            _say(f"  kafka    {kafka}")
            admin = env["MC_ADMIN_EMAIL"]
            if admin_password_file:
                admin += f"  (password in {admin_password_file})"
            _say(f"  admin    {admin}\n")
            if seed:
                await _seed(gateway_url, env)
        else:
            up_task.cancel()

        exited = [asyncio.create_task(c.process.wait()) for c in children]
        await asyncio.wait({stop_task, *exited}, return_when=asyncio.FIRST_COMPLETED)
        for child in children:
            if child.process.returncode is not None and not stop_requested.is_set():
                _say(f"{child.name} exited with {child.process.returncode}; stopping the rest")
                exit_code = 1
    except (RuntimeError, TimeoutError) as error:
        _say(f"start-up failed: {error}")
        exit_code = 1
    finally:
        await _stop(children)
        for relay in relays:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(relay, 2)
        if broker is not None:
            broker.stop()
    _say("stopped")
    return exit_code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--seed",
        action="store_true",
        help="once everything is up, load the demo catalog (make run ARGS=--seed)",
    )
    arguments = parser.parse_args()
    sys.exit(asyncio.run(supervise(seed=arguments.seed)))


if __name__ == "__main__":
    main()
