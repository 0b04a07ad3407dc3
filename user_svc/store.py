"""Persistence of the user service: its own database, one unit of work per use case."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Row,
    String,
    Table,
    delete,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError

from common import unit_of_work
from common.db import Database, UtcDateTime, insert_on_conflict
from common.outbox import Outbox
from user_svc.domain import FailureCount, Preferences, Session, User

# Every table as the migrations create it (tests/integration/common/test_schema_drift.py).
METADATA = MetaData()

users = Table(
    "users",
    METADATA,
    Column("id", String(64), primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(256), nullable=False),
    Column("password_hash", String(512), nullable=True),
    Column("roles", String(256), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("language", String(35), nullable=False),
    Column("marketing_emails", Boolean(), nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("deleted_time", UtcDateTime(), nullable=True),
    Index("ix_users_create_time", "create_time", "id"),
)

sessions = Table(
    "user_sessions",
    METADATA,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(64), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("last_used_time", UtcDateTime(), nullable=False),
    Column("expire_time", UtcDateTime(), nullable=False),
    Column("revoked_time", UtcDateTime(), nullable=True),
    Column("user_agent", String(512), nullable=False),
    Column("client_address", String(128), nullable=False),
    Index("ix_user_sessions_user", "user_id", "last_used_time"),
    Index("ix_user_sessions_ended", "expire_time"),
)

refresh_tokens = Table(
    "user_refresh_tokens",
    METADATA,
    Column("token_digest", String(64), primary_key=True),
    Column(
        "session_id",
        String(64),
        ForeignKey("user_sessions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("issue_time", UtcDateTime(), nullable=False),
    Column("spent_time", UtcDateTime(), nullable=True),
    Index("ix_user_refresh_tokens_session", "session_id"),
)

login_failures = Table(
    "user_login_failures",
    METADATA,
    Column("key", String(64), primary_key=True),
    Column("failures", Integer(), nullable=False),
    Column("window_start", UtcDateTime(), nullable=False),
    Index("ix_user_login_failures_window", "window_start"),
)

# The signing key ring shared by every replica (user_svc.shared_keys): private keys sealed
# with MC_JWT_KEY_ENCRYPTION_KEY (user_svc.key_encryption), never stored in the clear.
signing_keys = Table(
    "user_signing_keys",
    METADATA,
    Column("kid", String(64), primary_key=True),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("sealed_private_key", LargeBinary(), nullable=False),
)


def _user(row: Row[Any]) -> User:
    return User(
        id=row.id,
        email=row.email,
        name=row.name,
        roles=frozenset(role for role in row.roles.split(",") if role),
        create_time=row.create_time,
        password_hash=row.password_hash,
        preferences=Preferences(row.currency, row.language, bool(row.marketing_emails)),
        deleted_time=row.deleted_time,
    )


def _user_values(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "password_hash": user.password_hash,
        "roles": ",".join(sorted(user.roles)),
        "currency": user.preferences.currency,
        "language": user.preferences.language,
        "marketing_emails": user.preferences.marketing_emails,
        "create_time": user.create_time,
        "deleted_time": user.deleted_time,
    }


def _session(row: Row[Any]) -> Session:
    return Session(
        id=row.id,
        user_id=row.user_id,
        create_time=row.create_time,
        last_used_time=row.last_used_time,
        expire_time=row.expire_time,
        user_agent=row.user_agent,
        client_address=row.client_address,
        revoked_time=row.revoked_time,
    )


def _session_values(session: Session) -> dict[str, Any]:
    return {
        "id": session.id,
        "user_id": session.user_id,
        "create_time": session.create_time,
        "last_used_time": session.last_used_time,
        "expire_time": session.expire_time,
        "revoked_time": session.revoked_time,
        "user_agent": session.user_agent,
        "client_address": session.client_address,
    }


class UnitOfWork(unit_of_work.UnitOfWork):
    """The reads and writes of one use case, committed together with its events."""

    # Users

    async def add_user(self, user: User) -> bool:
        """Insert the account; False when its email is taken (the unique index says so)."""
        try:
            # A savepoint: the unique violation must not poison the surrounding transaction.
            async with self._connection.begin_nested():
                await self._connection.execute(insert(users).values(_user_values(user)))
        except IntegrityError:
            return False
        return True

    async def save_user(self, user: User) -> None:
        values = _user_values(user)
        del values["id"]
        await self._connection.execute(update(users).where(users.c.id == user.id).values(values))

    async def user(self, user_id: str, *, for_update: bool = False) -> User | None:
        query = select(users).where(users.c.id == user_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._connection.execute(query)).first()
        return None if row is None else _user(row)

    async def user_by_email(self, email: str, *, for_update: bool = False) -> User | None:
        query = select(users).where(users.c.email == email)
        if for_update:
            query = query.with_for_update()
        row = (await self._connection.execute(query)).first()
        return None if row is None else _user(row)

    async def list_users(
        self, *, limit: int, email: str | None, before: tuple[datetime, str] | None
    ) -> list[User]:
        """Accounts not erased, newest first, starting after the (create_time, id) ``before``."""
        query = select(users).where(users.c.deleted_time.is_(None))
        if email is not None:
            query = query.where(users.c.email == email)
        if before is not None:
            query = query.where(tuple_(users.c.create_time, users.c.id) < before)
        query = query.order_by(users.c.create_time.desc(), users.c.id.desc())
        rows = (await self._connection.execute(query.limit(limit))).all()
        return [_user(row) for row in rows]

    # Sessions and refresh tokens

    async def add_session(self, session: Session) -> None:
        await self._connection.execute(insert(sessions).values(_session_values(session)))

    async def save_session(self, session: Session) -> None:
        values = _session_values(session)
        del values["id"]
        await self._connection.execute(
            update(sessions).where(sessions.c.id == session.id).values(values)
        )

    async def session(self, session_id: str, *, for_update: bool = False) -> Session | None:
        query = select(sessions).where(sessions.c.id == session_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._connection.execute(query)).first()
        return None if row is None else _session(row)

    async def live_sessions(
        self, user_id: str, now: datetime, *, limit: int, before: tuple[datetime, str] | None
    ) -> list[Session]:
        """A user's live sessions, most recently used first, after (last_used_time, id) ``before``.

        A session refreshed while someone pages moves ahead of the cursor and is missed by that
        walk, never repeated: last_used_time only grows. A fresh listing shows it on top.
        """
        query = select(sessions).where(
            sessions.c.user_id == user_id,
            sessions.c.revoked_time.is_(None),
            sessions.c.expire_time > now,
        )
        if before is not None:
            query = query.where(tuple_(sessions.c.last_used_time, sessions.c.id) < before)
        query = query.order_by(sessions.c.last_used_time.desc(), sessions.c.id.desc())
        return [_session(row) for row in (await self._connection.execute(query.limit(limit))).all()]

    async def revoke_session(self, session_id: str, now: datetime) -> None:
        await self._connection.execute(
            update(sessions)
            .where(sessions.c.id == session_id, sessions.c.revoked_time.is_(None))
            .values(revoked_time=now)
        )

    async def revoke_sessions_of(self, user_id: str, now: datetime) -> None:
        await self._connection.execute(
            update(sessions)
            .where(sessions.c.user_id == user_id, sessions.c.revoked_time.is_(None))
            .values(revoked_time=now)
        )

    async def add_refresh_token(self, digest: str, session_id: str, now: datetime) -> None:
        await self._connection.execute(
            insert(refresh_tokens).values(
                token_digest=digest, session_id=session_id, issue_time=now
            )
        )

    async def refresh_token(self, digest: str) -> tuple[str, bool] | None:
        """The session id of a refresh token and whether it is spent; None when unknown."""
        query = select(refresh_tokens.c.session_id, refresh_tokens.c.spent_time).where(
            refresh_tokens.c.token_digest == digest
        )
        row = (await self._connection.execute(query)).first()
        return None if row is None else (row.session_id, row.spent_time is not None)

    async def spend_refresh_token(self, digest: str, now: datetime) -> bool:
        """Mark the token spent; False when another call spent it first (a concurrent reuse)."""
        result = await self._connection.execute(
            update(refresh_tokens)
            .where(refresh_tokens.c.token_digest == digest, refresh_tokens.c.spent_time.is_(None))
            .values(spent_time=now)
        )
        return bool(result.rowcount)

    # Sign-in throttle

    async def failure_counts(self, keys: Sequence[str]) -> dict[str, FailureCount]:
        query = select(login_failures).where(login_failures.c.key.in_(list(keys)))
        rows = (await self._connection.execute(query)).all()
        return {row.key: FailureCount(row.failures, row.window_start) for row in rows}

    async def save_failure_count(self, key: str, count: FailureCount) -> None:
        values = {"key": key, "failures": count.failures, "window_start": count.window_start}
        statement = insert_on_conflict(self._connection, login_failures).values(values)
        await self._connection.execute(
            statement.on_conflict_do_update(
                index_elements=[login_failures.c.key],
                set_={"failures": count.failures, "window_start": count.window_start},
            )
        )

    async def forget_failures_before(self, cutoff: datetime) -> None:
        """Drop counts whose window ended: they can no longer throttle anyone."""
        await self._connection.execute(
            delete(login_failures).where(login_failures.c.window_start < cutoff)
        )

    async def prune_sessions(self, cutoff: datetime) -> int:
        """Delete sessions that ended before ``cutoff`` and their refresh tokens.

        A spent token is kept while its session lives (presenting it again must revoke the
        session); once the session is over, refusing it needs no record.
        """
        ended = select(sessions.c.id).where(
            (sessions.c.expire_time < cutoff) | (sessions.c.revoked_time < cutoff)
        )
        await self._connection.execute(
            delete(refresh_tokens).where(refresh_tokens.c.session_id.in_(ended))
        )
        result = await self._connection.execute(
            delete(sessions).where(
                (sessions.c.expire_time < cutoff) | (sessions.c.revoked_time < cutoff)
            )
        )
        return int(result.rowcount)

    async def clear_failures(self, key: str) -> None:
        await self._connection.execute(delete(login_failures).where(login_failures.c.key == key))


class AccountStore(unit_of_work.Store[UnitOfWork]):
    """The user service's tables, reached only through units of work on its own database."""

    def __init__(self, database: Database, outbox: Outbox) -> None:
        super().__init__(database, outbox, UnitOfWork)
