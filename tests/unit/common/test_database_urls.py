"""Which database a service uses, and which URLs the engine factory accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import make_url

from common.db import async_url, create_engine, database_url
from common.settings import CommonSettings


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> CommonSettings:
    for name in ("PAYMENT", "PRODUCT", "USER"):
        monkeypatch.delenv(f"MC_{name}_DATABASE_URL", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return CommonSettings.model_validate({})


def test_the_default_is_a_sqlite_file_per_service_in_the_data_dir_which_is_created(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data_dir = tmp_path / "not" / "yet"

    url = database_url("product", settings(monkeypatch, MC_DATA_DIR=str(data_dir)))

    parsed = make_url(url)
    assert parsed.drivername == "sqlite+aiosqlite"
    assert parsed.database == str(data_dir / "product.db")
    assert data_dir.is_dir()


def test_the_service_url_from_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    pg = "postgresql+asyncpg://mc:secret@db:5432/payment"
    config = settings(monkeypatch, MC_PAYMENT_DATABASE_URL=pg)

    assert database_url("payment", config) == pg
    assert database_url("user", config).startswith("sqlite+aiosqlite:///")
    assert "secret" not in repr(config)


def test_an_unknown_service_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown service"):
        database_url("gateway", settings(monkeypatch))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_bare_urls_get_the_async_driver(given: str, expected: str) -> None:
    assert async_url(given).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize(
    "url", ["postgresql+psycopg2://u@h/db", "sqlite+pysqlite:///x.db", "mysql://u@h/db"]
)
def test_blocking_drivers_and_other_databases_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"driver|unsupported"):
        async_url(url)


async def test_creating_an_engine_opens_no_connection(tmp_path: Path) -> None:
    path = tmp_path / "lazy.db"

    engine = create_engine(f"sqlite:///{path}")
    await engine.dispose()

    assert not path.exists()
