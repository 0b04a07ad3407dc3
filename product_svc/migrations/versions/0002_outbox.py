"""The transactional outbox and the consumer inbox (common.outbox, common.inbox).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from common.inbox import create_inbox_table, drop_inbox_table
from common.outbox import create_outbox_table, drop_outbox_table

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_outbox_table(op, "product")
    create_inbox_table(op, "product")


def downgrade() -> None:
    drop_inbox_table(op, "product")
    drop_outbox_table(op, "product")
