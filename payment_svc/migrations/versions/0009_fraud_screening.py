"""Fraud screening: each checkout attempt for the sliding-window counts, each order's verdict.

``payment_checkout_attempts`` holds one row per checkout: who (user id), with which card (a
keyed hash, never the number), from where (the client address), how much and how it ended.
The rules count these rows over windows of minutes to a day; the recovery loop deletes rows
older than the retention (MC_FRAUD_ATTEMPT_RETENTION_S). Orders placed before this revision
have no attempt and no screening: they were never screened and are not invented one.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("payment_orders") as orders:
        orders.add_column(sa.Column("screening_decision", sa.String(8)))
        orders.add_column(sa.Column("screening_score", sa.Integer))
        orders.add_column(sa.Column("screening_reasons", sa.Text))
    # ListOrders?status=...: an administrator's queue of held orders, newest first.
    op.create_index(
        "ix_payment_orders_status_time", "payment_orders", ["status", "create_time", "id"]
    )
    op.create_table(
        "payment_checkout_attempts",
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("card_fingerprint", sa.String(64), nullable=False),
        sa.Column("client_address", sa.String(64), nullable=False),
        sa.Column("amount", sa.BigInteger),
        sa.Column("currency", sa.String(3)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("create_time", _time(), nullable=False),
        sa.Column("update_time", _time(), nullable=False),
    )
    for name, column in (
        ("user", "user_id"),
        ("card", "card_fingerprint"),
        ("address", "client_address"),
    ):
        op.create_index(
            f"ix_payment_checkout_attempts_{name}",
            "payment_checkout_attempts",
            [column, "create_time"],
        )
    op.create_index(
        "ix_payment_checkout_attempts_time", "payment_checkout_attempts", ["create_time"]
    )


def downgrade() -> None:
    op.drop_table("payment_checkout_attempts")
    op.drop_index("ix_payment_orders_status_time", table_name="payment_orders")
    with op.batch_alter_table("payment_orders") as orders:
        orders.drop_column("screening_reasons")
        orders.drop_column("screening_score")
        orders.drop_column("screening_decision")
