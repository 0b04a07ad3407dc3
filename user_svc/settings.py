"""Settings of the user service process (``MC_*`` environment variables)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import ClassVar, Self

from pydantic import Field, SecretStr, model_validator

from common.service_runner import ServiceSettings
from common.settings import MIN_SECRET_CHARS


class UserSettings(ServiceSettings):
    service_name: ClassVar[str] = "user"

    port: int = Field(8083, ge=0, le=65535, validation_alias="MC_USER_PORT")

    # Signing keys, one of: MC_JWT_KEY_ENCRYPTION_KEY, the ring in this service's database with
    # private keys sealed by this secret (replicas sharing no filesystem; user_svc.shared_keys);
    # MC_JWT_KEY_DIR (e.g. a mounted Secret shared by every replica); else <MC_DATA_DIR>/keys,
    # created with a first key on first start (one process: development).
    jwt_key_encryption_key: SecretStr | None = None
    jwt_key_dir: Path | None = None
    # How often a replica rereads its key ring (database or directory). Below
    # MC_JWT_KEY_ACTIVATION_S less the verifiers' 5 s JWKS refetch interval, so every replica
    # publishes a new key before it signs.
    jwt_key_reload_s: float = Field(3.0, gt=0)
    # Rotate the signing key when it is this old; 0 leaves rotation to `python -m user_svc.keys`.
    jwt_key_rotation_s: int = Field(30 * 24 * 3600, ge=0)
    # A new key is published this long before it signs: longer than JwksCache's minimum
    # refetch interval (5 s), so no verifier meets its kid before it can fetch it.
    jwt_key_activation_s: float = Field(10.0, ge=0)
    access_token_ttl_s: int = Field(15 * 60, ge=30, le=24 * 3600)
    # A session ends after this long without a refresh.
    session_idle_ttl_s: int = Field(30 * 24 * 3600, ge=60)

    # The bootstrap administrator, created or updated at start-up when both are set.
    admin_email: str | None = None
    admin_password: SecretStr | None = None

    # Failed sign-ins allowed per window, per account and per client address, before 429.
    login_max_failures_per_account: int = Field(5, ge=1)
    login_max_failures_per_client: int = Field(20, ge=1)
    login_failure_window_s: int = Field(15 * 60, ge=1)

    # argon2id cost (argon2-cffi's RFC 9106 "low memory" profile by default). Changing them
    # rehashes each password at its owner's next sign-in.
    argon2_time_cost: int = Field(3, ge=1)
    argon2_memory_cost_kib: int = Field(64 * 1024, ge=8 * 4)
    argon2_parallelism: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _one_key_ring(self) -> Self:
        secret = self.jwt_key_encryption_key
        if secret is not None and len(secret.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(f"MC_JWT_KEY_ENCRYPTION_KEY must be at least {MIN_SECRET_CHARS} chars")
        if secret is not None and self.jwt_key_dir is not None:
            raise ValueError(
                "MC_JWT_KEY_ENCRYPTION_KEY (keys in the database) and MC_JWT_KEY_DIR (keys in a "
                "directory) are both set: choose one key ring"
            )
        return self

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        if self.admin_email and not (
            self.admin_password and self.admin_password.get_secret_value()
        ):
            # `make run` generates one locally; production never makes up a credential.
            problems.append("MC_ADMIN_EMAIL is set but MC_ADMIN_PASSWORD is not")
        if self.jwt_key_dir is None and self.jwt_key_encryption_key is None:
            problems.append(
                "MC_JWT_KEY_ENCRYPTION_KEY (or a shared MC_JWT_KEY_DIR) is unset: signing keys "
                "would be generated in this replica's data dir, unknown to the other replicas"
            )
        return problems

    def key_directory(self) -> Path:
        return (self.jwt_key_dir or self.data_dir / "keys").expanduser().resolve()

    @property
    def access_token_ttl(self) -> timedelta:
        return timedelta(seconds=self.access_token_ttl_s)
