"""The README and docs/ point at things that exist: files they link, make targets they name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
_MAKE = re.compile(r"`make ([a-z][a-z-]*)")


def _targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):(?!=)", (ROOT / "Makefile").read_text(), re.M))


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_relative_link_leads_to_a_file_of_the_repository(document: Path) -> None:
    links = [link for link in _LINK.findall(document.read_text()) if "://" not in link]
    missing = [link for link in links if not (document.parent / link).exists()]
    assert missing == []


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_make_command_named_is_a_target_of_the_makefile(document: Path) -> None:
    named = set(_MAKE.findall(document.read_text()))
    assert named - _targets() == set()


def test_the_readme_links_the_contract_and_the_architecture_notes() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "(docs/CONTRACT.md)" in readme
    assert "(docs/ARCHITECTURE.md)" in readme
