"""Domain objects as the event messages of user/v1/events.proto, ready for the outbox.

Every event is keyed by the user id, so one account's events share a partition and stay in
order. Events outlive erasure in Kafka, so none carries an email, a name or other personal data.
"""

from __future__ import annotations

from google.protobuf.message import Message

from common.outbox import OutgoingEvent
from common.topics import Topic
from microcommerce.user.v1 import events_pb2
from user_svc.domain import User

USER_EVENTS = Topic.USER_EVENTS


def _user_event(kind: str, user: User, data: Message) -> OutgoingEvent:
    return OutgoingEvent(USER_EVENTS, f"microcommerce.user.{kind}", user.id, data)


def user_registered(user: User) -> OutgoingEvent:
    data = events_pb2.UserRegistered(user_id=user.id, roles=sorted(user.roles))
    return _user_event("registered", user, data)


def user_roles_changed(before: User, after: User, *, changed_by: str) -> OutgoingEvent:
    data = events_pb2.UserRolesChanged(
        user_id=after.id,
        roles=sorted(after.roles),
        previous_roles=sorted(before.roles),
        changed_by=changed_by,
    )
    return _user_event("roles_changed", after, data)


def user_deleted(user: User) -> OutgoingEvent:
    return _user_event("deleted", user, events_pb2.UserDeleted(user_id=user.id))
