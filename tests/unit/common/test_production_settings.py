"""MC_ENVIRONMENT=production: every process refuses unsafe defaults, all named in one message."""

from __future__ import annotations

import os
from typing import Any

import pytest
from pydantic import ValidationError

from common.migrations import MigrationSettings
from common.settings import CommonSettings, load_settings
from gateway.settings import GatewaySettings
from payment_svc.settings import PaymentSettings
from product_svc.settings import ProductSettings
from user_svc.settings import UserSettings

POSTGRES = "postgresql+asyncpg://shop:pw@db:5432/shop"
SECRET = "s3cret-value-that-must-never-be-echoed-0123456789"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MC_"):
            monkeypatch.delenv(name)


def production(**overrides: Any) -> dict[str, Any]:
    """Settings a production service replica starts with (the chart's, minus the cluster)."""
    return {
        "environment": "production",
        "kafka_replication_factor": 3,
        "service_credential": SECRET,
        "page_token_key": "k" * 43,
        "fraud_card_key": "f" * 43,
        "payment_database_url": POSTGRES,
        "product_database_url": POSTGRES,
        "user_database_url": POSTGRES,
        "jwt_key_dir": "/etc/microcommerce/jwt-keys",
        "admin_email": "ops@example.com",
        "admin_password": SECRET,
        **overrides,
    }


def refusal(settings_class: type[CommonSettings], **overrides: Any) -> str:
    with pytest.raises(ValidationError) as refused:
        settings_class.model_validate(production(**overrides))
    message = str(refused.value)
    assert "MC_ENVIRONMENT=production refuses to start" in message
    return message


@pytest.mark.parametrize(
    "settings_class",
    [PaymentSettings, ProductSettings, UserSettings, GatewaySettings, MigrationSettings],
)
def test_a_complete_production_configuration_starts(settings_class: type[CommonSettings]) -> None:
    assert settings_class.model_validate(production()).environment == "production"


@pytest.mark.parametrize("environment", ["development", "test"])
@pytest.mark.parametrize(
    "settings_class",
    [PaymentSettings, ProductSettings, UserSettings, GatewaySettings, MigrationSettings],
)
def test_development_and_test_keep_the_local_defaults(
    settings_class: type[CommonSettings], environment: str
) -> None:
    settings = settings_class.model_validate({"environment": environment})

    assert settings.kafka_replication_factor == 1
    assert settings.payment_database_url is None
    assert settings.service_credential is None


@pytest.mark.parametrize("settings_class", [PaymentSettings, ProductSettings, UserSettings])
def test_a_service_refuses_without_the_service_credential(
    settings_class: type[CommonSettings],
) -> None:
    assert "MC_SERVICE_CREDENTIAL is unset" in refusal(settings_class, service_credential=None)


@pytest.mark.parametrize("settings_class", [PaymentSettings, ProductSettings, UserSettings])
def test_a_service_refuses_without_a_shared_page_token_key(
    settings_class: type[CommonSettings],
) -> None:
    assert "MC_PAGE_TOKEN_KEY is unset" in refusal(settings_class, page_token_key=None)


def test_payment_refuses_without_a_fraud_card_key_of_32_characters() -> None:
    assert "MC_FRAUD_CARD_KEY is unset" in refusal(PaymentSettings, fraud_card_key=None)
    short = refusal(PaymentSettings, fraud_card_key="f" * 31)
    assert "MC_FRAUD_CARD_KEY is shorter than 32 characters" in short
    assert "f" * 31 not in short


def test_a_page_token_key_shorter_than_32_characters_is_refused() -> None:
    message = refusal(ProductSettings, page_token_key="k" * 31)

    assert "MC_PAGE_TOKEN_KEY is shorter than 32 characters" in message
    ProductSettings.model_validate(production(page_token_key="k" * 32))


@pytest.mark.parametrize(
    ("settings_class", "service"),
    [(PaymentSettings, "payment"), (ProductSettings, "product"), (UserSettings, "user")],
)
def test_a_service_refuses_the_sqlite_default_and_a_sqlite_url(
    settings_class: type[CommonSettings], service: str
) -> None:
    setting = f"MC_{service.upper()}_DATABASE_URL"

    unset = refusal(settings_class, **{f"{service}_database_url": None})
    sqlite = refusal(settings_class, **{f"{service}_database_url": "sqlite:////data/x.db"})

    assert f"{setting} is unset" in unset
    assert f"{setting} points at SQLite" in sqlite
    assert "MC_ALLOW_SQLITE_IN_PRODUCTION=true" in sqlite


