"""The official AsyncAPI parser (@asyncapi/parser, node) reads /asyncapi.json without a complaint.

Installed pinned into .tools/ by `make asyncapi-tools` (a prerequisite of `make test`); skips
without node or the package, and fails under CI=true where both must be present.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.asyncapi import build_asyncapi, discover_events

ROOT = Path(__file__).resolve().parents[3]
MODULES = ROOT / ".tools/asyncapi/node_modules"
SCRIPT = ROOT / "tests/support/asyncapi_parse.mjs"


def test_the_official_parser_accepts_the_document_with_every_event(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not (MODULES / "@asyncapi/parser").exists():
        message = "@asyncapi/parser is not installed: run `make asyncapi-tools` (needs npm)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    document = tmp_path / "asyncapi.json"
    document.write_text(json.dumps(build_asyncapi(title="MicroCommerce API events", version="1")))

    done = subprocess.run(
        [node, str(SCRIPT), str(MODULES), str(document)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    parsed = json.loads(done.stdout)

    assert parsed["errors"] == []
    assert parsed["warnings"] == []
    assert parsed["ok"]
    assert {spec.type for _, spec in discover_events()} <= set(parsed["messages"])
