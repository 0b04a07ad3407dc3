"""Child processes the benches start: logged to a file, stopped (then killed) on the way out."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench.gateway_overhead import _popen_options


@contextlib.contextmanager
def logged_child(
    module: str, args: Sequence[str], log_path: Path, *, stop_timeout_s: float
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m module *args``, its output appended to ``log_path``; terminated on exit,
    killed if it has not stopped ``stop_timeout_s`` later."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", module, *args], stdout=log, stderr=log, **_popen_options()
        )
    try:
        yield popen
    finally:
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(stop_timeout_s)
            except subprocess.TimeoutExpired:
                popen.kill()
