"""The outbox keeps the trace context of the change that wrote each event (common.outbox).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from common.migrations import outbox_trace_context_revision

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels = None
depends_on = None

upgrade, downgrade = outbox_trace_context_revision("product")
