"""Fixtures of the deployment tests: the pinned tools and the chart rendered with them."""

from __future__ import annotations

import pytest

from tests.deploy.tooling import Tools, require_tools


@pytest.fixture(scope="session")
def tools() -> Tools:
    return require_tools()
