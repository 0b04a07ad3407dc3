"""The repository must look the same after a test run as before it: no stray files.

A run or a test that writes into the working tree (Faust's ``<app id>-data`` folders did, in the
repository root) shows up here as a path git sees as new, ignored files included.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def untracked(root: Path) -> set[str] | None:
    """Paths under ``root`` git does not track, ignored ones included; None outside a git tree."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--others", "--directory"],
            cwd=root,
            check=True,
            capture_output=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {name.decode() for name in listed.split(b"\0") if name}


# Written by the tooling a run needs, not by the code under test.
EXPECTED = (
    ".venv/",
    "gen/",
    "tests/gen/",
    ".tools/",
    ".mypy_cache/",
    ".ruff_cache/",
    ".pytest_cache/",
    "var/",
)


def left_behind(before: set[str] | None, after: set[str] | None) -> list[str]:
    """What appeared during the run, less the tooling's own folders and Python's caches."""
    if before is None or after is None:
        return []
    return sorted(
        path
        for path in after - before
        if not path.startswith(EXPECTED) and "__pycache__" not in path
    )
