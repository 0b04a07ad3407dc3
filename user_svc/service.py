"""Use cases of the user service: load, apply the domain's rules, save, record events."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import SecretStr

from common import pagination
from common.clock import from_micros, to_micros
from common.clock import now as _now
from common.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from common.logging import get_logger
from common.pagination import PageTokens
from common.settings import SERVICE_NAMES
from common.tokens import ROLE_ADMIN, ROLE_CUSTOMER, ROLE_SERVICE, SERVICE_SUBJECT_PREFIX
from user_svc import messages
from user_svc.domain import (
    FailureCount,
    Preferences,
    RefreshOutcome,
    Session,
    ThrottlePolicy,
    User,
    check_name,
    check_password,
    check_roles,
    email_taken,
    judge_refresh,
    live_account,
    login_refused,
    new_refresh_token,
    normalize_email,
    refresh_refused,
    refuse_while_throttled,
    throttle_key,
    token_digest,
)
from user_svc.keys import SigningKeys
from user_svc.passwords import Passwords
from user_svc.store import AccountStore

_log = get_logger(__name__)

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


class Accounts:
    """The user service's use cases, independent of how they are called."""

    def __init__(
        self,
        store: AccountStore,
        *,
        keys: SigningKeys,
        passwords: Passwords,
        throttling: Throttling,
        lifetimes: Lifetimes,
        service_credential: SecretStr | None,
        page_tokens: PageTokens | None = None,
    ) -> None:
        self._store = store
        # Without the deployment's key (MC_PAGE_TOKEN_KEY) tokens hold only within this process.
        self._page_tokens = page_tokens or PageTokens.for_service(None, "user")
        self._keys = keys
        self._passwords = passwords
        self._throttling = throttling
        self._lifetimes = lifetimes
        self._service_credential = service_credential

    async def database_reachable(self) -> bool:
        """The health stream's check: can this instance reach its own data?"""
        return await self._store.reachable()

    # Registration and profile

    async def register(self, email: str, password: str, name: str) -> User:
        email = normalize_email(email)
        check_password(password)
        check_name(name)
        # Hashed before the unit of work: argon2 must not hold a transaction open.
        password_hash = await self._passwords.hash(password)
        user = User.register(
            email=email,
            name=name,
            roles=(ROLE_CUSTOMER,),
            password_hash=password_hash,
            now=_now(),
        )
        async with self._store.unit_of_work() as work:
            if not await work.add_user(user):
                raise email_taken()
            await work.emit(messages.user_registered(user))
        _log.info("user_registered", user_id=user.id)
        return user

    async def me(self, user_id: str) -> User:
        async with self._store.unit_of_work() as work:
            return live_account(await work.user(user_id))

    async def update_me(self, user_id: str, *, name: str | None) -> User:
        async with self._store.unit_of_work() as work:
            user = live_account(await work.user(user_id, for_update=True))
            if name is not None:
                user = user.renamed(name)
                await work.save_user(user)
            return user

    async def delete_me(self, user_id: str) -> None:
        now = _now()
        async with self._store.unit_of_work() as work:
            user = live_account(await work.user(user_id, for_update=True))
            await work.save_user(user.erased(now))
            await work.revoke_sessions_of(user.id, now)
            await work.emit(messages.user_deleted(user))
        _log.info("user_erased", user_id=user_id)

    async def preferences(self, user_id: str) -> Preferences:
        return (await self.me(user_id)).preferences

    async def update_preferences(self, user_id: str, preferences: Preferences) -> Preferences:
        async with self._store.unit_of_work() as work:
            user = live_account(await work.user(user_id, for_update=True))
            await work.save_user(user.with_preferences(preferences))
        return preferences

    # Administration

    async def list_users(
        self, *, page_size: int | None, page_token: str, email: str
    ) -> tuple[list[User], str]:
        """One page of accounts, newest first, and the token of the next page (AIP-158)."""
        limit = pagination.page_size(page_size)
        wanted = email.strip().lower()
        bound_to = pagination.fingerprint("ListUsers", {"email": wanted})
        before = self._cursor(page_token, bound_to)
        async with self._store.unit_of_work() as work:
            found = await work.list_users(limit=limit + 1, email=wanted or None, before=before)
        page = found[:limit]
        if len(found) <= limit:
            return page, ""
        return page, self._next_token(bound_to, page[-1].create_time, page[-1].id)

    async def set_roles(self, admin_id: str, user_id: str, roles: Sequence[str]) -> User:
        new_roles = check_roles(roles)
        async with self._store.unit_of_work() as work:
            user = live_account(await work.user(user_id, for_update=True))
            changed = user.with_roles(new_roles)
            # Setting the roles a user already has changes nothing and announces nothing.
            if changed != user:
                await work.save_user(changed)
                await work.emit(messages.user_roles_changed(user, changed, changed_by=admin_id))
                user = changed
        _log.info("user_roles_set", user_id=user_id, roles=sorted(new_roles), by=admin_id)
        return user

    async def bootstrap_admin(self, email: str, password: str) -> User:
        """Create the configured administrator, or make the existing account match the config."""
        email = normalize_email(email)
        check_password(password)
        try:
            return await self._bootstrap_admin(email, password)
        except AlreadyExists:
            # Another replica created it between our read and our insert: now it exists.
            return await self._bootstrap_admin(email, password)

    async def _bootstrap_admin(self, email: str, password: str) -> User:
        # argon2 runs inside this unit of work, unlike sign-in: this happens once per start-up,
        # and holding the row keeps two replicas from writing different hashes.
        async with self._store.unit_of_work() as work:
            existing = await work.user_by_email(email, for_update=True)
            if existing is None:
                admin = User.register(
                    email=email,
                    name="Administrator",
                    roles=(ROLE_CUSTOMER, ROLE_ADMIN),
                    password_hash=await self._passwords.hash(password),
                    now=_now(),
                )
                if not await work.add_user(admin):
                    raise email_taken()
                await work.emit(messages.user_registered(admin))
                _log.info("user_registered", user_id=admin.id)
                return admin
            user = live_account(existing)
            updated = user.with_roles(user.roles | {ROLE_ADMIN})
            if not await self._passwords.verify(user.password_hash, password):
                updated = updated.with_password_hash(await self._passwords.hash(password))
            if updated != user:
                await work.save_user(updated)
            if updated.roles != user.roles:
                await work.emit(messages.user_roles_changed(user, updated, changed_by="bootstrap"))
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
        # Sign-in is two units of work on purpose: argon2 runs between them, holding neither a
        # transaction nor a pooled connection for its ~50 ms.
        async with self._store.unit_of_work() as work:
            counts = await work.failure_counts(list(keys))
            user = await work.user_by_email(email)
        refuse_while_throttled(keys, counts, now)

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
        session = Session.open(
            user_id=user.id,
            user_agent=client.user_agent,
            client_address=client.address,
            now=now,
            idle=self._lifetimes.session_idle,
        )
        async with self._store.unit_of_work() as work:
            await work.clear_failures(throttle_key("account", email))
            if rehashed is not None:
                fresh = await work.user(user.id, for_update=True)
                # Unless the password changed meanwhile: a rehash must not undo that change.
                if fresh is not None and fresh.password_hash == user.password_hash:
                    await work.save_user(fresh.with_password_hash(rehashed))
            await work.add_session(session)
            await work.add_refresh_token(token_digest(refresh), session.id, now)
        _log.info("session_opened", user_id=user.id, session_id=session.id)
        access = self._access_token(user, session.id)
        return IssuedTokens(access.access_token, access.expires_in, refresh)

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
        async with self._store.unit_of_work() as work:
            known = await work.refresh_token(digest)
            spent = known is not None and known[1]
            # Locked: a logout or revocation racing this refresh waits, then still applies.
            session = None if known is None else await work.session(known[0], for_update=True)
            user = None if session is None else await work.user(session.user_id)
            outcome = judge_refresh(token_spent=spent, session=session, owner=user, now=now)
            if outcome is RefreshOutcome.ROTATE and not await work.spend_refresh_token(digest, now):
                # Spent by a concurrent call since we read it: that is a reuse too.
                outcome = judge_refresh(token_spent=True, session=session, owner=user, now=now)
            if session is not None and outcome is RefreshOutcome.REVOKE_FAMILY:
                await work.revoke_session(session.id, now)
            elif session is not None and outcome is RefreshOutcome.ROTATE:
                await work.add_refresh_token(token_digest(next_token), session.id, now)
                await work.save_session(session.used(now, self._lifetimes.session_idle))
        if session is not None and outcome is RefreshOutcome.REVOKE_FAMILY:
            _log.warning(
                "refresh_token_reused", session_id=session.id, client_address=client.address
            )
        if session is None or user is None or outcome is not RefreshOutcome.ROTATE:
            raise refresh_refused()
        access = self._access_token(user, session.id)
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
        self, user_id: str, *, page_size: int | None, page_token: str
    ) -> tuple[list[Session], str]:
        """One page of the user's live sessions, most recently used first, and the next token."""
        limit = pagination.page_size(page_size)
        # Bound to the user: another account's token is refused, not read as a cursor.
        bound_to = pagination.fingerprint("ListSessions", {"user_id": user_id})
        before = self._cursor(page_token, bound_to)
        async with self._store.unit_of_work() as work:
            found = await work.live_sessions(user_id, _now(), limit=limit + 1, before=before)
        page = found[:limit]
        if len(found) <= limit:
            return page, ""
        return page, self._next_token(bound_to, page[-1].last_used_time, page[-1].id)

    def _cursor(self, page_token: str, bound_to: str) -> tuple[datetime, str] | None:
        """The (time, id) sort key a page token resumes after; None for the first page."""
        last = self._page_tokens.read(page_token, bound_to, key_length=2)
        if last is None:
            return None
        micros, item_id = last
        try:
            return from_micros(int(micros)), item_id
        except (ValueError, OverflowError):
            # Signed by us, so only a token of an older format gets here.
            raise InvalidArgument("page_token is not valid", field="page_token") from None

    def _next_token(self, bound_to: str, moment: datetime, item_id: str) -> str:
        # Microseconds, not a formatted time: an exact key whatever the database hands back.
        return self._page_tokens.issue(bound_to, [str(to_micros(moment)), item_id])

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
            _log.warning("service_credential_refused", claimed_service=service)
            raise Unauthenticated("service credential is wrong")
        token = self._keys.signer().mint(
            f"{SERVICE_SUBJECT_PREFIX}{service}", [ROLE_SERVICE], ttl=SERVICE_TOKEN_TTL
        )
        return IssuedTokens(token, int(SERVICE_TOKEN_TTL.total_seconds()))
