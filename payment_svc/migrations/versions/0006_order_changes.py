"""Each order's audit trail, appended in the transaction of every change (payment_svc.store).

Orders placed before this revision get their placement and whatever of their events the
outbox still holds (published rows are pruned after a week), in outbox order; older changes
of those orders are gone and are not invented.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TRAIL_TYPES = ("microcommerce.order.", "microcommerce.payment.")


def upgrade() -> None:
    trail = op.create_table(
        "payment_order_changes",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_index("ix_payment_order_changes_order", "payment_order_changes", ["order_id", "seq"])
    _backfill(trail)


def _backfill(trail: sa.Table) -> None:
    bind = op.get_bind()
    orders = sa.table(
        "payment_orders", sa.column("id"), sa.column("create_time", sa.DateTime(timezone=True))
    )
    outbox = sa.table(
        "payment_outbox",
        sa.column("seq"),
        sa.column("event_id"),
        sa.column("key"),
        sa.column("payload"),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    rows: list[dict[str, object]] = [
        {
            "id": f"{row.id}:placed",
            "order_id": row.id,
            "type": "",
            "time": row.create_time,
            "data": "{}",
        }
        for row in bind.execute(sa.select(orders).order_by(orders.c.create_time, orders.c.id))
    ]
    for row in bind.execute(sa.select(outbox).order_by(outbox.c.seq)):
        envelope = json.loads(row.payload)
        event_type = str(envelope.get("type", ""))
        if event_type.startswith(_TRAIL_TYPES):
            rows.append(
                {
                    "id": row.event_id,
                    "order_id": row.key,
                    "type": event_type,
                    "time": row.created_at,
                    "data": json.dumps(envelope.get("data", {}), separators=(",", ":")),
                }
            )
    if rows:
        op.bulk_insert(trail, rows)


def downgrade() -> None:
    op.drop_index("ix_payment_order_changes_order", table_name="payment_order_changes")
    op.drop_table("payment_order_changes")