def test_a_service_checks_only_its_own_database() -> None:
    ProductSettings.model_validate(production(payment_database_url=None, user_database_url=None))


def test_sqlite_is_accepted_when_explicitly_allowed_for_a_single_replica() -> None:
    settings = UserSettings.model_validate(
        production(user_database_url=None, allow_sqlite_in_production=True)
    )

    assert settings.allow_sqlite_in_production


def test_the_migrate_command_refuses_sqlite_for_any_service_but_ignores_kafka() -> None:
    message = refusal(MigrationSettings, product_database_url="sqlite+aiosqlite:///p.db")

    assert "MC_PRODUCT_DATABASE_URL points at SQLite" in message
    MigrationSettings.model_validate(production(kafka_replication_factor=1))


@pytest.mark.parametrize(
    "settings_class", [PaymentSettings, ProductSettings, UserSettings, GatewaySettings]
)
def test_a_kafka_replication_factor_below_three_is_refused(
    settings_class: type[CommonSettings],
) -> None:
    message = refusal(settings_class, kafka_replication_factor=2)

    assert "MC_KAFKA_REPLICATION_FACTOR is 2" in message


def test_the_user_service_refuses_a_bootstrap_admin_without_a_password() -> None:
    message = refusal(UserSettings, admin_password=None)

    assert "MC_ADMIN_EMAIL is set but MC_ADMIN_PASSWORD is not" in message
    UserSettings.model_validate(production(admin_email=None, admin_password=None))


def test_the_user_service_refuses_signing_keys_generated_in_its_own_data_dir() -> None:
    message = refusal(UserSettings, jwt_key_dir=None)

    assert "MC_JWT_KEY_ENCRYPTION_KEY (or a shared MC_JWT_KEY_DIR) is unset" in message


def test_the_database_key_ring_satisfies_production() -> None:
    settings = UserSettings.model_validate(
        production(jwt_key_dir=None, jwt_key_encryption_key="e" * 32)
    )

    assert settings.jwt_key_encryption_key is not None


def test_a_short_key_encryption_secret_is_refused_in_every_environment() -> None:
    with pytest.raises(ValidationError, match="MC_JWT_KEY_ENCRYPTION_KEY must be at least 32"):
        UserSettings.model_validate({"jwt_key_encryption_key": "e" * 31})


def test_two_key_rings_at_once_are_refused() -> None:
    with pytest.raises(ValidationError, match="choose one key ring"):
        UserSettings.model_validate({"jwt_key_encryption_key": "e" * 32, "jwt_key_dir": "/keys"})


def test_every_problem_is_named_in_one_message() -> None:
    message = refusal(
        UserSettings,
        service_credential=None,
        page_token_key=None,
        user_database_url=None,
        kafka_replication_factor=1,
        admin_password=None,
        jwt_key_dir=None,
    )

    for setting in (
        "MC_SERVICE_CREDENTIAL",
        "MC_PAGE_TOKEN_KEY",
        "MC_USER_DATABASE_URL",
        "MC_KAFKA_REPLICATION_FACTOR",
        "MC_ADMIN_PASSWORD",
        "MC_JWT_KEY_ENCRYPTION_KEY",
    ):
        assert setting in message


def test_a_process_exits_with_the_reasons_and_without_the_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MC_ENVIRONMENT", "production")
    monkeypatch.setenv("MC_SERVICE_CREDENTIAL", SECRET)
    monkeypatch.setenv("MC_USER_DATABASE_URL", f"sqlite:///{SECRET}.db")

    with pytest.raises(SystemExit) as refused:
        load_settings(UserSettings)

    message = str(refused.value.code)
    assert message.startswith("UserSettings: refusing to start")
    assert "MC_USER_DATABASE_URL points at SQLite" in message
    assert "MC_PAGE_TOKEN_KEY is unset" in message
    assert SECRET not in message
