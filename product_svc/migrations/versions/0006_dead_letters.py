"""The dead letters of the service's event consumers (common.dead_letters).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from common.migrations import dead_letters_revision

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels = None
depends_on = None

upgrade, downgrade = dead_letters_revision("product")
