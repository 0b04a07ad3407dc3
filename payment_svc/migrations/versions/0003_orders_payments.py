"""Orders and their items, payments, refunds, idempotency keys and the sandbox provider's ledger.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "payment_orders",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("total_amount", sa.BigInteger, nullable=True),
        sa.Column("failure_reason", sa.String(64), nullable=True),
        sa.Column("create_time", _TIME, nullable=False),
        sa.Column("update_time", _TIME, nullable=False),
    )
    # Order history (newest first per user) and the recovery loop's scan of unfinished sagas.
    op.create_index(
        "ix_payment_orders_user_time", "payment_orders", ["user_id", "create_time", "id"]
    )
    op.create_index("ix_payment_orders_time", "payment_orders", ["create_time", "id"])
    op.create_index("ix_payment_orders_status_update", "payment_orders", ["status", "update_time"])
    op.create_table(
        "payment_order_items",
        sa.Column(
            "order_id",
            sa.String(64),
            sa.ForeignKey("payment_orders.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("product_id", sa.String(128), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("sku", sa.String(128), nullable=False, server_default=""),
        sa.Column("name", sa.String(512), nullable=False, server_default=""),
        sa.Column("unit_amount", sa.BigInteger, nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
    )
    op.create_table(
        "payments",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "order_id",
            sa.String(64),
            sa.ForeignKey("payment_orders.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        # The provider's token and what may be shown; never the number or the CVC.
        sa.Column("card_token", sa.String(200), nullable=False),
        sa.Column("card_brand", sa.String(16), nullable=False),
        sa.Column("card_last4", sa.String(4), nullable=False),
        sa.Column("authorization_id", sa.String(64), nullable=True),
        sa.Column("failure_reason", sa.String(32), nullable=True),
        sa.Column("create_time", _TIME, nullable=False),
        sa.Column("update_time", _TIME, nullable=False),
    )
    op.create_table(
        "payment_refunds",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "payment_id",
            sa.String(64),
            sa.ForeignKey("payments.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("create_time", _TIME, nullable=False),
        sa.Column("update_time", _TIME, nullable=False),
    )
    op.create_index("ix_payment_refunds_payment", "payment_refunds", ["payment_id", "create_time"])
    op.create_index("ix_payment_refunds_status", "payment_refunds", ["status", "update_time"])
    op.create_table(
        "payment_idempotency_keys",
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("create_time", _TIME, nullable=False),
        sa.Column("expire_time", _TIME, nullable=False),
    )
    op.create_index(
        "ix_payment_idempotency_keys_expire", "payment_idempotency_keys", ["expire_time"]
    )
    op.create_table(
        "payment_sandbox_ledger",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("amount", sa.Integer, nullable=False),
        sa.Column("approved", sa.Integer, nullable=False),
        sa.Column("reference", sa.String(64), nullable=False),
        sa.Column("failure", sa.String(32), nullable=True),
        sa.Column("create_time", _TIME, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("payment_sandbox_ledger")
    op.drop_index("ix_payment_idempotency_keys_expire", table_name="payment_idempotency_keys")
    op.drop_table("payment_idempotency_keys")
    op.drop_index("ix_payment_refunds_status", table_name="payment_refunds")
    op.drop_index("ix_payment_refunds_payment", table_name="payment_refunds")
    op.drop_table("payment_refunds")
    op.drop_table("payments")
    op.drop_table("payment_order_items")
    op.drop_index("ix_payment_orders_status_update", table_name="payment_orders")
    op.drop_index("ix_payment_orders_time", table_name="payment_orders")
    op.drop_index("ix_payment_orders_user_time", table_name="payment_orders")
    op.drop_table("payment_orders")
