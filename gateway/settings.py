"""The gateway's settings, read from ``MC_*`` environment variables (CONTRACT.md)."""

from __future__ import annotations

from pydantic import Field

from common.settings import CommonSettings, port_setting


class GatewaySettings(CommonSettings):
    """What the gateway process reads; built once in ``gateway/main.py`` and passed down."""

    gateway_port: int = Field(port_setting("gateway"), ge=0, le=65535)

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
