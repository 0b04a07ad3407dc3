"""Accounts, credentials, sessions and roles: the user service's entities and rules (user issue).

Plain Python only: no gRPC, SQL, Kafka or HTTP here (tests/unit/test_architecture.py).
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum

from common.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
)
from common.reasons import Reason
from common.roles import ROLE_ADMIN, ROLE_CUSTOMER

ASSIGNABLE_ROLES = frozenset({ROLE_CUSTOMER, ROLE_ADMIN})
MIN_PASSWORD_LENGTH = 8
# argon2 hashes whatever it is given; a megabyte-long "password" would only burn CPU.
MAX_PASSWORD_LENGTH = 1024
MAX_NAME_LENGTH = 200
# RFC 5321: 64 octets local part, 254 for a whole forward path.
MAX_EMAIL_LENGTH = 254
MAX_LOCAL_PART_LENGTH = 64
MAX_USER_AGENT_LENGTH = 512
MAX_CLIENT_ADDRESS_LENGTH = 128

# The most used passwords of public breach corpora that are at least 8 characters long (the
# shorter ones are refused by length anyway). Compared case-insensitively.
COMMON_PASSWORDS = frozenset(
    {
        "12345678",
        "123456789",
        "1234567890",
        "12345678910",
        "11111111",
        "00000000",
        "87654321",
        "88888888",
        "11223344",
        "12341234",
        "12121212",
        "123123123",
        "147258369",
        "987654321",
        "password",
        "password1",
        "password12",
        "password123",
        "passw0rd",
        "p@ssw0rd",
        "qwertyui",
        "qwertyuiop",
        "qwerty123",
        "qwerty12",
        "1q2w3e4r",
        "1q2w3e4r5t",
        "1qaz2wsx",
        "zaq12wsx",
        "asdfghjk",
        "asdfasdf",
        "abcd1234",
        "abc12345",
        "aa123456",
        "iloveyou",
        "sunshine",
        "princess",
        "football",
        "baseball",
        "welcome1",
        "trustno1",
        "superman",
        "starwars",
        "whatever",
        "computer",
        "michelle",
        "jennifer",
        "letmein1",
        "changeme",
        "admin123",
        "administrator",
        "default1",
        "internet",
        "1234qwer",
        "q1w2e3r4",
        "q1w2e3r4t5",
        "google123",
        "unknown1",
        "monkey123",
        "dragon123",
        "master123",
        "shadow123",
        "secret123",
    }
)

_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# Reserved top-level domains no mail is delivered to (RFC 2606, RFC 6761).
_UNDELIVERABLE_TLDS = frozenset({"invalid", "localhost", "test"})
_CURRENCY = re.compile(r"[A-Z]{3}")
# BCP 47 in its common shapes: language, optional script, region and variants.
_LANGUAGE_TAG = re.compile(
    r"[A-Za-z]{2,3}(-[A-Za-z]{4})?(-([A-Za-z]{2}|[0-9]{3}))?(-([A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*"
)


def normalize_email(raw: str) -> str:
    """The canonical form of an email (trimmed, lower case); ``InvalidArgument`` if not one.

    Dot-atom local parts and DNS host names only: quoted local parts and address literals are
    legal but not what a shop's customers use, and refusing them closes odd corners.
    """
    email = raw.strip().lower()
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain:
        raise InvalidArgument("email must look like name@example.com", field="email")
    if len(email) > MAX_EMAIL_LENGTH or len(local) > MAX_LOCAL_PART_LENGTH:
        raise InvalidArgument("email is too long", field="email")
    if not _LOCAL_PART.fullmatch(local):
        raise InvalidArgument("email has characters not allowed before the @", field="email")
    labels = domain.split(".")
    # A shop needs deliverable mail: a bare host name ("localhost") has no public MX.
    if len(labels) < 2 or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
        raise InvalidArgument("email domain is not a valid host name", field="email")
    if labels[-1].isdigit() or labels[-1] in _UNDELIVERABLE_TLDS:
        raise InvalidArgument("email domain is not a valid host name", field="email")
    return email


def check_password(password: str) -> None:
    """Refuse passwords that are too short, absurdly long or among the most common ones."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidArgument(
            f"password must be at least {MIN_PASSWORD_LENGTH} characters", field="password"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidArgument(
            f"password must be at most {MAX_PASSWORD_LENGTH} characters", field="password"
        )
    if password.lower() in COMMON_PASSWORDS:
        raise InvalidArgument("password is too common; choose another one", field="password")


