"""Run every benchmark of bench/ (each public module with a ``main(argv)``), in name order."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Callable, Sequence

import bench

Benchmark = Callable[[Sequence[str]], int]


def discover() -> dict[str, Benchmark]:
    """Benchmark name -> its ``main``; modules named with a leading underscore are helpers."""
    found: dict[str, Benchmark] = {}
    for info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bench.{info.name}")
        run = getattr(module, "main", None)
        if callable(run):
            found[info.name] = run
    return found


def main(argv: Sequence[str] | None = None) -> int:
    benchmarks = discover()
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the benchmarks; other arguments (e.g. --duration 3) go to each one.",
        epilog="A benchmark's own options: python -m bench.NAME --help",
    )
    parser.add_argument(
        "--only", action="append", choices=sorted(benchmarks), help="run just this one"
    )
    options, rest = parser.parse_known_args(argv)
    status = 0
    for name, run in benchmarks.items():
        if options.only and name not in options.only:
            continue
        sys.stderr.write(f"== bench.{name}\n")
        status = max(status, run(rest))
    return status


if __name__ == "__main__":
    sys.exit(main())
