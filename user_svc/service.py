"""Use cases of the user service: load, apply the domain's rules, save, record events."""

from __future__ import annotations

import hmac
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from google.protobuf.message import Message
from pydantic import SecretStr

from common.clock import now as _now
from common.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from common.logging import get_logger
from common.outbox import OutgoingEvent
from common.reasons import Reason
from common.settings import SERVICE_NAMES
from common.tokens import ROLE_ADMIN, ROLE_CUSTOMER, ROLE_SERVICE, SERVICE_SUBJECT_PREFIX
from common.topics import Topic
from microcommerce.user.v1 import events_pb2
from user_svc.domain import (
    FailureCount,
    Page,
    Preferences,
    RefreshOutcome,
    Session,
    ThrottlePolicy,
    User,
    check_name,
    check_password,
    check_roles,
    judge_refresh,
    login_refused,
    new_id,
    new_refresh_token,
    normalize_email,
    refresh_refused,
    throttle_key,
    token_digest,
)
from user_svc.keys import KeyRing
from user_svc.passwords import Passwords
from user_svc.store import AccountStore

_log = get_logger(__name__)

USER_EVENTS_TOPIC = Topic.USER_EVENTS
SERVICE_TOKEN_TTL = timedelta(minutes=15)


@dataclass(frozen=True)
class Client:
    """Where a call comes from, as the gateway reported it (empty when called directly)."""

    address: str = ""
    user_agent: str = ""


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    expires_in: int
    refresh_token: str = ""


@dataclass(frozen=True)
class Throttling:
    account: ThrottlePolicy
    client: ThrottlePolicy


@dataclass(frozen=True)
class Lifetimes:
    access_token: timedelta
    session_idle: timedelta


def _event(kind: str, user_id: str, data: Message) -> OutgoingEvent:
    return OutgoingEvent(USER_EVENTS_TOPIC, f"microcommerce.user.{kind}", user_id, data)


def _live(user: User | None) -> User:
    # An erased account answers like a missing one: its id is all that is left of it.
    if user is None or user.is_deleted:
        raise NotFound("this account does not exist")
    return user


