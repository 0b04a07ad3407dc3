"""The gateway's settings, read from ``MC_*`` environment variables (CONTRACT.md)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from common.settings import SERVICE_NAMES, CommonSettings, port_setting

# A process bound to every interface is reached locally through the loopback address.
_WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def _connect_address(host: str, port: int) -> str:
    host = _WILDCARD_HOSTS.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal needs brackets before the port
    return f"{host}:{port}"


class GatewaySettings(CommonSettings):
    """What the gateway process reads; built once in ``gateway/main.py`` and passed down."""

    gateway_port: int = Field(port_setting("gateway"), ge=0, le=65535)

    # Only used to derive the default upstream addresses below (MC_<SVC>_PORT, as the services
    # themselves read it), so one variable moves a service and the gateway follows.
    payment_port: int = Field(port_setting("payment"), ge=0, le=65535)
    product_port: int = Field(port_setting("product"), ge=0, le=65535)
    user_port: int = Field(port_setting("user"), ge=0, le=65535)

    # gRPC targets (grpc.aio.insecure_channel syntax). Default "{MC_HOST}:{MC_<SVC>_PORT}";
    # MC_<SVC>_ADDRESS overrides, e.g. a Kubernetes service name.
    payment_address: str = ""
    product_address: str = ""
    user_address: str = ""

    upstream_timeout_s: float = Field(
        5.0, gt=0, description="Deadline of every upstream gRPC call, in seconds."
    )
    max_body_bytes: int = Field(
        1024 * 1024, gt=0, description="Largest accepted request body; larger ones get 413."
    )

    shutdown_grace_s: float = Field(
        10.0, ge=0, description="On stop, in-flight requests get this long to finish."
    )

    # The health stream (gateway/health.py). A silent service is DOWN after this long
    # (CONTRACT.md: within 3 s); the broker is judged sooner, so that a dead broker turns the
    # services UNKNOWN instead of DOWN. HealthRegistry checks the order of the two.
    health_down_after_s: float = Field(2.5, gt=0)
    health_broker_down_after_s: float = Field(2.0, gt=0)

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
                port = int(data.get(f"{service}_port") or port_setting(service))
                data[f"{service}_address"] = _connect_address(host, port)
        return data

    def service_address(self, service: str) -> str:
        """The gRPC target of one of ``common.settings.SERVICE_NAMES``."""
        if service not in SERVICE_NAMES:
            raise KeyError(f"unknown service {service!r}; expected one of {SERVICE_NAMES}")
        address: str = getattr(self, f"{service}_address")
        return address
