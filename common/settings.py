"""Settings every process shares, read from ``MC_*`` environment variables (CONTRACT.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_NAMES = ("payment", "product", "user")
DEFAULT_PORTS = {"gateway": 8080, "payment": 8081, "product": 8082, "user": 8083}


class CommonSettings(BaseSettings):
    """What every MicroCommerce process reads; each process subclasses it once, in ``main.py``."""

    # populate_by_name: code and tests may pass fields by name (port=...) as well as by alias.
    model_config = SettingsConfigDict(
        env_prefix="MC_", extra="ignore", frozen=True, populate_by_name=True
    )

    host: str = Field("127.0.0.1", description="Address every listener binds to.")
    data_dir: Path = Field(Path("var"), description="SQLite files and keys.")
    environment: Literal["development", "test", "production"] = "development"
    log_level: str = "INFO"
    version: str = "0.1.0"

    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="host:port[,host:port]; `make run` points it at Tansu."
    )
    # Kafka answers a waiting fetch as soon as data arrives, so its default wait costs no
    # latency there. Tansu only answers when the wait expires (KAFKA.md): local runs set ~10 ms.
    kafka_fetch_max_wait_ms: int = Field(500, ge=1, le=60_000)
    # Tansu holds a JoinGroup for half the session timeout: short values make start-up and
    # fail-over take seconds locally; production keeps Kafka-typical values.
    kafka_session_timeout_s: float = Field(45.0, gt=0)
    kafka_heartbeat_interval_s: float = Field(3.0, gt=0)

    # Production clusters want 3; a single local broker can hold only 1.
    kafka_replication_factor: int = Field(1, ge=1)

    health_ping_interval_s: float = Field(1.0, gt=0, description="Gateway ping period.")

    # MC_<SVC>_DATABASE_URL; unset means SQLite under data_dir (common.db.database_url). Secret
    # because a PostgreSQL URL carries the password and settings may be logged or printed.
    payment_database_url: SecretStr | None = None
    product_database_url: SecretStr | None = None
    user_database_url: SecretStr | None = None


def port_setting(service: str) -> int:
    """The contract port of a process, for use as a field default."""
    return DEFAULT_PORTS[service]
