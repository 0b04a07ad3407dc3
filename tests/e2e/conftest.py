"""The whole stack as real processes: broker, three services, gateway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from localrun.broker import EmbeddedBroker
from tests.support.processes import Stack, start_stack


@pytest.fixture(scope="module")
def stack(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(broker.bootstrap, Path(tmp_path_factory.mktemp("stack")))
    yield running
    running.stop()
