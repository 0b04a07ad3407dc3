"""`make help` lists every target of the Makefile, and the key targets work as documented."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.support.processes import ROOT

# A rule line: "name: prerequisites"; variables, pattern and file targets are not for people.
_RULE = re.compile(r"^([a-z][a-z-]*):(?!=)", re.MULTILINE)


def make(*arguments: str, env: dict[str, str] | None = None) -> str:
    finished = subprocess.run(
        ["make", "--no-print-directory", "-s", *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return finished.stdout


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    declared = re.search(r"^\.PHONY:(.*?)(?<!\\)$", text, re.MULTILINE | re.DOTALL)
    assert declared is not None, "the Makefile declares its .PHONY targets"
    phony = set(declared[1].split())
    phony.discard("\\")
    rules = set(_RULE.findall(text))
    assert rules <= phony, f"declare these .PHONY: {sorted(rules - phony)}"
    return rules


def test_make_help_lists_every_target_with_what_it_does() -> None:
    listed = {}
    for line in make("help").splitlines():
        _, target, description = line.split(maxsplit=2)
        listed[target] = description

    assert set(listed) == makefile_targets()
    assert all(len(description) > 10 for description in listed.values())


def test_the_key_targets_rotate_and_list_the_local_signing_keys(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MC_")},
        "MC_DATA_DIR": str(tmp_path),
    }

    rotated = make("keys-rotate", env=env)
    again = make("keys-rotate", env=env)
    listed = make("keys-list", env=env)

    first_kid = rotated.split()[3]
    second_kid = again.split()[3]
    assert rotated == f"new signing key {first_kid} in {tmp_path / 'keys'}\n"
    assert [line.split()[0] for line in listed.splitlines()] == [first_kid, second_kid]
