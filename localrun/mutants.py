"""The score and survivors of the last ``mutmut run`` (``make mutants`` prints this after it).

``python -m localrun.mutants run [mutmut run arguments]`` runs mutmut itself, with its
wall-clock timeout fixed (see ``_timeout_checker``); ``make mutants`` runs it that way.

mutmut's own ``results`` lists one line per mutant; this adds what a reader wants first: the
share of mutants the tests caught, the survivors with the line each one changed, and the
mutants no selected test reaches at all.

Survivors are split in two. A *text* survivor only changed the human-readable message of an
error or a log call (mutmut turns ``Aborted("no stock")`` into ``Aborted("XXno stockXX")`` or
``Aborted(None)``); tests deliberately do not pin wording, so these are harmless and only
counted. Every other survivor changed code that decides something and is listed with its diff.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import fnmatch
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import mutmut.__main__ as mutmut_main  # type: ignore[import-untyped]

# A test run that crashed or ran out of time also noticed the mutant.
CAUGHT = ("killed", "timeout", "segfault")
_LINE = re.compile(r"^\s*(?P<name>[\w.]+__mutmut_\d+): (?P<status>.+)$")


def parse(results: str) -> dict[str, str]:
    """Mutant name → status, from ``mutmut results --all true``."""
    return {m["name"]: m["status"].strip() for m in map(_LINE.match, results.splitlines()) if m}


def function_of(mutant: str) -> str:
    """``payment_svc.domain.xǁOrderǁrefund__mutmut_3`` → ``payment_svc.domain.Order.refund``."""
    name = mutant.rsplit("__mutmut_", 1)[0]
    module, _, function = name.rpartition(".")
    return f"{module}.{function.removeprefix('x_').removeprefix('xǁ').replace('ǁ', '.')}"


_LOG_METHODS = frozenset({"debug", "info", "warning", "error", "exception", "critical"})


@cache
def _functions(module: str) -> dict[str, ast.AST]:
    """Every function of mutmut's copy of ``module`` (originals and mutants), by name."""
    path = Path("mutants") / (module.replace(".", "/") + ".py")
    tree = ast.parse(path.read_text())
    return {
        node.name: node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def _original_and_mutant(mutant: str) -> tuple[ast.AST, ast.AST] | None:
    name, _, number = mutant.rpartition("__mutmut_")
    module, _, function = name.rpartition(".")
    functions = _functions(module)
    original = functions.get(f"{function}__mutmut_orig")
    changed = functions.get(f"{function}__mutmut_{number}")
    return (original, changed) if original and changed else None


def _is_message_call(call: ast.Call) -> bool:
    """An error built from a message (``SomeError("...")``) or a log call."""
    func = call.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return called in _LOG_METHODS or called[:1].isupper()


class _WithoutMessages(ast.NodeTransformer):
    """Drops the text argument of every error and log call, and the function's own name."""

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        first = node.args[0] if node.args else None
        is_text = isinstance(first, ast.JoinedStr) or (
            isinstance(first, ast.Constant)
            and (first.value is None or isinstance(first.value, str))
        )
        if is_text and _is_message_call(node):
            node.args = node.args[1:]
        return node


def _normalised(function: ast.AST) -> str:
    copy = ast.parse(ast.unparse(function)).body[0]
    assert isinstance(copy, ast.FunctionDef | ast.AsyncFunctionDef)
    copy.name = "f"
    return ast.dump(_WithoutMessages().visit(copy))


def text_only(mutant: str) -> bool:
    """True when the mutant changes only an error's message or what a log call records."""
    pair = _original_and_mutant(mutant)
    if pair is None:
        return False
    original, changed = pair
    removed = [line for line in _changed_lines(original, changed) if line.startswith("-")]
    if removed and all(line[1:].strip().startswith("_log.") for line in removed):
        return True
    return _normalised(original) == _normalised(changed)


def _changed_lines(original: ast.AST, changed: ast.AST) -> list[str]:
    """The differing lines of two versions of a function ("-" original, "+" mutant)."""
    # The def lines differ by the function's name alone unless a default was mutated.
    before, after = (
        ast.unparse(node).split("(", 1)[1].splitlines() for node in (original, changed)
    )
    return [
        line
        for line in difflib.unified_diff(before, after, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def diff_of(mutant: str) -> str:
    """The changed source lines of a mutant, original first."""
    pair = _original_and_mutant(mutant)
    if pair is None:
        return "(source not found)"
    changed = [f"{line[0]} {line[1:].strip()}" for line in _changed_lines(*pair)]
    return " | ".join(changed) or "(no textual change)"


def report(statuses: dict[str, str]) -> str:
    counts = Counter(statuses.values())
    caught = sum(counts[status] for status in CAUGHT)
    judged = caught + counts["survived"]
    score = 100 * caught / judged if judged else 0.0
    survivors = sorted(name for name, status in statuses.items() if status == "survived")
    texts = {name for name in survivors if text_only(name)}
    decisive = [name for name in survivors if name not in texts]
    lines = [
        f"mutants: {len(statuses)}  caught: {caught} ({counts['timeout']} by timeout)  "
        f"survived: {counts['survived']} "
        f"({len(texts)} of them only in a message text)  no tests: {counts['no tests']}",
        f"score: {score:.1f}% of the mutants the selected tests reach were caught",
        f"score without message-text mutants: "
        f"{100 * caught / (caught + len(decisive)) if caught + len(decisive) else 0.0:.1f}%",
    ]
    if decisive:
        lines.append(f"survivors that change code, not text ({len(decisive)}):")
        lines.extend(f"  {name}: {diff_of(name)}" for name in decisive)
    untested: dict[str, list[str]] = defaultdict(list)
    for name, status in sorted(statuses.items()):
        if status == "no tests":
            untested[function_of(name)].append(name.rsplit("_", 1)[1])
    if untested:
        lines.append("functions no selected test reaches (mutant numbers):")
        lines.extend(
            f"  {fn}: {' '.join(sorted(ids, key=int))}" for fn, ids in sorted(untested.items())
        )
    return "\n".join(lines)


def in_scope(statuses: dict[str, str], patterns: list[str]) -> dict[str, str]:
    """The mutants whose names match any pattern (``payment_svc.saga.*``); all without one.

    A scoped ``mutmut run`` regenerates every file's mutants and so forgets the results of
    other scopes: their mutants read "not checked" and must not dilute this scope's score.
    """
    if not patterns:
        return statuses
    return {
        name: status
        for name, status in statuses.items()
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
    }


def _timeout_checker(mutants: list[tuple[Any, str, Any]]) -> Callable[[], None]:
    """mutmut 3.4's wall-clock watchdog, with each running mutant held to its own limit.

    mutmut's own checker compares every running child of a file with the estimate of each
    mutant of that file in turn, so a mutant whose tests take a minute is killed after 15 s as
    soon as some mutant of the same file has no or only fast tests (on the saga, one in five
    was reported "timeout", i.e. caught, for that reason alone). The limit is mutmut's: fifteen
    times the mutant's tests' measured time, plus fifteen seconds.
    """
    files = list({id(data): data for data, _, _ in mutants}.values())

    def check() -> None:
        while True:
            time.sleep(1)
            now = datetime.now()
            for data in files:
                with mutmut_main.START_TIMES_BY_PID_LOCK:
                    started = dict(data.start_time_by_pid)
                    names = dict(data.key_by_pid)
                for pid, start in started.items():
                    estimate = data.estimated_time_of_tests_by_mutant.get(names.get(pid), 0.0)
                    if (now - start).total_seconds() > (estimate + 1) * 15:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGXCPU)

    return check


def run_mutmut(argv: list[str]) -> int:
    """``mutmut run ARGS`` with the timeout checker above (``make mutants`` runs this)."""
    mutmut_main.timeout_checker = _timeout_checker
    try:
        mutmut_main.cli(["run", *argv], standalone_mode=False)
    except SystemExit as ended:
        return ended.code if isinstance(ended.code, int) else 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        return run_mutmut(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "patterns",
        nargs="*",
        help="report only mutants matching these names (as given to `mutmut run`)",
    )
    args = parser.parse_args(argv)
    listed = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        capture_output=True,
        text=True,
        check=True,
    )
    statuses = in_scope(parse(listed.stdout), args.patterns)
    if not statuses:
        sys.stderr.write("no mutmut results found: run `make mutants` first\n")
        return 1
    sys.stdout.write(report(statuses) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