def check_name(name: str) -> str:
    """The display name, trimmed; it must not be empty."""
    cleaned = name.strip()
    if not cleaned:
        raise InvalidArgument("name must not be empty", field="name")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"name must be at most {MAX_NAME_LENGTH} characters", field="name")
    return cleaned


def check_roles(roles: Iterable[str]) -> frozenset[str]:
    """A role set an administrator may assign: only known roles, at least one."""
    wanted = frozenset(role.strip().lower() for role in roles)
    unknown = sorted(wanted - ASSIGNABLE_ROLES)
    if unknown:
        raise InvalidArgument(
            f"unknown role {unknown[0]!r}; roles are {sorted(ASSIGNABLE_ROLES)}", field="roles"
        )
    if not wanted:
        raise InvalidArgument("roles must not be empty", field="roles")
    return wanted


@dataclass(frozen=True)
class Preferences:
    """How a user wants the shop to address them; the defaults until they set any."""

    currency: str = "USD"
    language: str = "en"
    marketing_emails: bool = False

    @classmethod
    def parse(cls, currency: str, language: str, marketing_emails: bool) -> Preferences:
        """Validated preferences; an empty field takes its default (PUT resets what is omitted)."""
        defaults = cls()
        currency = currency.strip().upper() or defaults.currency
        language = language.strip() or defaults.language
        if not _CURRENCY.fullmatch(currency):
            raise InvalidArgument(
                "currency must be an ISO 4217 code such as USD", field="preferences.currency"
            )
        if len(language) > 35 or not _LANGUAGE_TAG.fullmatch(language):
            raise InvalidArgument(
                "language must be a BCP 47 tag such as en or de-CH", field="preferences.language"
            )
        return cls(currency, language, marketing_emails)


@dataclass(frozen=True)
class User:
    """An account. ``password_hash`` is None once the account is erased."""

    id: str
    email: str
    name: str
    roles: frozenset[str]
    create_time: datetime
    password_hash: str | None
    preferences: Preferences = field(default_factory=Preferences)
    deleted_time: datetime | None = None

    @classmethod
    def register(
        cls, *, email: str, name: str, roles: Iterable[str], password_hash: str, now: datetime
    ) -> User:
        """A new account; ``email`` is already normalized and the password already checked."""
        return cls(
            id=new_id(),
            email=email,
            name=check_name(name),
            roles=frozenset(roles),
            create_time=now,
            password_hash=password_hash,
        )

    @property
    def is_deleted(self) -> bool:
        return self.deleted_time is not None

    def renamed(self, name: str) -> User:
        return replace(self, name=check_name(name))

    def with_preferences(self, preferences: Preferences) -> User:
        return replace(self, preferences=preferences)

    def with_roles(self, roles: frozenset[str]) -> User:
        return replace(self, roles=roles)

    def with_password_hash(self, password_hash: str) -> User:
        return replace(self, password_hash=password_hash)

    def erased(self, now: datetime) -> User:
        """The account with its personal data gone; only the opaque id and roles remain."""
        return replace(
            self,
            email=erased_email(self.id),
            name="",
            password_hash=None,
            preferences=Preferences(),
            deleted_time=now,
        )


def live_account(user: User | None) -> User:
    """The account, if it exists and is not erased; NotFound otherwise."""
    # An erased account answers like a missing one: its id is all that is left of it.
    if user is None or user.is_deleted:
        raise NotFound("this account does not exist")
    return user


def email_taken() -> AlreadyExists:
    return AlreadyExists("an account with this email exists", field="email")


def erased_email(user_id: str) -> str:
    # Unique per account (the column is unique) and in the reserved ".invalid" TLD (RFC 2606),
    # which normalize_email refuses: no mail reaches it and no registration can claim it.
    return f"erased-{user_id}@erased.invalid"


def new_id() -> str:
    return secrets.token_hex(16)


