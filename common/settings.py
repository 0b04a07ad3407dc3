"""Settings every process shares, read from ``MC_*`` environment variables (CONTRACT.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from pydantic import AliasChoices, Field, FilePath, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_NAMES = ("payment", "product", "user")
# Kafka's usual durability: a topic survives the loss of one broker while another is down.
PRODUCTION_REPLICATION_FACTOR = 3
# The least length of a secret that keys are derived from (page tokens, the signing keys'
# encryption): 32 characters, at least 192 bits of a base64 secret.
MIN_SECRET_CHARS = 32
DEFAULT_PORTS = {"gateway": 8080, "payment": 8081, "product": 8082, "user": 8083}
# `make run`'s metrics ports (MC_<SVC>_METRICS_PORT overrides); the gateway serves /metrics on
# its HTTP port.
DEFAULT_METRICS_PORTS = {"payment": 9181, "product": 9182, "user": 9183}


def port_setting(service: str) -> int:
    """The contract port of a process, for use as a field default."""
    return DEFAULT_PORTS[service]


# A process bound to every interface is reached locally through the loopback address.
_WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def _connect_address(host: str, port: int) -> str:
    host = _WILDCARD_HOSTS.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal needs brackets before the port
    return f"{host}:{port}"


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
    # The event consumers' wait; unset, the one above. Nothing a user waits for reads events
    # (read models, safety nets), so local runs let them wait longer than the health stream,
    # whose wait bounds how fast a silent service is seen DOWN.
    kafka_events_fetch_max_wait_ms: int | None = Field(None, ge=1, le=60_000)
    # A service's wait for pings; unset, kafka_fetch_max_wait_ms. It delays the pong, not the
    # verdict on a silent service: that waits on the gateway's pong reads (the wait above).
    kafka_ping_fetch_max_wait_ms: int | None = Field(None, ge=1, le=60_000)
    # Tansu holds a JoinGroup for half the session timeout: short values make start-up and
    # fail-over take seconds locally; production keeps Kafka-typical values.
    kafka_session_timeout_s: float = Field(45.0, gt=0)
    kafka_heartbeat_interval_s: float = Field(3.0, gt=0)

    # Production clusters want 3; a single local broker can hold only 1.
    kafka_replication_factor: int = Field(1, ge=1)

    # How every Kafka client (producers, Faust apps, admin clients) reaches a secured cluster;
    # common.kafka_security turns these into the clients' options. The embedded broker speaks
    # PLAINTEXT only.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    # The CA that signed the brokers' certificates; unset, TLS trusts the system's CA store.
    kafka_ssl_cafile: FilePath | None = None

    health_ping_interval_s: float = Field(1.0, gt=0, description="Gateway ping period.")

    # MC_<SVC>_DATABASE_URL; unset means SQLite under data_dir (common.db.database_url). Secret
    # because a PostgreSQL URL carries the password and settings may be logged or printed.
    payment_database_url: SecretStr | None = None
    product_database_url: SecretStr | None = None
    user_database_url: SecretStr | None = None

    # Used to derive the default service addresses below (MC_<SVC>_PORT, as the services
    # themselves read it), so one variable moves a service and the gateway follows.
    payment_port: int = Field(port_setting("payment"), ge=0, le=65535)
    product_port: int = Field(port_setting("product"), ge=0, le=65535)
    user_port: int = Field(port_setting("user"), ge=0, le=65535)

    # gRPC targets (grpc.aio.insecure_channel syntax). Default "{MC_HOST}:{MC_<SVC>_PORT}";
    # MC_<SVC>_ADDRESS overrides, e.g. a Kubernetes service name.
    payment_address: str = ""
    product_address: str = ""
    user_address: str = ""

    # Exchanged with user_svc for a service identity token (IssueServiceToken); the same value
    # in every service of a deployment. `make run` and the tests generate one per run.
    service_credential: SecretStr | None = None

    # Signs every service's page tokens (each service derives its own key from it); the same
    # value on every replica, so a token from one is read by another. Unset, each process draws
    # a random key and its tokens end with it. MC_PRODUCT_PAGE_TOKEN_KEY is its older name.
    page_token_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("MC_PAGE_TOKEN_KEY", "MC_PRODUCT_PAGE_TOKEN_KEY")
    )

    @model_validator(mode="before")
    @classmethod
    def _default_addresses(cls, data: Any) -> Any:
        # A "before" validator because the model is frozen and the defaults depend on two other
        # fields, which may come from the environment, from arguments or from their defaults.
        if not isinstance(data, dict):
            return data
        host = str(data.get("host") or cls.model_fields["host"].default)
        for service in SERVICE_NAMES:
            if not data.get(f"{service}_address"):
                try:
                    port = int(data.get(f"{service}_port") or port_setting(service))
                except ValueError:
                    continue  # the port's own validation names MC_<SVC>_PORT and its value
                data[f"{service}_address"] = _connect_address(host, port)
        return data

    # Production expects replicas, which cannot share a SQLite file; a single-replica install
    # that accepts that says so explicitly.
    allow_sqlite_in_production: bool = False

    @model_validator(mode="after")
    def _kafka_security_is_complete(self) -> Self:
        problems = kafka_security_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Self:
        # Checked where the settings are built, so a process refuses before opening anything,
        # and every problem is listed at once rather than one per failed deployment.
        if self.environment == "production":
            problems = self.production_problems()
            if problems:
                raise ValueError(
                    "MC_ENVIRONMENT=production refuses to start: " + "; ".join(problems)
                )
        return self

    def production_problems(self) -> list[str]:
        """What this process would do unsafely in production; each names its setting.

        Every long-running process declares Kafka topics; processes add their own rules.
        """
        if self.kafka_replication_factor < PRODUCTION_REPLICATION_FACTOR:
            return [
                f"MC_KAFKA_REPLICATION_FACTOR is {self.kafka_replication_factor}, production "
                f"topics need at least {PRODUCTION_REPLICATION_FACTOR} replicas"
            ]
        return []

    def database_problems(self, service: str) -> list[str]:
        """Why ``service``'s database is unfit for production (SQLite), unless allowed."""
        if self.allow_sqlite_in_production:
            return []
        setting = f"MC_{service.upper()}_DATABASE_URL"
        url: SecretStr | None = getattr(self, f"{service}_database_url")
        value = url.get_secret_value() if url is not None else ""
        advice = (
            "production expects replicas sharing PostgreSQL (set "
            "MC_ALLOW_SQLITE_IN_PRODUCTION=true for a single-replica install)"
        )
        if not value:
            return [f"{setting} is unset, so SQLite under MC_DATA_DIR: {advice}"]
        if value.split(":", 1)[0].split("+", 1)[0] == "sqlite":
            return [f"{setting} points at SQLite: {advice}"]
        return []

    def service_address(self, service: str) -> str:
        """The gRPC target of one of ``common.settings.SERVICE_NAMES``."""
        if service not in SERVICE_NAMES:
            raise KeyError(f"unknown service {service!r}; expected one of {SERVICE_NAMES}")
        address: str = getattr(self, f"{service}_address")
        return address


