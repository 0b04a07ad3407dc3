"""The request id of the call being served, carried in a ContextVar across awaits."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

# gRPC metadata keys are lower case; the gateway maps the X-Request-Id header onto this key.
REQUEST_ID_METADATA_KEY = "x-request-id"
# The REST client's address and user agent as the gateway saw them (user_svc throttles login
# failures per client address and records both on sessions).
CLIENT_ADDRESS_METADATA_KEY = "x-client-address"
CLIENT_USER_AGENT_METADATA_KEY = "x-client-user-agent"

# Each RPC runs in its own asyncio task, which copies the context at creation: a value set while
# serving one call is invisible to every other call.
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# A caller-supplied id ends up in every log line: accept only short, plain tokens so a client
# cannot inject arbitrary text (or megabytes) into the logs; anything else gets a fresh id.
_ACCEPTABLE_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def new_request_id() -> str:
    """A fresh random request id."""
    return uuid.uuid4().hex


def accept_request_id(candidate: str | None) -> str:
    """The caller's id when it is a plain token of at most 128 characters, else a fresh one."""
    if candidate is not None and _ACCEPTABLE_ID.fullmatch(candidate):
        return candidate
    return new_request_id()


def current_request_id() -> str | None:
    """The id of the request being served, or None outside a request."""
    return request_id_var.get()


def outgoing_metadata() -> tuple[tuple[str, str], ...]:
    """Metadata that carries the current request id on to a downstream gRPC call."""
    request_id = request_id_var.get()
    return () if request_id is None else ((REQUEST_ID_METADATA_KEY, request_id),)
