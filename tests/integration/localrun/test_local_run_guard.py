"""`make run` started twice, or over a taken port: one line, and the running stack untouched."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from localrun.broker import free_port
from localrun.local_stack import (
    LOCAL_ADMIN_EMAIL,
    admin_credentials,
    ensure_local_admin,
    hold_run_lock,
)
from tests.support.processes import ROOT


def run_env(data_dir: Path) -> dict[str, str]:
    """Free ports for everything a run listens on, so nothing else on the machine matters."""
    ports = {
        f"MC_{name}_PORT": str(free_port())
        for name in ("GATEWAY", "PAYMENT", "PRODUCT", "USER", "EMBEDDED_KAFKA")
    }
    metrics = {
        f"MC_{name}_METRICS_PORT": str(free_port()) for name in ("PAYMENT", "PRODUCT", "USER")
    }
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MC_")}
    return {**inherited, **ports, **metrics, "MC_DATA_DIR": str(data_dir)}


def supervise(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "localrun.supervisor"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def snapshot(directory: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(path.relative_to(directory)): (path.stat().st_mtime_ns, path.read_bytes())
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def running_stack_dir(tmp_path: Path) -> Iterator[Path]:
    """A data directory as a running `make run` keeps it: locked, with its logs."""
    data_dir = tmp_path / "var"
    lock = hold_run_lock(data_dir)  # what the first run holds for as long as it runs
    (data_dir / "log").mkdir()
    (data_dir / "log" / "broker.log").write_text("the running broker's log\n")
    (data_dir / "admin-password").write_text("secret-of-the-first-run")
    yield data_dir
    lock.close()


def test_a_second_run_refuses_in_one_line_and_touches_nothing(running_stack_dir: Path) -> None:
    before = snapshot(running_stack_dir)

    second = supervise(run_env(running_stack_dir))

    assert second.returncode == 1
    lines = second.stdout.strip().splitlines()
    assert len(lines) == 1, second.stdout
    assert "already running" in lines[0]
    assert str(os.getpid()) in lines[0], "names the process that holds the stack"
    assert second.stderr == ""
    assert snapshot(running_stack_dir) == before


def test_a_taken_port_is_refused_naming_its_variable_before_anything_starts(
    tmp_path: Path,
) -> None:
    env = run_env(tmp_path / "var")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env["MC_GATEWAY_PORT"] = str(taken.getsockname()[1])

        refused = supervise(env)

    assert refused.returncode == 1
    lines = refused.stdout.strip().splitlines()
    assert len(lines) == 1, refused.stdout
    assert f"{env['MC_GATEWAY_PORT']} (MC_GATEWAY_PORT)" in lines[0]
    assert not (tmp_path / "var" / "log").exists(), "no broker was started, no log written"


def test_the_seeder_finds_the_admin_password_a_run_generated(tmp_path: Path) -> None:
    run = {"MC_DATA_DIR": str(tmp_path)}
    password_file = ensure_local_admin(dict(run))

    found = admin_credentials(run)  # what `make seed` sees, with nothing set

    assert found is not None
    assert password_file is not None
    assert found.email == LOCAL_ADMIN_EMAIL
    assert found.password == Path(password_file).read_text().strip()
    assert admin_credentials({**run, "MC_ADMIN_EMAIL": "boss@example.com"}) is None
