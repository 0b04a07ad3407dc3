"""The transactional outbox and the consumer inbox (common.outbox, common.inbox).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from common.migrations import messaging_revision

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

upgrade, downgrade = messaging_revision("product")
