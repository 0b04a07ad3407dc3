"""One set of Kafka client security options (TLS, SASL) built from the settings, for every client.

The outbox relay's producer, the admin client that declares topics and the Faust apps (health
stream, event consumers) all reach the cluster through these options, so a secured cluster
needs no per-client configuration.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka.helpers import create_ssl_context
from faust.types.auth import CredentialsT

from common.settings import CommonSettings


@dataclass(frozen=True)
class KafkaSecurity:
    """How a client authenticates to the brokers and whether it speaks TLS."""

    protocol: str  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    ssl_context: ssl.SSLContext | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None

    def __repr__(self) -> str:
        # The password must not reach a log line through a repr.
        return (
            f"KafkaSecurity(protocol={self.protocol!r}, tls={self.ssl_context is not None}, "
            f"sasl_mechanism={self.sasl_mechanism!r}, sasl_username={self.sasl_username!r})"
        )

    def aiokafka_options(self) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaProducer``, ``AIOKafkaConsumer`` and the admin client."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.ssl_context is not None:
            options["ssl_context"] = self.ssl_context
        if self.sasl_mechanism is not None:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password
        return options

    def faust_credentials(self) -> CredentialsT | None:
        """Faust's ``broker_credentials`` for the same options; None for PLAINTEXT."""
        if self.sasl_mechanism is not None:
            # With a context Faust speaks SASL_SSL, without one SASL_PLAINTEXT.
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password,
                mechanism=self.sasl_mechanism,
                ssl_context=self.ssl_context,
            )
        if self.ssl_context is not None:
            return faust.SSLCredentials(self.ssl_context)
        return None


def kafka_security(settings: CommonSettings) -> KafkaSecurity:
    """The security options of ``settings`` (already checked when the settings were built).

    TLS uses aiokafka's context (hostname checked) with the configured CA file, or the system's
    CA store when none is configured.
    """
    protocol = settings.kafka_security_protocol
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = create_ssl_context(cafile=settings.kafka_ssl_cafile)
    if not protocol.startswith("SASL_"):
        return KafkaSecurity(protocol, context)
    password = settings.kafka_sasl_password
    return KafkaSecurity(
        protocol,
        context,
        sasl_mechanism=settings.kafka_sasl_mechanism,
        sasl_username=settings.kafka_sasl_username,
        sasl_password=password.get_secret_value() if password is not None else None,
    )
