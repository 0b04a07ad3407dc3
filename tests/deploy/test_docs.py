"""The README's "Deploying" section documents every top-level value of the chart."""

from __future__ import annotations

import re

import yaml  # type: ignore[import-untyped]

from tests.deploy.chart import CHART
from tests.support.processes import ROOT


def deploying_section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("\n## Deploying\n", 1)[1].split("\n## ", 1)[0]


def test_every_top_level_value_has_a_row_in_the_values_table() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = [line for line in deploying_section().splitlines() if line.startswith("| `")]
    documented = {name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert set(values) <= documented, sorted(set(values) - documented)


def test_every_top_level_value_has_a_comment_in_values_yaml() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^\w+:", line):
            assert lines[number - 1].startswith("#"), f"values.yaml:{number + 1} {line}"
