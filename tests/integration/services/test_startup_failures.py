"""A process that cannot start says in one line which process, what failed and what to set."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import make_url

from localrun.broker import free_port
from tests.support.processes import ROOT


def start(command: str, tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m common.entrypoint COMMAND`` (what the image and `make run` start)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MC_")},
        "MC_DATA_DIR": str(tmp_path),
        "MC_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",  # never reached: it fails first
        **settings,
    }
    return subprocess.run(
        [sys.executable, "-m", "common.entrypoint", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def last_words(finished: subprocess.CompletedProcess[str]) -> str:
    """The process's one-line reason: it exited 1 with it as its last stderr line, no traceback."""
    assert finished.returncode == 1, finished.stderr[-2000:]
    assert "Traceback" not in finished.stderr
    return finished.stderr.strip().splitlines()[-1]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_a_service_whose_port_is_taken_names_the_port_and_its_setting(
    tmp_path: Path, taken_port: int
) -> None:
    line = last_words(start("product", tmp_path, MC_PRODUCT_PORT=str(taken_port)))

    assert line.startswith("product: cannot start:")
    assert f"port {taken_port} is already in use" in line
    assert "MC_PRODUCT_PORT" in line


def test_the_gateway_whose_port_is_taken_names_the_port_and_its_setting(
    tmp_path: Path, taken_port: int
) -> None:
    line = last_words(start("gateway", tmp_path, MC_GATEWAY_PORT=str(taken_port)))

    assert line.startswith("gateway: cannot start:")
    assert f"port {taken_port} is already in use" in line
    assert "MC_GATEWAY_PORT" in line


@pytest.mark.postgres
def test_a_missing_postgresql_database_is_named_with_its_setting(
    tmp_path: Path, postgres_url: str
) -> None:
    missing = make_url(postgres_url).set(database=f"mc_missing_{uuid.uuid4().hex[:8]}")
    line = last_words(
        start(
            "product",
            tmp_path,
            MC_PRODUCT_PORT=str(free_port()),
            MC_PRODUCT_DATABASE_URL=missing.render_as_string(hide_password=False),
        )
    )

    assert line.startswith("product: cannot start: the database does not exist")
    assert f'"{missing.database}"' in line
    assert "MC_PRODUCT_DATABASE_URL" in line


def test_an_unreachable_database_is_named_with_its_setting(tmp_path: Path) -> None:
    nobody = free_port()
    line = last_words(
        start(
            "payment",
            tmp_path,
            MC_PAYMENT_PORT=str(free_port()),
            MC_PAYMENT_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{nobody}/shop",
        )
    )

    assert line.startswith("payment: cannot start: the database is unreachable")
    assert "MC_PAYMENT_DATABASE_URL" in line


def test_a_bad_setting_is_named_in_one_line(tmp_path: Path) -> None:
    line = last_words(start("user", tmp_path, MC_USER_PORT="eighty"))

    assert line.startswith("UserSettings: refusing to start: MC_USER_PORT:")
