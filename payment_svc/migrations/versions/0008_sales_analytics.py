"""The sales read model (payment_svc.analytics): hourly counters, product sales, pending pairs.

Created empty; ``python -m payment_svc.analytics rebuild`` (``make analytics-rebuild``) fills
it from ``payment_order_changes`` for a database that already has orders.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "payment_sales_counters",
        sa.Column("hour", _time(), primary_key=True),
        sa.Column("measure", sa.String(16), primary_key=True),
        sa.Column("label", sa.String(64), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "payment_product_sales",
        sa.Column("hour", _time(), primary_key=True),
        sa.Column("product_id", sa.String(128), primary_key=True),
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("units", sa.BigInteger, nullable=False),
        sa.Column("revenue", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "payment_sales_orders",
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("lines", sa.Text),
        sa.Column("confirmed_hour", _time()),
    )
    op.create_table(
        "payment_sales_state",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("as_of", _time(), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "payment_sales_state",
        "payment_sales_orders",
        "payment_product_sales",
        "payment_sales_counters",
    ):
        op.drop_table(table)
