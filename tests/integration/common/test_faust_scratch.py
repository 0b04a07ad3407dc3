"""Faust's data folders: temporary, never in the working directory, gone once a stream stops."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from common.kafka import BackgroundStream, create_faust_app
from common.settings import CommonSettings
from localrun.broker import EmbeddedBroker
from tests.support.processes import FAST_KAFKA, wait_for


def _contents(folder: Path) -> list[Path] | None:
    """What ``folder`` holds; None when it does not exist."""
    return list(folder.iterdir()) if folder.is_dir() else None


async def test_a_stream_writes_nothing_to_the_working_directory_and_removes_its_folder(
    broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    working = tmp_path / "cwd"
    working.mkdir()
    monkeypatch.chdir(working)
    settings = CommonSettings.model_validate(
        {
            "kafka_bootstrap": broker.bootstrap,
            "data_dir": str(tmp_path / "data"),
            **{key.removeprefix("MC_").lower(): value for key, value in FAST_KAFKA.items()},
        }
    )
    stream = BackgroundStream(create_faust_app("scratch-test", settings), settings)
    datadir = Path(stream.app.conf.datadir)
    assert datadir.parent == Path(tempfile.gettempdir())
    stream.start()
    try:

        async def started() -> bool:
            return stream.running()

        await wait_for(started, within=30, interval=0.1)
        assert _contents(datadir) is not None, "Faust made its folder where it was told"
    finally:
        await stream.stop()

    assert _contents(working) == []
    assert _contents(datadir) is None