def kafka_security_problems(settings: CommonSettings) -> list[str]:
    """What is missing or contradictory in the Kafka security settings (empty when sound)."""
    protocol = settings.kafka_security_protocol
    problems: list[str] = []
    sasl = {
        "MC_KAFKA_SASL_MECHANISM": settings.kafka_sasl_mechanism,
        "MC_KAFKA_SASL_USERNAME": settings.kafka_sasl_username,
        "MC_KAFKA_SASL_PASSWORD": (
            settings.kafka_sasl_password.get_secret_value()
            if settings.kafka_sasl_password is not None
            else None
        ),
    }
    if protocol.startswith("SASL_"):
        problems += [
            f"MC_KAFKA_SECURITY_PROTOCOL={protocol} needs {name}"
            for name, value in sasl.items()
            if not value
        ]
    else:
        # Credentials that would silently go unused are a misconfiguration, not a default.
        problems += [
            f"{name} is set but MC_KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL"
            for name, value in sasl.items()
            if value
        ]
    if settings.kafka_ssl_cafile is not None and not protocol.endswith("SSL"):
        problems.append(
            f"MC_KAFKA_SSL_CAFILE is set but MC_KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS"
        )
    return problems


SettingsT = TypeVar("SettingsT", bound=CommonSettings)


def load_settings(settings_class: type[SettingsT]) -> SettingsT:
    """A process's settings from the environment, or exit 1 with every reason they were refused.

    The reasons alone: pydantic's own message quotes the input, which holds the secrets.
    """
    try:
        return settings_class.model_validate({})
    except ValidationError as refused:
        reasons = []
        for error in refused.errors(include_input=False, include_url=False):
            field = ".".join(str(part) for part in error["loc"])
            setting = field if field.startswith("MC_") else f"MC_{field.upper()}" if field else ""
            message = str(error["msg"]).removeprefix("Value error, ")
            reasons.append(f"{setting}: {message}" if setting else message)
        # One line, like every other start-up failure (common.startup).
        raise SystemExit(
            f"{settings_class.__name__}: refusing to start: " + "; ".join(dict.fromkeys(reasons))
        ) from None
