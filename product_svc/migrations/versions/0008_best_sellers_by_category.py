"""Each purchase counter knows its product's category, so a category's best-sellers are one
index range (the recommendations' first fallback) instead of a walk down the shop's.

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


def upgrade() -> None:
    """Add ``product_purchases.category_id``, fill it from the products, index it by count."""
    # Nullable: a counter may exist for a product this catalog does not hold (events first).
    op.add_column("product_purchases", sa.Column("category_id", sa.String(32), nullable=True))
    op.execute(
        "UPDATE product_purchases SET category_id = (SELECT products.category_id FROM products"
        " WHERE products.id = product_purchases.product_id)"
    )
    # A category's best-sellers: this index read backwards from the category's highest count.
    op.create_index(
        "ix_product_purchases_category_best_sellers",
        "product_purchases",
        ["category_id", "orders", "product_id"],
    )


def downgrade() -> None:
    """Drop the column and its index."""
    op.drop_index("ix_product_purchases_category_best_sellers", "product_purchases")
    with op.batch_alter_table("product_purchases") as batch:
        batch.drop_column("category_id")