def new_refresh_token() -> str:
    """An opaque, unguessable refresh token (256 bits)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What is stored for a refresh token: a leaked table must not yield usable tokens.

    A plain SHA-256 suffices (no salt or stretching): the token is 256 random bits, not a
    password someone could guess.
    """
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    """One sign-in of a user on one client; its refresh tokens form one family."""

    id: str
    user_id: str
    create_time: datetime
    last_used_time: datetime
    expire_time: datetime
    user_agent: str
    client_address: str
    revoked_time: datetime | None = None

    @classmethod
    def open(
        cls, *, user_id: str, user_agent: str, client_address: str, now: datetime, idle: timedelta
    ) -> Session:
        """A new sign-in that lives until ``idle`` passes without a refresh."""
        return cls(
            id=new_id(),
            user_id=user_id,
            create_time=now,
            last_used_time=now,
            expire_time=now + idle,
            # Client-reported strings, cut to what the columns hold.
            user_agent=user_agent[:MAX_USER_AGENT_LENGTH],
            client_address=client_address[:MAX_CLIENT_ADDRESS_LENGTH],
        )

    def is_live(self, now: datetime) -> bool:
        return self.revoked_time is None and now < self.expire_time

    def used(self, now: datetime, idle: timedelta) -> Session:
        """The session after a refresh at ``now``: idle time starts again."""
        return replace(self, last_used_time=now, expire_time=now + idle)


class RefreshOutcome(Enum):
    """What presenting a refresh token leads to."""

    ROTATE = "rotate"  # spend it, issue the next one
    REJECT = "reject"  # unknown, or its session is over
    REVOKE_FAMILY = "revoke_family"  # a spent token again: it leaked; end the whole session


def judge_refresh(
    *, token_spent: bool, session: Session | None, owner: User | None, now: datetime
) -> RefreshOutcome:
    """The rotation rule: a token works once, only while its session and its account live."""
    if session is None or not session.is_live(now):
        return RefreshOutcome.REJECT
    if token_spent:
        return RefreshOutcome.REVOKE_FAMILY
    if owner is None or owner.is_deleted:
        return RefreshOutcome.REJECT
    return RefreshOutcome.ROTATE


def refresh_refused() -> Unauthenticated:
    # One message for every refusal: which of them happened is no business of a token thief.
    return Unauthenticated("refresh token is invalid, spent or its session has ended")


def login_refused() -> Unauthenticated:
    # The same answer for an unknown email, an erased account and a wrong password.
    return Unauthenticated("email or password is wrong")


@dataclass(frozen=True)
class ThrottlePolicy:
    """How many failed sign-ins a key (an account, a client address) may have per window."""

    max_failures: int
    window: timedelta


@dataclass(frozen=True)
class FailureCount:
    """Failed sign-ins of one key within its current window."""

    failures: int
    window_start: datetime

    def retry_after(self, policy: ThrottlePolicy, now: datetime) -> timedelta | None:
        """How long the key must wait before its next attempt; None when it may try now."""
        window_end = self.window_start + policy.window
        if now >= window_end or self.failures < policy.max_failures:
            return None
        return window_end - now

    def after_failure(self, policy: ThrottlePolicy, now: datetime) -> FailureCount:
        if now >= self.window_start + policy.window:
            return FailureCount(1, now)
        return FailureCount(self.failures + 1, self.window_start)


def refuse_while_throttled(
    policies: Mapping[str, ThrottlePolicy], counts: Mapping[str, FailureCount], now: datetime
) -> None:
    """ResourceExhausted while any key (account, client) has used up its failures."""
    waits = [
        wait
        for key, policy in policies.items()
        if key in counts and (wait := counts[key].retry_after(policy, now)) is not None
    ]
    if waits:
        # The longest wait: retrying after a shorter one would only be refused again.
        seconds = math.ceil(max(waits).total_seconds())
        raise ResourceExhausted(
            f"too many failed sign-ins; try again in {seconds} s",
            reason=Reason.LOGIN_THROTTLED,
            retry_after_s=seconds,
        )


def throttle_key(scope: str, value: str) -> str:
    # Hashed: the throttle table must not become a second copy of emails and addresses that
    # outlives account erasure.
    return hashlib.sha256(f"{scope}:{value}".encode()).hexdigest()