class Accounts:
    """The user service's use cases, independent of how they are called."""

    def __init__(
        self,
        store: AccountStore,
        *,
        keys: KeyRing,
        passwords: Passwords,
        throttling: Throttling,
        lifetimes: Lifetimes,
        service_credential: SecretStr | None,
    ) -> None:
        self._store = store
        self._keys = keys
        self._passwords = passwords
        self._throttling = throttling
        self._lifetimes = lifetimes
        self._service_credential = service_credential

    async def database_reachable(self) -> bool:
        """The health stream's check: can this instance reach its own data?"""
        return await self._store.reachable()

    # Registration and profile

    async def register(
        self, email: str, password: str, name: str, *, roles: Iterable[str] = (ROLE_CUSTOMER,)
    ) -> User:
        email = normalize_email(email)
        check_password(password)
        user = User(
            id=new_id(),
            email=email,
            name=check_name(name),
            roles=frozenset(roles),
            create_time=_now(),
            password_hash=await self._passwords.hash(password),
        )
        async with self._store.unit_of_work() as work:
            await work.add_user(user)
            await work.emit(
                _event(
                    "registered",
                    user.id,
                    events_pb2.UserRegistered(user_id=user.id, roles=sorted(user.roles)),
                )
            )
        _log.info("user_registered", user_id=user.id)
        return user

    async def me(self, user_id: str) -> User:
        async with self._store.unit_of_work() as work:
            return _live(await work.user(user_id))

    async def update_me(self, user_id: str, *, name: str | None) -> User:
        async with self._store.unit_of_work() as work:
            user = _live(await work.user(user_id, for_update=True))
            if name is not None:
                user = replace(user, name=check_name(name))
                await work.save_user(user)
            return user

    async def delete_me(self, user_id: str) -> None:
        now = _now()
        async with self._store.unit_of_work() as work:
            user = _live(await work.user(user_id, for_update=True))
            await work.save_user(user.erased(now))
            await work.revoke_sessions_of(user.id, now)
            await work.emit(_event("deleted", user.id, events_pb2.UserDeleted(user_id=user.id)))
        _log.info("user_erased", user_id=user_id)

    async def preferences(self, user_id: str) -> Preferences:
        return (await self.me(user_id)).preferences

    async def update_preferences(self, user_id: str, preferences: Preferences) -> Preferences:
        async with self._store.unit_of_work() as work:
            user = _live(await work.user(user_id, for_update=True))
            await work.save_user(replace(user, preferences=preferences))
        return preferences

    # Administration

    async def list_users(
        self, *, page_size: int, page_token: str, email: str
    ) -> tuple[list[User], str]:
        page = Page.parse(page_size, page_token)
        wanted = email.strip().lower() or None
        async with self._store.unit_of_work() as work:
            found = await work.list_users(offset=page.offset, limit=page.size + 1, email=wanted)
        return found[: page.size], page.next_token(len(found))

    async def set_roles(self, admin_id: str, user_id: str, roles: Sequence[str]) -> User:
        new_roles = check_roles(roles)
        async with self._store.unit_of_work() as work:
            user = _live(await work.user(user_id, for_update=True))
            if new_roles != user.roles:
                changed = replace(user, roles=new_roles)
                await work.save_user(changed)
                await work.emit(
                    _event(
                        "roles_changed",
                        user.id,
                        events_pb2.UserRolesChanged(
                            user_id=user.id,
                            roles=sorted(new_roles),
                            previous_roles=sorted(user.roles),
                            changed_by=admin_id,
                        ),
                    )
                )
                user = changed
        _log.info("user_roles_set", user_id=user_id, roles=sorted(new_roles), by=admin_id)
        return user

    async def bootstrap_admin(self, email: str, password: str) -> User:
        """Create the configured administrator, or make the existing account match the config."""
        email = normalize_email(email)
        check_password(password)
        async with self._store.unit_of_work() as work:
            existing = await work.user_by_email(email)
        if existing is None:
            try:
                return await self.register(
                    email, password, "Administrator", roles=(ROLE_CUSTOMER, ROLE_ADMIN)
                )
            except AlreadyExists:
                # Another replica created it first: fall through to the update.
                async with self._store.unit_of_work() as work:
                    existing = await work.user_by_email(email)
                if existing is None:
                    raise
        password_hash = existing.password_hash
        if not await self._passwords.verify(password_hash, password):
            password_hash = await self._passwords.hash(password)
        async with self._store.unit_of_work() as work:
            user = _live(await work.user(existing.id, for_update=True))
            updated = replace(user, password_hash=password_hash, roles=user.roles | {ROLE_ADMIN})
            await work.save_user(updated)
            if updated.roles != user.roles:
                await work.emit(
                    _event(
                        "roles_changed",
                        user.id,
                        events_pb2.UserRolesChanged(
                            user_id=user.id,
                            roles=sorted(updated.roles),
                            previous_roles=sorted(user.roles),
                            changed_by="bootstrap",
                        ),
                    )
                )
        return updated

    # Tokens and sessions

    def jwks(self) -> list[dict[str, str]]:
        return self._keys.jwks()

    def _access_token(self, user: User, session_id: str) -> IssuedTokens:
        ttl = self._lifetimes.access_token
        token = self._keys.signer().mint(
            user.id, user.roles, ttl=ttl, extra_claims={"sid": session_id}
        )
        return IssuedTokens(token, int(ttl.total_seconds()))

    async def issue_token(self, email: str, password: str, client: Client) -> IssuedTokens:
        if not email.strip():
            raise InvalidArgument("email is required", field="email")
        if not password:
            raise InvalidArgument("password is required", field="password")
        # Not validated: a malformed email simply matches no account, and says so the same way.
        email = email.strip().lower()
        keys = {throttle_key("account", email): self._throttling.account}
        if client.address:
            keys[throttle_key("client", client.address)] = self._throttling.client
        now = _now()
        async with self._store.unit_of_work() as work:
            counts = await work.failure_counts(list(keys))
            user = await work.user_by_email(email)
        self._refuse_while_throttled(keys, counts, now)

        if user is None or user.is_deleted:
            await self._passwords.verify_unknown(password)
            accepted = False
        else:
            accepted = await self._passwords.verify(user.password_hash, password)
        if not accepted or user is None:
            await self._record_failure(keys)
            raise login_refused()

        rehashed = None
        if user.password_hash is not None and self._passwords.needs_rehash(user.password_hash):
            rehashed = await self._passwords.hash(password)
        refresh = new_refresh_token()
        now = _now()
        session = Session(
            id=new_id(),
            user_id=user.id,
            create_time=now,
            last_used_time=now,
            expire_time=now + self._lifetimes.session_idle,
            user_agent=client.user_agent[:512],
            client_address=client.address[:128],
        )
        async with self._store.unit_of_work() as work:
            await work.clear_failures(throttle_key("account", email))
            if rehashed is not None:
                fresh = await work.user(user.id, for_update=True)
                if fresh is not None and fresh.password_hash == user.password_hash:
                    await work.save_user(replace(fresh, password_hash=rehashed))
            await work.add_session(session)
            await work.add_refresh_token(token_digest(refresh), session.id, now)
        _log.info("session_opened", user_id=user.id, session_id=session.id)
        access = self._access_token(user, session.id)
        return IssuedTokens(access.access_token, access.expires_in, refresh)

    def _refuse_while_throttled(
        self, keys: dict[str, ThrottlePolicy], counts: dict[str, FailureCount], now: datetime
    ) -> None:
        waits = [
            wait
            for key, policy in keys.items()
            if key in counts and (wait := counts[key].retry_after(policy, now)) is not None
        ]
        if waits:
            seconds = math.ceil(max(waits).total_seconds())
            raise ResourceExhausted(
                f"too many failed sign-ins; try again in {seconds} s",
                reason=Reason.LOGIN_THROTTLED,
                retry_after_s=seconds,
            )

    async def _record_failure(self, keys: dict[str, ThrottlePolicy]) -> None:
        now = _now()
        longest_window = max(policy.window for policy in keys.values())
        async with self._store.unit_of_work() as work:
            await work.forget_failures_before(now - longest_window)
            counts = await work.failure_counts(list(keys))
            for key, policy in keys.items():
                count = counts.get(key, FailureCount(0, now)).after_failure(policy, now)
                await work.save_failure_count(key, count)

    async def refresh(self, refresh_token: str, client: Client) -> IssuedTokens:
        if not refresh_token:
            raise InvalidArgument("refresh_token is required", field="refresh_token")
        digest = token_digest(refresh_token)
        next_token = new_refresh_token()
        now = _now()
        outcome = RefreshOutcome.REJECT
        user: User | None = None
        session_id = ""
        async with self._store.unit_of_work() as work:
            known = await work.refresh_token(digest)
            if known is not None:
                session_id, spent = known
                session = await work.session(session_id)
                outcome = judge_refresh(token_spent=spent, session=session, now=now)
                if outcome is RefreshOutcome.ROTATE and not await work.spend_refresh_token(
                    digest, now
                ):
                    outcome = RefreshOutcome.REVOKE_FAMILY  # spent concurrently: also a reuse
                if outcome is RefreshOutcome.ROTATE and session is not None:
                    user = await work.user(session.user_id)
                    if user is None or user.is_deleted:
                        outcome = RefreshOutcome.REJECT
                if outcome is RefreshOutcome.REVOKE_FAMILY:
                    await work.revoke_session(session_id, now)
                elif outcome is RefreshOutcome.ROTATE:
                    await work.add_refresh_token(token_digest(next_token), session_id, now)
                    await work.touch_session(session_id, now, now + self._lifetimes.session_idle)
        if outcome is RefreshOutcome.REVOKE_FAMILY:
            _log.warning(
                "refresh_token_reused",
                session_id=session_id,
                client_address=client.address,
            )
        if outcome is not RefreshOutcome.ROTATE or user is None:
            raise refresh_refused()
        access = self._access_token(user, session_id)
        return IssuedTokens(access.access_token, access.expires_in, next_token)

    async def logout(self, user_id: str, refresh_token: str) -> None:
        if not refresh_token:
            raise InvalidArgument("refresh_token is required", field="refresh_token")
        async with self._store.unit_of_work() as work:
            known = await work.refresh_token(token_digest(refresh_token))
            session = None if known is None else await work.session(known[0])
            if session is None or session.user_id != user_id:
                raise NotFound(
                    "no session of yours holds this refresh token", field="refresh_token"
                )
            await work.revoke_session(session.id, _now())

    async def sessions(
        self, user_id: str, *, page_size: int, page_token: str
    ) -> tuple[list[Session], str]:
        page = Page.parse(page_size, page_token)
        async with self._store.unit_of_work() as work:
            found = await work.live_sessions(
                user_id, _now(), offset=page.offset, limit=page.size + 1
            )
        return found[: page.size], page.next_token(len(found))

    async def revoke_session(self, user_id: str, session_id: str) -> None:
        if not session_id:
            raise InvalidArgument("id is required", field="id")
        async with self._store.unit_of_work() as work:
            session = await work.session(session_id)
            # Someone else's session is answered like a missing one: ids reveal nothing.
            if session is None or session.user_id != user_id:
                raise NotFound("you have no session with this id")
            await work.revoke_session(session_id, _now())

    async def prune_sessions(self, *, retention: timedelta = timedelta(days=7)) -> int:
        """Forget sessions that ended more than ``retention`` ago; how many went."""
        async with self._store.unit_of_work() as work:
            pruned = await work.prune_sessions(_now() - retention)
        if pruned:
            _log.info("sessions_pruned", count=pruned)
        return pruned

    def issue_service_token(self, service: str, credential: str) -> IssuedTokens:
        expected = self._service_credential
        if expected is None or not expected.get_secret_value():
            raise Unavailable("service identities are not configured (MC_SERVICE_CREDENTIAL)")
        if service not in SERVICE_NAMES:
            raise InvalidArgument(f"service must be one of {list(SERVICE_NAMES)}", field="service")
        if not hmac.compare_digest(credential.encode(), expected.get_secret_value().encode()):
            _log.warning("service_credential_refused", service=service)
            raise Unauthenticated("service credential is wrong")
        token = self._keys.signer().mint(
            f"{SERVICE_SUBJECT_PREFIX}{service}", [ROLE_SERVICE], ttl=SERVICE_TOKEN_TTL
        )
        return IssuedTokens(token, int(SERVICE_TOKEN_TTL.total_seconds()))
