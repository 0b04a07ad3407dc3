"""Settings of the payment service process (``MC_*`` environment variables)."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar, Self

from pydantic import Field, SecretStr, model_validator

from common.service_runner import ServiceSettings
from common.settings import MIN_SECRET_CHARS
from payment_svc.provider import PROVIDERS
from payment_svc.saga import FAULT_POINTS
from payment_svc.screening import ScreeningPolicy

_DEFAULT = ScreeningPolicy()


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

    # Fraud screening (payment_svc.screening, README "Fraud screening"). The card key keys the
    # card fingerprints (HMAC-SHA256): the same on every replica, required in production.
    fraud_enabled: bool = Field(True, validation_alias="MC_FRAUD_ENABLED")
    fraud_card_key: SecretStr | None = Field(None, validation_alias="MC_FRAUD_CARD_KEY")
    fraud_velocity_window_s: float = Field(
        _DEFAULT.velocity_window.total_seconds(),
        gt=0,
        validation_alias="MC_FRAUD_VELOCITY_WINDOW_S",
    )
    fraud_max_attempts_per_user: int = Field(
        _DEFAULT.max_attempts_per_user, ge=1, validation_alias="MC_FRAUD_MAX_ATTEMPTS_PER_USER"
    )
    fraud_max_attempts_per_card: int = Field(
        _DEFAULT.max_attempts_per_card, ge=1, validation_alias="MC_FRAUD_MAX_ATTEMPTS_PER_CARD"
    )
    fraud_max_attempts_per_address: int = Field(
        _DEFAULT.max_attempts_per_address,
        ge=1,
        validation_alias="MC_FRAUD_MAX_ATTEMPTS_PER_ADDRESS",
    )
    fraud_decline_window_s: float = Field(
        _DEFAULT.decline_window.total_seconds(), gt=0, validation_alias="MC_FRAUD_DECLINE_WINDOW_S"
    )
    fraud_max_declines: int = Field(
        _DEFAULT.max_declines, ge=1, validation_alias="MC_FRAUD_MAX_DECLINES"
    )
    fraud_history_factor: float = Field(
        _DEFAULT.history_factor, gt=1, validation_alias="MC_FRAUD_HISTORY_FACTOR"
    )
    fraud_history_min_orders: int = Field(
        _DEFAULT.history_min_orders, ge=1, validation_alias="MC_FRAUD_HISTORY_MIN_ORDERS"
    )
    fraud_history_min_amount: int = Field(
        _DEFAULT.history_min_amount, ge=0, validation_alias="MC_FRAUD_HISTORY_MIN_AMOUNT"
    )
    fraud_new_account_age_s: float = Field(
        _DEFAULT.new_account_age.total_seconds(),
        ge=0,
        validation_alias="MC_FRAUD_NEW_ACCOUNT_AGE_S",
    )
    fraud_new_account_high_amount: int = Field(
        _DEFAULT.new_account_high_amount, ge=0, validation_alias="MC_FRAUD_NEW_ACCOUNT_HIGH_AMOUNT"
    )
    fraud_cards_window_s: float = Field(
        _DEFAULT.cards_window.total_seconds(), gt=0, validation_alias="MC_FRAUD_CARDS_WINDOW_S"
    )
    fraud_max_cards_per_user: int = Field(
        _DEFAULT.max_cards_per_user, ge=1, validation_alias="MC_FRAUD_MAX_CARDS_PER_USER"
    )
    fraud_review_score: int = Field(
        _DEFAULT.review_score, ge=1, validation_alias="MC_FRAUD_REVIEW_SCORE"
    )
    fraud_deny_score: int = Field(_DEFAULT.deny_score, ge=1, validation_alias="MC_FRAUD_DENY_SCORE")
    # At most 4 days: the reservation is kept 1.5 times as long, and product_svc keeps one
    # at most 7 days.
    fraud_hold_deadline_s: float = Field(
        24 * 3600.0, gt=0, le=4 * 86_400, validation_alias="MC_FRAUD_HOLD_DEADLINE_S"
    )
    fraud_attempt_retention_s: float = Field(
        7 * 24 * 3600.0, gt=0, validation_alias="MC_FRAUD_ATTEMPT_RETENTION_S"
    )

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
        if self.fraud_review_score > self.fraud_deny_score:
            raise ValueError("MC_FRAUD_REVIEW_SCORE must not be above MC_FRAUD_DENY_SCORE")
        longest = max(self.fraud_velocity_window_s, self.fraud_decline_window_s)
        if self.fraud_attempt_retention_s < max(longest, self.fraud_cards_window_s):
            raise ValueError("MC_FRAUD_ATTEMPT_RETENTION_S must cover the longest fraud window")
        return self

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        key = self.fraud_card_key.get_secret_value() if self.fraud_card_key is not None else ""
        if not key:
            problems.append(
                "MC_FRAUD_CARD_KEY is unset (each replica would fingerprint cards differently)"
            )
        elif len(key) < MIN_SECRET_CHARS:
            problems.append(f"MC_FRAUD_CARD_KEY is shorter than {MIN_SECRET_CHARS} characters")
        return problems

    def screening_policy(self) -> ScreeningPolicy | None:
        """The fraud rules as configured; None when screening is switched off."""
        if not self.fraud_enabled:
            return None
        return ScreeningPolicy(
            velocity_window=timedelta(seconds=self.fraud_velocity_window_s),
            max_attempts_per_user=self.fraud_max_attempts_per_user,
            max_attempts_per_card=self.fraud_max_attempts_per_card,
            max_attempts_per_address=self.fraud_max_attempts_per_address,
            decline_window=timedelta(seconds=self.fraud_decline_window_s),
            max_declines=self.fraud_max_declines,
            history_factor=self.fraud_history_factor,
            history_min_orders=self.fraud_history_min_orders,
            history_min_amount=self.fraud_history_min_amount,
            new_account_age=timedelta(seconds=self.fraud_new_account_age_s),
            new_account_high_amount=self.fraud_new_account_high_amount,
            cards_window=timedelta(seconds=self.fraud_cards_window_s),
            max_cards_per_user=self.fraud_max_cards_per_user,
            review_score=self.fraud_review_score,
            deny_score=self.fraud_deny_score,
        )
