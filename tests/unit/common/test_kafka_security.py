"""Kafka security settings: validated when built, and the same options reach every Kafka client.

The embedded broker speaks PLAINTEXT only, so the secured options are checked where each
client is built rather than against a secured broker.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiokafka
import faust
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from faust.transport.drivers import aiokafka as faust_aiokafka
from pydantic import ValidationError

from common import kafka, outbox
from common.db import Database
from common.kafka import create_faust_app, declare_topics
from common.kafka_security import kafka_security
from common.settings import CommonSettings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "MC_ENVIRONMENT",
        "MC_KAFKA_SECURITY_PROTOCOL",
        "MC_KAFKA_SASL_MECHANISM",
        "MC_KAFKA_SASL_USERNAME",
        "MC_KAFKA_SASL_PASSWORD",
        "MC_KAFKA_SSL_CAFILE",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    """A self-signed CA certificate, as a Strimzi cluster CA Secret would hold."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test kafka ca")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "ca.crt"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def sasl_ssl(ca_file: Path) -> CommonSettings:
    return CommonSettings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="shop",
        kafka_sasl_password="kafka-password",
        kafka_ssl_cafile=ca_file,
    )


def test_plaintext_is_the_default_and_needs_nothing() -> None:
    options = kafka_security(CommonSettings()).aiokafka_options()

    assert options == {"security_protocol": "PLAINTEXT"}
    assert kafka_security(CommonSettings()).faust_credentials() is None


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
def test_sasl_without_mechanism_and_credentials_is_refused_naming_each_setting(
    protocol: str,
) -> None:
    with pytest.raises(ValidationError) as refused:
        CommonSettings(kafka_security_protocol=protocol)

    message = str(refused.value)
    for name in ("MC_KAFKA_SASL_MECHANISM", "MC_KAFKA_SASL_USERNAME", "MC_KAFKA_SASL_PASSWORD"):
        assert name in message


def test_sasl_credentials_without_a_sasl_protocol_are_refused() -> None:
    with pytest.raises(ValidationError, match="MC_KAFKA_SASL_USERNAME is set"):
        CommonSettings(kafka_security_protocol="SSL", kafka_sasl_username="shop")


def test_a_ca_file_without_tls_is_refused(ca_file: Path) -> None:
    with pytest.raises(ValidationError, match="MC_KAFKA_SSL_CAFILE is set"):
        CommonSettings(kafka_ssl_cafile=ca_file)


def test_a_ca_file_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="kafka_ssl_cafile"):
        CommonSettings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "absent.crt")


def test_an_unknown_mechanism_is_refused() -> None:
    with pytest.raises(ValidationError, match="kafka_sasl_mechanism"):
        CommonSettings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="GSSAPI",
            kafka_sasl_username="shop",
            kafka_sasl_password="pw",
        )


def test_settings_are_read_from_the_chart_variables(
    monkeypatch: pytest.MonkeyPatch, ca_file: Path
) -> None:
    monkeypatch.setenv("MC_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("MC_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("MC_KAFKA_SASL_USERNAME", "shop")
    monkeypatch.setenv("MC_KAFKA_SASL_PASSWORD", "kafka-password")
    monkeypatch.setenv("MC_KAFKA_SSL_CAFILE", str(ca_file))

    options = kafka_security(CommonSettings()).aiokafka_options()

    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert options["sasl_plain_username"] == "shop"
    assert options["sasl_plain_password"] == "kafka-password"


def test_ssl_without_a_ca_file_trusts_the_system_store_and_checks_hostnames() -> None:
    security = kafka_security(CommonSettings(kafka_security_protocol="SSL"))

    assert security.ssl_context is not None
    assert security.ssl_context.check_hostname
    assert security.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert isinstance(security.faust_credentials(), faust.SSLCredentials)


def test_sasl_ssl_options_carry_the_ca_and_the_credentials(ca_file: Path) -> None:
    security = kafka_security(sasl_ssl(ca_file))
    options = security.aiokafka_options()

    assert options["security_protocol"] == "SASL_SSL"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert [ca["subject"] for ca in context.get_ca_certs()] == [
        ((("commonName", "test kafka ca"),),)
    ]
    assert (options["sasl_mechanism"], options["sasl_plain_username"]) == ("SCRAM-SHA-512", "shop")
    assert options["sasl_plain_password"] == "kafka-password"
    assert "kafka-password" not in repr(security)


# What every client must be built with for sasl_ssl(), besides its TLS context.
EXPECTED_AUTH = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_plain_username": "shop",
    "sasl_plain_password": "kafka-password",
}


