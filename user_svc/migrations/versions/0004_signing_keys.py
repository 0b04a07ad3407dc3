"""The signing key ring in the database, so replicas sharing no filesystem share their keys.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "user_signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        # AES-GCM nonce + ciphertext of the PKCS#8 key (user_svc.key_encryption).
        sa.Column("sealed_private_key", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("user_signing_keys")
