"""The first answer of a checkout, kept with its idempotency key so a replay repeats it.

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

_COLUMNS = (
    # "OK" for a success, else the gRPC status name; NULL until the checkout has answered.
    ("reply_status", sa.String(32)),
    ("reply_body", sa.LargeBinary()),
    ("reply_message", sa.String(1000)),
    ("reply_reason", sa.String(64)),
    ("reply_field", sa.String(128)),
    ("reply_retry_after_s", sa.Float()),
)


def upgrade() -> None:
    # batch mode: SQLite cannot add several columns in one ALTER TABLE.
    with op.batch_alter_table("payment_idempotency_keys") as batch:
        for name, type_ in _COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("payment_idempotency_keys") as batch:
        for name, _ in reversed(_COLUMNS):
            batch.drop_column(name)