def without_context(options: Any) -> dict[str, Any]:
    found = dict(options)
    assert isinstance(found.pop("ssl_context"), ssl.SSLContext)
    return found


async def test_faust_producers_and_consumers_get_the_security_options(
    monkeypatch: pytest.MonkeyPatch, ca_file: Path
) -> None:
    app = create_faust_app("test-security", sasl_ssl(ca_file))
    built: dict[str, Any] = {}
    monkeypatch.setattr(aiokafka, "AIOKafkaConsumer", lambda **kwargs: built.update(kwargs))

    transport, producer = app.transport, app.producer
    assert isinstance(transport, kafka.Transport)
    assert isinstance(producer, faust_aiokafka.Producer)

    kafka._ConsumerThread._create_worker_consumer(
        SimpleNamespace(app=app),  # type: ignore[arg-type]
        transport,
    )
    producer_auth = producer._settings_auth()

    assert isinstance(app.conf.broker_credentials, faust.SASLCredentials)
    consumer_auth = {key: built[key] for key in (*EXPECTED_AUTH, "ssl_context")}
    assert without_context(consumer_auth) == EXPECTED_AUTH
    assert without_context(producer_auth) == EXPECTED_AUTH
    # Faust's own admin and client consumers read the same credentials.
    assert (
        without_context(faust_aiokafka.credentials_to_aiokafka_auth(app.conf.broker_credentials))
        == EXPECTED_AUTH
    )


async def test_the_topic_declaring_admin_client_gets_the_security_options(
    monkeypatch: pytest.MonkeyPatch, ca_file: Path
) -> None:
    built: dict[str, Any] = {}

    class RecordingAdmin:
        def __init__(self, **kwargs: Any) -> None:
            built.update(kwargs)

        async def start(self) -> None:
            pass

        async def list_topics(self) -> list[str]:
            return []

        async def create_topics(self, topics: list[Any]) -> None:
            pass

        async def close(self) -> None:
            pass

    monkeypatch.setattr(kafka, "AIOKafkaAdminClient", RecordingAdmin)

    await declare_topics(sasl_ssl(ca_file))

    assert without_context({k: v for k, v in built.items() if k != "bootstrap_servers"}) == (
        EXPECTED_AUTH
    )


async def test_the_outbox_relays_producer_gets_the_security_options(
    monkeypatch: pytest.MonkeyPatch, ca_file: Path, tmp_path: Path
) -> None:
    built: dict[str, Any] = {}

    class RefusingProducer:
        def __init__(self, **kwargs: Any) -> None:
            built.update(kwargs)

        async def start(self) -> None:
            raise ConnectionError("no broker in a unit test")

        async def stop(self) -> None:
            pass

    monkeypatch.setattr(outbox, "AIOKafkaProducer", RefusingProducer)
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}")
    relay = outbox.OutboxRelay(database, outbox.Outbox("payment"), sasl_ssl(ca_file))
    try:
        with pytest.raises(ConnectionError):
            await relay._producer_started()
    finally:
        await database.dispose()

    auth = {key: built[key] for key in (*EXPECTED_AUTH, "ssl_context")}
    assert without_context(auth) == EXPECTED_AUTH
