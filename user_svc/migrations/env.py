"""Alembic environment of user_svc: the shared runner with this service's version table."""

from common.migrations import run_env, version_table

run_env(version_table=version_table("user"))
