"""Persistence of the user service: its own database, one unit of work per use case."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Integer,
    MetaData,
    Row,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from common.db import Database, UtcDateTime, insert_on_conflict
from common.errors import AlreadyExists
from common.outbox import Outbox, OutgoingEvent
from user_svc.domain import FailureCount, Preferences, Session, User

_metadata = MetaData()

users = Table(
    "users",
    _metadata,
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
)

sessions = Table(
    "user_sessions",
    _metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(64), ForeignKey("users.id"), nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("last_used_time", UtcDateTime(), nullable=False),
    Column("expire_time", UtcDateTime(), nullable=False),
    Column("revoked_time", UtcDateTime(), nullable=True),
    Column("user_agent", String(512), nullable=False),
    Column("client_address", String(128), nullable=False),
)

refresh_tokens = Table(
    "user_refresh_tokens",
    _metadata,
    Column("token_digest", String(64), primary_key=True),
    Column("session_id", String(64), ForeignKey("user_sessions.id"), nullable=False),
    Column("issue_time", UtcDateTime(), nullable=False),
    Column("spent_time", UtcDateTime(), nullable=True),
)

login_failures = Table(
    "user_login_failures",
    _metadata,
    Column("key", String(64), primary_key=True),
    Column("failures", Integer(), nullable=False),
    Column("window_start", UtcDateTime(), nullable=False),
)


def _utc(moment: datetime) -> datetime:
    # SQLite hands timezone-aware columns back naive; every value we write is UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _optional_utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else _utc(moment)


def _user(row: Row[Any]) -> User:
    return User(
        id=row.id,
        email=row.email,
        name=row.name,
        roles=frozenset(role for role in row.roles.split(",") if role),
        create_time=_utc(row.create_time),
        password_hash=row.password_hash,
        preferences=Preferences(row.currency, row.language, bool(row.marketing_emails)),
        deleted_time=_optional_utc(row.deleted_time),
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
        create_time=_utc(row.create_time),
        last_used_time=_utc(row.last_used_time),
        expire_time=_utc(row.expire_time),
        user_agent=row.user_agent,
        client_address=row.client_address,
        revoked_time=_optional_utc(row.revoked_time),
    )


class UnitOfWork:
    """The reads and writes of one use case, committed together with its events."""

    def __init__(self, session: AsyncSession, outbox: Outbox) -> None:
        self._session = session
        self._outbox = outbox

    async def emit(self, *events: OutgoingEvent) -> None:
        await self._outbox.add(self._session, *events)

    # Users

    async def add_user(self, user: User) -> None:
        try:
            # A savepoint: the unique violation must not poison the surrounding transaction.
            async with self._session.begin_nested():
                await self._session.execute(insert(users).values(_user_values(user)))
        except IntegrityError as error:
            raise AlreadyExists("an account with this email exists", field="email") from error

    async def save_user(self, user: User) -> None:
        values = _user_values(user)
        del values["id"]
        await self._session.execute(update(users).where(users.c.id == user.id).values(values))

    async def user(self, user_id: str, *, for_update: bool = False) -> User | None:
        query = select(users).where(users.c.id == user_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).first()
        return None if row is None else _user(row)

    async def user_by_email(self, email: str) -> User | None:
        row = (await self._session.execute(select(users).where(users.c.email == email))).first()
        return None if row is None else _user(row)

    async def list_users(self, *, offset: int, limit: int, email: str | None) -> list[User]:
        query = select(users).where(users.c.deleted_time.is_(None))
        if email is not None:
            query = query.where(users.c.email == email)
        query = query.order_by(users.c.create_time.desc(), users.c.id.desc())
        rows = (await self._session.execute(query.offset(offset).limit(limit))).all()
        return [_user(row) for row in rows]

    # Sessions and refresh tokens

    async def add_session(self, session: Session) -> None:
        await self._session.execute(
            insert(sessions).values(
                id=session.id,
                user_id=session.user_id,
                create_time=session.create_time,
                last_used_time=session.last_used_time,
                expire_time=session.expire_time,
                revoked_time=session.revoked_time,
                user_agent=session.user_agent,
                client_address=session.client_address,
            )
        )

    async def session(self, session_id: str) -> Session | None:
        query = select(sessions).where(sessions.c.id == session_id)
        row = (await self._session.execute(query)).first()
        return None if row is None else _session(row)

    async def live_sessions(
        self, user_id: str, now: datetime, *, offset: int, limit: int
    ) -> list[Session]:
        query = (
            select(sessions)
            .where(
                sessions.c.user_id == user_id,
                sessions.c.revoked_time.is_(None),
                sessions.c.expire_time > now,
            )
            .order_by(sessions.c.last_used_time.desc(), sessions.c.id)
            .offset(offset)
            .limit(limit)
        )
        return [_session(row) for row in (await self._session.execute(query)).all()]

    async def touch_session(self, session_id: str, now: datetime, expire_time: datetime) -> None:
        await self._session.execute(
            update(sessions)
            .where(sessions.c.id == session_id)
            .values(last_used_time=now, expire_time=expire_time)
        )

    async def revoke_session(self, session_id: str, now: datetime) -> None:
        await self._session.execute(
            update(sessions)
            .where(sessions.c.id == session_id, sessions.c.revoked_time.is_(None))
            .values(revoked_time=now)
        )

    async def revoke_sessions_of(self, user_id: str, now: datetime) -> None:
        await self._session.execute(
            update(sessions)
            .where(sessions.c.user_id == user_id, sessions.c.revoked_time.is_(None))
            .values(revoked_time=now)
        )

    async def add_refresh_token(self, digest: str, session_id: str, now: datetime) -> None:
        await self._session.execute(
            insert(refresh_tokens).values(
                token_digest=digest, session_id=session_id, issue_time=now
            )
        )

    async def refresh_token(self, digest: str) -> tuple[str, bool] | None:
        """The session id of a refresh token and whether it is spent; None when unknown."""
        query = select(refresh_tokens.c.session_id, refresh_tokens.c.spent_time).where(
            refresh_tokens.c.token_digest == digest
        )
        row = (await self._session.execute(query)).first()
        return None if row is None else (row.session_id, row.spent_time is not None)

    async def spend_refresh_token(self, digest: str, now: datetime) -> bool:
        """Mark the token spent; False when another call spent it first (a concurrent reuse)."""
        result = await self._session.execute(
            update(refresh_tokens)
            .where(refresh_tokens.c.token_digest == digest, refresh_tokens.c.spent_time.is_(None))
            .values(spent_time=now)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    # Sign-in throttle

    async def failure_counts(self, keys: Sequence[str]) -> dict[str, FailureCount]:
        query = select(login_failures).where(login_failures.c.key.in_(list(keys)))
        rows = (await self._session.execute(query)).all()
        return {row.key: FailureCount(row.failures, _utc(row.window_start)) for row in rows}

    async def save_failure_count(self, key: str, count: FailureCount) -> None:
        values = {"key": key, "failures": count.failures, "window_start": count.window_start}
        statement = insert_on_conflict(self._session, login_failures).values(values)
        await self._session.execute(
            statement.on_conflict_do_update(
                index_elements=[login_failures.c.key],
                set_={"failures": count.failures, "window_start": count.window_start},
            )
        )

    async def forget_failures_before(self, cutoff: datetime) -> None:
        """Drop counts whose window ended: they can no longer throttle anyone."""
        await self._session.execute(
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
        await self._session.execute(
            delete(refresh_tokens).where(refresh_tokens.c.session_id.in_(ended))
        )
        result = await self._session.execute(
            delete(sessions).where(
                (sessions.c.expire_time < cutoff) | (sessions.c.revoked_time < cutoff)
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def clear_failures(self, key: str) -> None:
        await self._session.execute(delete(login_failures).where(login_failures.c.key == key))


class AccountStore:
    """The user service's tables, reached only through units of work on its own database."""

    def __init__(self, database: Database, outbox: Outbox) -> None:
        self._database = database
        self._outbox = outbox

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        """Commits when the block ends normally, rolls back (events included) if it raises."""
        async with self._database.session() as session:
            yield UnitOfWork(session, self._outbox)

    async def reachable(self) -> bool:
        return await self._database.ping()
