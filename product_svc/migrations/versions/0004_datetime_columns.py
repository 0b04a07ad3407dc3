"""Times as timezone-aware DateTime columns, like payment and user, instead of microseconds.

Each ``<name>_us`` BIGINT becomes ``<name>`` (TIMESTAMPTZ on PostgreSQL; on SQLite the
``YYYY-MM-DD HH:MM:SS.ffffff`` UTC text SQLAlchemy's DateTime reads and writes), every value
converted exactly, with integers only.

PostgreSQL changes each column in place. SQLite cannot, and Alembic's batch mode cannot help:
it rebuilds one table at a time, dropping the old one, which foreign keys (enforced, and the
whole upgrade one transaction) refuse while other tables' rows point at it, even deferred. So
SQLite gets the catalog's six tables built anew under temporary names, with foreign keys
between the new tables, copied, the old ones dropped children first, and the new renamed
(SQLite rewrites the references on rename). ``products.seq`` is copied as it is, so the FTS5
index keyed by it stays valid; its triggers went with the old table and are created again.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> its time columns, by their names after this revision (before: "<name>_us").
_TIME_COLUMNS = {
    "product_categories": ("create_time",),
    "products": ("create_time", "update_time"),
    "product_price_changes": ("change_time",),
    "product_stock_adjustments": ("adjust_time",),
    "stock_reservations": ("expire_time", "create_time"),
    "stock_reservation_items": (),
}
_SEQ = sa.BigInteger().with_variant(sa.Integer, "sqlite")
_TMP = "_0004_"
# Migration 0003's triggers keeping products_fts in step with products.
_SQLITE_FTS_TRIGGERS = [
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


def upgrade() -> None:
    """Every ``*_time_us`` BIGINT becomes a ``*_time`` aware DateTime with the same instant."""
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_rebuild(datetimes=True)
        return
    for table, names in _TIME_COLUMNS.items():
        for name in names:
            op.execute(
                f"ALTER TABLE {table} ALTER COLUMN {name}_us TYPE TIMESTAMPTZ"
                f" USING TIMESTAMPTZ 'epoch' + {name}_us * INTERVAL '1 microsecond'"
            )
            op.alter_column(table, f"{name}_us", new_column_name=name)


def downgrade() -> None:
    """Back to microseconds since the epoch."""
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_rebuild(datetimes=False)
        return
    for table, names in _TIME_COLUMNS.items():
        for name in names:
            op.alter_column(table, name, new_column_name=f"{name}_us")
            op.execute(
                f"ALTER TABLE {table} ALTER COLUMN {name}_us TYPE BIGINT"
                f" USING CAST(EXTRACT(EPOCH FROM {name}_us) * 1000000 AS BIGINT)"
            )


def _sqlite_to_datetime(micros: str) -> str:
    return (
        f"strftime('%Y-%m-%d %H:%M:%S', {micros} / 1000000, 'unixepoch')"
        f" || printf('.%06d', {micros} % 1000000)"
    )


def _sqlite_to_micros(moment: str) -> str:
    return (
        f"CAST(strftime('%s', substr({moment}, 1, 19)) AS INTEGER) * 1000000"
        f" + CAST(substr({moment}, 21, 6) AS INTEGER)"
    )


def _catalog(prefix: str, time: Callable[[str], sa.Column[object]]) -> list[sa.Table]:
    """0003's tables, named ``prefix + name`` and referring to each other by those names,
    with ``time(name)`` for each time column. Parents come before children."""
    metadata = sa.MetaData()
    categories = f"{prefix}product_categories"
    products = f"{prefix}products"
    reservations = f"{prefix}stock_reservations"
    return [
        sa.Table(
            categories,
            metadata,
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("slug", sa.String(100), nullable=False, unique=True),
            sa.Column("parent_id", sa.String(32), sa.ForeignKey(f"{categories}.id")),
            time("create_time"),
        ),
        sa.Table(
            products,
            metadata,
            sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
            sa.Column("id", sa.String(32), nullable=False, unique=True),
            sa.Column("sku", sa.String(64), nullable=False, unique=True),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("description", sa.Text, nullable=False),
            sa.Column(
                "category_id", sa.String(32), sa.ForeignKey(f"{categories}.id"), nullable=False
            ),
            sa.Column("price_amount", sa.BigInteger, nullable=False),
            sa.Column("price_currency", sa.String(3), nullable=False),
            sa.Column("available", sa.BigInteger, nullable=False),
            sa.Column("reserved", sa.BigInteger, nullable=False),
            sa.Column("low_stock_threshold", sa.BigInteger, nullable=False),
            sa.Column("archived", sa.Boolean, nullable=False),
            sa.Column("search_name", sa.Text, nullable=False),
            sa.Column("search_body", sa.Text, nullable=False),
            time("create_time"),
            time("update_time"),
            sa.Column("version", sa.Integer, nullable=False),
            sa.CheckConstraint("available >= 0", name="ck_products_available"),
            sa.CheckConstraint("reserved >= 0", name="ck_products_reserved"),
        ),
        sa.Table(
            f"{prefix}product_price_changes",
            metadata,
            sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
            sa.Column("product_id", sa.String(32), sa.ForeignKey(f"{products}.id"), nullable=False),
            sa.Column("amount", sa.BigInteger, nullable=False),
            sa.Column("currency", sa.String(3), nullable=False),
            sa.Column("changed_by", sa.String(256), nullable=False),
            time("change_time"),
        ),
        sa.Table(
            f"{prefix}product_stock_adjustments",
            metadata,
            sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
            sa.Column("product_id", sa.String(32), sa.ForeignKey(f"{products}.id"), nullable=False),
            sa.Column("delta", sa.BigInteger, nullable=False),
            sa.Column("reason", sa.String(500), nullable=False),
            sa.Column("adjusted_by", sa.String(256), nullable=False),
            time("adjust_time"),
        ),
        sa.Table(
            reservations,
            metadata,
            sa.Column("order_id", sa.String(128), primary_key=True),
            sa.Column("status", sa.String(16), nullable=False),
            time("expire_time"),
            time("create_time"),
        ),
        sa.Table(
            f"{prefix}stock_reservation_items",
            metadata,
            sa.Column(
                "order_id",
                sa.String(128),
                sa.ForeignKey(f"{reservations}.order_id"),
                primary_key=True,
            ),
            sa.Column("position", sa.Integer, primary_key=True),
            sa.Column("product_id", sa.String(32), nullable=False),
            sa.Column("sku", sa.String(64), nullable=False),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("quantity", sa.Integer, nullable=False),
            sa.Column("unit_amount", sa.BigInteger, nullable=False),
            sa.Column("unit_currency", sa.String(3), nullable=False),
        ),
    ]


def _sqlite_rebuild(*, datetimes: bool) -> None:
    def time(name: str) -> sa.Column[object]:
        if datetimes:
            return sa.Column(name, sa.DateTime(timezone=True), nullable=False)
        return sa.Column(f"{name}_us", sa.BigInteger, nullable=False)

    # The source's name of a target time column, and the SQL that converts it.
    source_suffix = "_us" if datetimes else ""
    target_suffix = "" if datetimes else "_us"
    convert = _sqlite_to_datetime if datetimes else _sqlite_to_micros

    bind = op.get_bind()
    built = _catalog(_TMP, time)
    for table in built:
        table.create(bind)
    for table in built:
        name = table.name.removeprefix(_TMP)
        times = {f"{t}{target_suffix}": f"{t}{source_suffix}" for t in _TIME_COLUMNS[name]}
        targets = [column.name for column in table.columns]
        sources = [convert(times[c]) if c in times else c for c in targets]
        columns, values = ", ".join(targets), ", ".join(sources)
        op.execute(f"INSERT INTO {table.name} ({columns}) SELECT {values} FROM {name}")
    for table in reversed(built):  # children first: nothing refers to a table when it goes
        op.drop_table(table.name.removeprefix(_TMP))
    for table in built:
        op.rename_table(table.name, table.name.removeprefix(_TMP))
    t = target_suffix
    op.create_index("ix_product_categories_name", "product_categories", ["name", "id"])
    op.create_index("ix_products_newest", "products", [f"create_time{t}", "id"])
    op.create_index("ix_products_price", "products", ["price_amount", "id"])
    op.create_index(
        "ix_products_category_newest", "products", ["category_id", f"create_time{t}", "id"]
    )
    op.create_index(
        "ix_product_price_changes_product", "product_price_changes", ["product_id", "seq"]
    )
    op.create_index(
        "ix_stock_reservations_due", "stock_reservations", ["status", f"expire_time{t}"]
    )
    for trigger in _SQLITE_FTS_TRIGGERS:
        op.execute(trigger)
