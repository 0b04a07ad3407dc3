"""`make run` as a new user types it: from a clean copy, probed through REST, then SIGTERM."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from localrun.broker import free_port
from tests.support.processes import ROOT, wait_for

# A clean copy installs its virtualenv from the lock and generates its code first.
FIRST_START_S = 300.0


def clean_copy(destination: Path) -> Path:
    """The files a fresh clone would have (tracked, plus new files not ignored), nothing built."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in listed)):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def processes_in(directory: Path) -> list[str]:
    """Every live process whose working directory is inside ``directory``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if cwd == directory or directory in cwd.parents:
            found.append(f"{entry.name}: {command}")
    return found


@pytest.fixture
def copy(tmp_path: Path) -> Iterator[Path]:
    directory = clean_copy(tmp_path / "microcommerce")
    yield directory
    for line in processes_in(directory):  # never leave a stray process to the next test
        os.kill(int(line.split(":")[0]), signal.SIGKILL)


async def test_make_run_starts_everything_and_sigterm_stops_it_all(copy: Path) -> None:
    ports = {name: free_port() for name in ("GATEWAY", "PAYMENT", "PRODUCT", "USER")}
    # make run's metrics ports are fixed (9181-9183) like its service ports.
    metrics_ports = {name: free_port() for name in ("PAYMENT", "PRODUCT", "USER")}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MC_", "VIRTUAL_ENV"))},
        **{f"MC_{name}_PORT": str(port) for name, port in ports.items()},
        "MC_EMBEDDED_KAFKA_PORT": str(free_port()),
        **{f"MC_{name}_METRICS_PORT": str(port) for name, port in metrics_ports.items()},
    }
    output = copy / "make-run.log"
    with output.open("wb") as log:
        make = await asyncio.create_subprocess_exec(
            "make", "run", cwd=copy, env=env, stdout=log, stderr=log
        )
    gateway = f"http://127.0.0.1:{ports['GATEWAY']}"

    async def announced_up() -> bool:
        assert make.returncode is None, output.read_text()[-3000:]
        return "MicroCommerce is UP" in output.read_text(errors="replace")

    try:
        await wait_for(announced_up, within=FIRST_START_S, interval=0.5)
        async with aiohttp.ClientSession(gateway) as http:
            async with http.get("/health") as health:
                assert health.status == 200
                assert (await health.json())["status"] == "UP"
            async with http.get("/docs") as docs:
                assert docs.status == 200
            async with http.get("/api/v1/products") as products:
                assert products.status == 200  # the catalog (issue 3) answers from a fresh clone
        for name, port in metrics_ports.items():
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{port}/metrics") as metrics,
            ):
                assert metrics.status == 200, name
                assert "grpc_server_handled_total" in await metrics.text(), name
        printed = output.read_text()
        for name, port in ports.items():
            assert f"127.0.0.1:{port}" in printed, f"{name} missing from the start-up table"
        await a_second_make_run_refuses_and_leaves_the_first_serving(copy, env, gateway)
    finally:
        make.send_signal(signal.SIGTERM)
        await asyncio.wait_for(make.wait(), 60)

    assert "stopped" in output.read_text()
    assert processes_in(copy) == []


async def a_second_make_run_refuses_and_leaves_the_first_serving(
    copy: Path, env: dict[str, str], gateway: str
) -> None:
    """Issue 16: a second `make run` on the same copy, while the first serves, refuses in one
    line and touches nothing of the running stack (its broker's log above all)."""
    broker_log = copy / "var" / "log" / "broker.log"
    log_before = broker_log.read_bytes()
    # --no-print-directory: make's own chatter is not the program's answer.
    second = await asyncio.create_subprocess_exec(
        "make",
        "--no-print-directory",
        "run",
        cwd=copy,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(second.communicate(), 120)

    assert second.returncode != 0
    lines = stdout.decode().strip().splitlines()
    assert len(lines) == 1, stdout.decode()
    assert "already running" in lines[0]
    assert "UP" not in lines[0], "never announces the first stack's gateway as its own"
    # make adds its own "Error 1" line on stderr; nothing else (no traceback).
    assert "Traceback" not in stderr.decode(), stderr.decode()
    # The first stack's broker may still append to it; never truncated or rewritten.
    assert broker_log.read_bytes().startswith(log_before)
    async with aiohttp.ClientSession(gateway) as http, http.get("/health") as health:
        assert health.status == 200
        assert (await health.json())["status"] == "UP"
