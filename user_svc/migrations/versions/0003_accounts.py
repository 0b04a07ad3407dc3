"""Accounts, sessions with their refresh tokens, and the sign-in throttle.

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


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(64), primary_key=True),
        # Stored normalized (lower case), so a plain unique index is case-insensitive.
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("password_hash", sa.String(512), nullable=True),
        sa.Column("roles", sa.String(256), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("language", sa.String(35), nullable=False),
        sa.Column("marketing_emails", sa.Boolean(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_time", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_users_create_time", "users", ["create_time", "id"])
    op.create_table(
        "user_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "user_id", sa.String(64), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("user_agent", sa.String(512), nullable=False),
        sa.Column("client_address", sa.String(128), nullable=False),
    )
    op.create_index("ix_user_sessions_user", "user_sessions", ["user_id", "last_used_time"])
    op.create_table(
        "user_refresh_tokens",
        sa.Column("token_digest", sa.String(64), primary_key=True),
        sa.Column(
            "session_id",
            sa.String(64),
            sa.ForeignKey("user_sessions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("issue_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("spent_time", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_user_refresh_tokens_session", "user_refresh_tokens", ["session_id"])
    op.create_table(
        "user_login_failures",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_user_login_failures_window", "user_login_failures", ["window_start"])
    op.create_index("ix_user_sessions_ended", "user_sessions", ["expire_time"])


def downgrade() -> None:
    op.drop_index("ix_user_sessions_ended", table_name="user_sessions")
    op.drop_index("ix_user_login_failures_window", table_name="user_login_failures")
    op.drop_table("user_login_failures")
    op.drop_index("ix_user_refresh_tokens_session", table_name="user_refresh_tokens")
    op.drop_table("user_refresh_tokens")
    op.drop_index("ix_user_sessions_user", table_name="user_sessions")
    op.drop_table("user_sessions")
    op.drop_index("ix_users_create_time", table_name="users")
    op.drop_table("users")
