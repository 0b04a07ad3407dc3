"""What `make run` costs while nobody uses it: CPU and RSS per process, and time to DOWN.

Starts the stack exactly as `make run` does (``localrun.supervisor``, its defaults, an embedded
broker), on free ports and in a temporary data directory. Once ``/health`` is UP and a settling
time has passed, it samples every process (broker, three services, gateway) for ``--duration``
seconds (30 by default) of nothing: CPU as a share of one core, and resident memory. Then it
freezes one service (SIGSTOP, so the supervisor does not see an exit) and reports how long the
gateway took to call it DOWN: the idle settings must still meet the contract's 3 s.

Targets (issue 13): every process <= 1 % of a core, every service <= 80 MB RSS, DOWN <= 3 s.
A cell over its target is marked ``!``; a process that is missing or exits makes the run fail.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from common.settings import SERVICE_NAMES
from localrun.broker import free_port
from localrun.child_process import die_with_parent

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
RESULTS_FILE = RESULTS_DIR / "idle.json"

LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
CPU_TARGET_PERCENT = 1.0
RSS_TARGET_MB = 80.0
DOWN_TARGET_S = 3.0
DOWN_TIMEOUT_S = 15.0
# The process names of the table, in column order.
PROCESSES = ("broker", *SERVICE_NAMES, "gateway")


@dataclass(frozen=True)
class Row:
    process: str
    pid: int
    cpu_percent: float
    rss_mb: float
    over_target: bool


# --- /proc ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident set size in MiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def name_of(pid: int) -> str | None:
    """Which process of the stack this is, from its command line."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    words = [a.decode(errors="replace") for a in argv]
    if "broker" in words and "--listener-url" in words:
        return "broker"
    if "-m" in words:
        module = words[words.index("-m") + 1]
        if module == "gateway":
            return "gateway"
        if module.endswith("_svc") and module[: -len("_svc")] in SERVICE_NAMES:
            return module[: -len("_svc")]
    return None


# --- The stack -----------------------------------------------------------------------------


