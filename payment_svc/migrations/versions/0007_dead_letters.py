"""The dead letters of the service's event consumers (common.dead_letters).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from common.migrations import dead_letters_revision

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels = None
depends_on = None

upgrade, downgrade = dead_letters_revision("payment")
