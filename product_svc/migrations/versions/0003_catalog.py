"""The catalog: categories, products, price history, stock adjustments, reservations, search.

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

# SQLite auto-increments only an INTEGER PRIMARY KEY; PostgreSQL gets 64 bits.
_SEQ = sa.BigInteger().with_variant(sa.Integer, "sqlite")

# Full-text search over the normalised words the store writes into search_name/search_body
# (product_svc.domain.search_words), so both backends tokenise identical text identically.
_SQLITE_FTS = [
    # Keyed by products.seq (an INTEGER PRIMARY KEY, so a stable rowid): a match yields
    # rowids, and fetching rowids is several times cheaper than an extra id column.
    """CREATE VIRTUAL TABLE products_fts USING fts5(
        name, body, tokenize = 'unicode61 remove_diacritics 0')""",
    """CREATE TRIGGER products_fts_insert AFTER INSERT ON products BEGIN
        INSERT INTO products_fts (rowid, name, body)
        VALUES (new.seq, new.search_name, new.search_body);
    END""",
    """CREATE TRIGGER products_fts_update AFTER UPDATE OF search_name, search_body ON products
    BEGIN
        UPDATE products_fts SET name = new.search_name, body = new.search_body
        WHERE rowid = new.seq;
    END""",
    """CREATE TRIGGER products_fts_delete AFTER DELETE ON products BEGIN
        DELETE FROM products_fts WHERE rowid = old.seq;
    END""",
]
_POSTGRES_FTS = [
    """ALTER TABLE products ADD COLUMN name_tsv tsvector
        GENERATED ALWAYS AS (to_tsvector('simple', search_name)) STORED""",
    """ALTER TABLE products ADD COLUMN all_tsv tsvector
        GENERATED ALWAYS AS (to_tsvector('simple', search_name || ' ' || search_body)) STORED""",
    "CREATE INDEX ix_products_all_tsv ON products USING gin (all_tsv)",
]


def upgrade() -> None:
    """Create the catalog's tables and the backend's full-text index."""
    op.create_table(
        "product_categories",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("slug", sa.String(100), nullable=False, unique=True),
        sa.Column("parent_id", sa.String(32), sa.ForeignKey("product_categories.id")),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_product_categories_name", "product_categories", ["name", "id"])
    op.create_table(
        "products",
        # The row's internal key (the full-text index refers to it); `id` is the public one.
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(32), nullable=False, unique=True),
        sa.Column("sku", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column(
            "category_id",
            sa.String(32),
            sa.ForeignKey("product_categories.id"),
            nullable=False,
        ),
        sa.Column("price_amount", sa.BigInteger, nullable=False),
        sa.Column("price_currency", sa.String(3), nullable=False),
        sa.Column("available", sa.BigInteger, nullable=False),
        sa.Column("reserved", sa.BigInteger, nullable=False),
        sa.Column("low_stock_threshold", sa.BigInteger, nullable=False),
        sa.Column("archived", sa.Boolean, nullable=False),
        sa.Column("search_name", sa.Text, nullable=False),
        sa.Column("search_body", sa.Text, nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
        sa.Column("update_time_us", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        # The last line of defence against oversell: the database refuses negative stock.
        sa.CheckConstraint("available >= 0", name="ck_products_available"),
        sa.CheckConstraint("reserved >= 0", name="ck_products_reserved"),
    )
    op.create_index("ix_products_newest", "products", ["create_time_us", "id"])
    op.create_index("ix_products_price", "products", ["price_amount", "id"])
    op.create_index(
        "ix_products_category_newest", "products", ["category_id", "create_time_us", "id"]
    )
    op.create_table(
        "product_price_changes",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("product_id", sa.String(32), sa.ForeignKey("products.id"), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("changed_by", sa.String(256), nullable=False),
        sa.Column("change_time_us", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "ix_product_price_changes_product", "product_price_changes", ["product_id", "seq"]
    )
    op.create_table(
        "product_stock_adjustments",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("product_id", sa.String(32), sa.ForeignKey("products.id"), nullable=False),
        sa.Column("delta", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("adjusted_by", sa.String(256), nullable=False),
        sa.Column("adjust_time_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "stock_reservations",
        sa.Column("order_id", sa.String(128), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("expire_time_us", sa.BigInteger, nullable=False),
        sa.Column("create_time_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_stock_reservations_due", "stock_reservations", ["status", "expire_time_us"])
    op.create_table(
        "stock_reservation_items",
        sa.Column(
            "order_id",
            sa.String(128),
            sa.ForeignKey("stock_reservations.order_id"),
            primary_key=True,
        ),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("product_id", sa.String(32), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("unit_amount", sa.BigInteger, nullable=False),
        sa.Column("unit_currency", sa.String(3), nullable=False),
    )
    statements = _POSTGRES_FTS if op.get_bind().dialect.name == "postgresql" else _SQLITE_FTS
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    """Drop the catalog."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE products_fts")
    op.drop_table("stock_reservation_items")
    op.drop_table("stock_reservations")
    op.drop_table("product_stock_adjustments")
    op.drop_table("product_price_changes")
    op.drop_table("products")
    op.drop_table("product_categories")