@contextlib.contextmanager
def make_run(data_dir: Path, log_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`make run` (the supervisor and its defaults) on free ports; stopped on exit."""
    ports = {f"MC_{name.upper()}_PORT": str(free_port()) for name in (*SERVICE_NAMES, "gateway")}
    metrics = {f"MC_{name.upper()}_METRICS_PORT": str(free_port()) for name in SERVICE_NAMES}
    env = {
        # Whatever the caller's shell set for Kafka would not be `make run`'s defaults.
        **{k: v for k, v in os.environ.items() if not k.startswith("MC_")},
        **ports,
        **metrics,
        "MC_EMBEDDED_KAFKA_PORT": str(free_port()),
        "MC_DATA_DIR": str(data_dir),
        "PYTHONUNBUFFERED": "1",
    }
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "localrun.supervisor"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent(),
        )
    try:
        yield popen, f"http://{LOOPBACK}:{ports['MC_GATEWAY_PORT']}"
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGINT)
            try:
                popen.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()


def health(gateway: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"{gateway}/health", timeout=2) as response:
            body: dict[str, object] = json.load(response)
            return body
    except urllib.error.HTTPError as error:  # 503 still carries the body
        with contextlib.suppress(ValueError):
            answer: dict[str, object] = json.load(error)
            return answer
        return None
    except (OSError, ValueError):
        return None


def wait_until_up(popen: subprocess.Popen[bytes], gateway: str, log_path: Path) -> float:
    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT_S:
        if popen.poll() is not None:
            raise RuntimeError(f"make run exited ({popen.returncode}); see {log_path}")
        body = health(gateway)
        if body is not None and body.get("status") == "UP":
            return time.monotonic() - started
        time.sleep(0.2)
    raise RuntimeError(f"/health was not UP after {READY_TIMEOUT_S:g} s; see {log_path}")


def stack_pids(supervisor: int) -> dict[str, int]:
    pids: dict[str, int] = {}
    for pid in children_of(supervisor):
        name = name_of(pid)
        if name is not None:
            pids[name] = pid
    missing = [name for name in PROCESSES if name not in pids]
    if missing:
        raise RuntimeError(f"processes not found under the supervisor: {', '.join(missing)}")
    return pids


def sample(pids: dict[str, int], seconds: float) -> list[Row]:
    """CPU over ``seconds`` of idleness, and RSS at its end, of every process."""
    wall0 = time.monotonic()
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    time.sleep(seconds)
    wall = time.monotonic() - wall0
    rows: list[Row] = []
    for name in PROCESSES:
        pid = pids[name]
        cpu = 100 * (cpu_seconds(pid) - cpu0[name]) / wall
        rss = rss_mb(pid)
        over = cpu > CPU_TARGET_PERCENT or (name in SERVICE_NAMES and rss > RSS_TARGET_MB)
        rows.append(Row(name, pid, round(cpu, 2), round(rss, 1), over))
    return rows


def time_to_down(gateway: str, pid: int, service: str) -> float:
    """Freeze ``service`` and time until /health says it is DOWN; thaw it again."""
    os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    try:
        while time.monotonic() - started < DOWN_TIMEOUT_S:
            body = health(gateway)
            services = body.get("services") if body is not None else None
            if isinstance(services, dict) and services.get(service, {}).get("status") == "DOWN":
                return time.monotonic() - started
            time.sleep(0.02)
    finally:
        os.kill(pid, signal.SIGCONT)
    raise RuntimeError(f"{service} was not DOWN {DOWN_TIMEOUT_S:g} s after it froze")


# --- Report --------------------------------------------------------------------------------


def format_table(rows: Sequence[Row], seconds: float, down_s: float, up_s: float) -> str:
    lines = [
        f"make run's defaults, idle for {seconds:g} s after /health was UP ({up_s:.1f} s to UP),"
        f" {os.cpu_count()} CPUs",
        "",
        f"{'process':<10} {'CPU % of a core':>16} {'RSS MB':>8}",
    ]
    for row in rows:
        mark = "  !" if row.over_target else ""
        lines.append(f"{row.process:<10} {row.cpu_percent:>16.2f} {row.rss_mb:>8.1f}{mark}")
    total = sum(row.cpu_percent for row in rows)
    lines.append(f"{'all':<10} {total:>16.2f} {sum(row.rss_mb for row in rows):>8.1f}")
    down_mark = "  !" if down_s > DOWN_TARGET_S else ""
    lines += [
        "",
        f"a frozen service (product, SIGSTOP) was DOWN in /health after {down_s:.2f} s{down_mark}",
        f"targets: <= {CPU_TARGET_PERCENT:g}% of a core per process, <= {RSS_TARGET_MB:g} MB RSS "
        f"per service, DOWN <= {DOWN_TARGET_S:g} s; '!' marks a miss",
    ]
    return "\n".join(lines) + "\n"


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__)
    parser.add_argument("--duration", type=int, default=30, help="seconds of idleness (30)")
    parser.add_argument(
        "--settle", type=float, default=5.0, help="seconds after UP before sampling (5)"
    )
    options, _unknown = parser.parse_known_args(argv)
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; arguments other benchmarks take (e.g. --warmup) are ignored."""
    options = _parse(sys.argv[1:] if argv is None else argv)
    # Idle means idle: a short --duration meant for the load benchmarks still gets 30 s here.
    seconds = max(options.duration, 30)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    log_path = RESULTS_DIR / "idle.make-run.log"
    try:
        with (
            tempfile.TemporaryDirectory(prefix="mc-bench-idle-") as data_dir,
            make_run(Path(data_dir), log_path) as (popen, gateway),
        ):
            up_s = wait_until_up(popen, gateway, log_path)
            time.sleep(options.settle)
            pids = stack_pids(popen.pid)
            rows = sample(pids, seconds)
            down_s = time_to_down(gateway, pids["product"], "product")
            if popen.poll() is not None:
                raise RuntimeError(f"make run exited during the measurement; see {log_path}")
    except RuntimeError as error:
        sys.stderr.write(f"idle benchmark FAILED: {error}\n")
        return 1
    sys.stdout.write("\n" + format_table(rows, seconds, down_s, up_s))
    document = {
        "benchmark": "idle",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": seconds,
        "seconds_to_up": round(up_s, 2),
        "seconds_to_down": round(down_s, 3),
        "processes": [asdict(row) for row in rows],
    }
    RESULTS_FILE.write_text(json.dumps(document, indent=2) + "\n")
    sys.stdout.write(f"\nwritten: {RESULTS_FILE.relative_to(ROOT)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
