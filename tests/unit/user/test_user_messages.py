"""The user-events messages: keyed by the user, typed as the contract says, no personal data."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from google.protobuf.message import Message

from common.proto_json import message_to_json
from user_svc import messages
from user_svc.domain import User

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
ADA = User(
    id="u-1",
    email="ada@example.com",
    name="Ada Lovelace",
    roles=frozenset({"customer"}),
    create_time=NOW,
    password_hash="$argon2id$...",
)


def test_every_user_event_goes_to_user_events_keyed_by_the_user_id() -> None:
    promoted = replace(ADA, roles=frozenset({"customer", "admin"}))
    events = [
        messages.user_registered(ADA),
        messages.user_roles_changed(ADA, promoted, changed_by="admin-1"),
        messages.user_deleted(ADA),
    ]

    assert {(event.topic, event.subject) for event in events} == {("user-events", "u-1")}
    assert [event.type for event in events] == [
        "microcommerce.user.registered",
        "microcommerce.user.roles_changed",
        "microcommerce.user.deleted",
    ]


def test_a_role_change_carries_both_role_sets_sorted_and_who_made_it() -> None:
    promoted = replace(ADA, roles=frozenset({"customer", "admin"}))

    event = messages.user_roles_changed(ADA, promoted, changed_by="admin-1")

    assert isinstance(event.data, Message)
    assert message_to_json(event.data) == {
        "user_id": "u-1",
        "roles": ["admin", "customer"],
        "previous_roles": ["customer"],
        "changed_by": "admin-1",
    }


def test_no_event_carries_the_email_or_the_name() -> None:
    events = [messages.user_registered(ADA), messages.user_deleted(ADA)]

    payloads = [
        str(message_to_json(event.data)) for event in events if isinstance(event.data, Message)
    ]

    assert len(payloads) == 2
    assert not any("ada@example.com" in text or "Lovelace" in text for text in payloads)
