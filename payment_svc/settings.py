"""Settings of the payment service process (``MC_*`` environment variables)."""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import Field, model_validator

from common.service_runner import ServiceSettings
from payment_svc.provider import PROVIDERS
from payment_svc.saga import FAULT_POINTS


class PaymentSettings(ServiceSettings):
    service_name: ClassVar[str] = "payment"

    port: int = Field(8081, ge=0, le=65535, validation_alias="MC_PAYMENT_PORT")
    # Which PaymentProvider class takes the money (payment_svc.provider.PROVIDERS).
    provider: str = Field("sandbox", validation_alias="MC_PAYMENT_PROVIDER")
    provider_timeout_s: float = Field(5.0, gt=0, validation_alias="MC_PAYMENT_PROVIDER_TIMEOUT_S")
    provider_attempts: int = Field(3, ge=1, validation_alias="MC_PAYMENT_PROVIDER_ATTEMPTS")
    inventory_deadline_s: float = Field(
        5.0, gt=0, validation_alias="MC_PAYMENT_INVENTORY_DEADLINE_S"
    )
    recovery_grace_s: float = Field(30.0, ge=0, validation_alias="MC_PAYMENT_RECOVERY_GRACE_S")
    recovery_interval_s: float = Field(
        10.0, gt=0, validation_alias="MC_PAYMENT_RECOVERY_INTERVAL_S"
    )
    replay_wait_s: float = Field(30.0, ge=0, validation_alias="MC_PAYMENT_REPLAY_WAIT_S")
    # Test-only: the process SIGKILLs itself at this saga step boundary (saga.FAULT_POINTS).
    fault_at: str = Field("", validation_alias="MC_PAYMENT_FAULT_AT")

    @model_validator(mode="after")
    def _known_choices(self) -> Self:
        if self.provider not in PROVIDERS:
            raise ValueError(f"MC_PAYMENT_PROVIDER must be one of {sorted(PROVIDERS)}")
        if self.fault_at and self.environment != "test":
            raise ValueError("MC_PAYMENT_FAULT_AT is only allowed with MC_ENVIRONMENT=test")
        if self.fault_at and self.fault_at not in FAULT_POINTS:
            raise ValueError(f"MC_PAYMENT_FAULT_AT must be one of {FAULT_POINTS}")
        return self
