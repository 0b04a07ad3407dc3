"""What an out-of-stock checkout tells the buyer: each short line's available units, kept.

``payment_order_items.available``: what the catalog had of a line it could not fill, so the
failed order's answer names the product and its stock however often it is derived.
``payment_idempotency_keys.reply_violations``: the first answer's field violations (JSON), so
a replay repeats them with the message.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payment_order_items") as batch:
        batch.add_column(sa.Column("available", sa.Integer(), nullable=True))
    with op.batch_alter_table("payment_idempotency_keys") as batch:
        batch.add_column(sa.Column("reply_violations", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("payment_idempotency_keys") as batch:
        batch.drop_column("reply_violations")
    with op.batch_alter_table("payment_order_items") as batch:
        batch.drop_column("available")
