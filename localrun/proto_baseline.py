"""The commit `make lint`'s `buf breaking` compares protos/ against, or why there is none.

The baseline is the last commit on main that changed protos/ before the changes being checked:
on a branch, main's protos where the branch left it (the merge base); on main itself, the
protos before HEAD (its first parent), so a merge is checked for what it brought. An intended
break is accepted by committing it with a ``Proto-Breaking-Change: <why>`` trailer: the newest
such commit in the range checked becomes the baseline, so only later changes are held to it.
``make lint BUF_BREAKING_AGAINST=<ref>`` overrides all of this (e.g. before the break is
committed).

Prints ``against <commit>`` or ``skip <reason>``; never fails, so a tarball or a shallow clone
gets a clear notice instead of a git error.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TRAILER = "Proto-Breaking-Change:"
MAINS = ("main", "origin/main")
PROTOS = "protos"


class NoBaseline(Exception):
    """Why there is nothing to compare against."""


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NoBaseline(done.stderr.strip() or f"git {' '.join(args)} failed")
    return done.stdout.strip()


def _verified(repo: Path, ref: str) -> str | None:
    try:
        return _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except NoBaseline:
        return None


def baseline(repo: Path, override: str = "") -> str:
    """The baseline commit; raises ``NoBaseline`` with a reason a person can act on."""
    try:
        _git(repo, "rev-parse", "--git-dir")
    except NoBaseline as error:
        raise NoBaseline("not a git checkout: no history to compare protos/ against") from error
    if override:
        commit = _verified(repo, override)
        if commit is None:
            raise NoBaseline(f"BUF_BREAKING_AGAINST={override} is not a commit here")
        return commit
    head = _verified(repo, "HEAD")
    if head is None:
        raise NoBaseline("no commit yet")
    main = next((c for c in map(lambda ref: _verified(repo, ref), MAINS) if c), None)
    base = _git(repo, "merge-base", head, main) if main else None
    if base is None or base == head:
        base = _verified(repo, "HEAD^")  # on main: what HEAD changed
    if base is None:
        shallow = _git(repo, "rev-parse", "--is-shallow-repository") == "true"
        if shallow:
            raise NoBaseline(
                "shallow clone: the history before HEAD is missing; run `git fetch "
                "--unshallow` (in CI: clone with full history, e.g. fetch-depth: 0)"
            )
        raise NoBaseline("HEAD is the first commit: nothing to compare against")
    accepted = _git(repo, "log", "-1", "--format=%H", f"--grep=^{TRAILER}", f"{base}..{head}")
    if accepted:
        return accepted
    changed = _git(repo, "log", "-1", "--format=%H", base, "--", PROTOS)
    if not changed:
        raise NoBaseline(f"no commit before {base[:12]} has {PROTOS}/")
    return changed


def main(argv: list[str]) -> None:
    """``python -m localrun.proto_baseline [REPO [OVERRIDE]]`` (the Makefile passes both)."""
    repo = Path(argv[0]) if argv else Path.cwd()
    try:
        answer = f"against {baseline(repo, argv[1] if len(argv) > 1 else '')}"
    except NoBaseline as reason:
        answer = f"skip {reason}"
    sys.stdout.write(answer + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
