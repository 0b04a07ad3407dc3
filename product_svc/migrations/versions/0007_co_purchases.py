"""Counters of confirmed orders per product and per pair of products ("bought together").

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the purchase and co-purchase counters."""
    # No foreign keys to products: the counters are fed by events, and a count for a product
    # this catalog does not (yet) hold must not fail the consumer; reads join on live products.
    op.create_table(
        "product_purchases",
        sa.Column("product_id", sa.String(32), primary_key=True),
        sa.Column("orders", sa.BigInteger, nullable=False),
    )
    # The best-sellers read walks this index from the top.
    op.create_index(
        "ix_product_purchases_best_sellers", "product_purchases", ["orders", "product_id"]
    )
    op.create_table(
        "product_co_purchases",
        sa.Column("product_id", sa.String(32), primary_key=True),
        sa.Column("other_id", sa.String(32), primary_key=True),
        sa.Column("orders", sa.BigInteger, nullable=False),
    )
    # A product's strongest partners first: the recommendation read's range scan.
    op.create_index(
        "ix_product_co_purchases_strongest", "product_co_purchases", ["product_id", "orders"]
    )


def downgrade() -> None:
    """Drop the counters."""
    op.drop_table("product_co_purchases")
    op.drop_table("product_purchases")
