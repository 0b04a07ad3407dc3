"""The identity of one running process: an instance id, new at every start."""

from __future__ import annotations

import socket
import uuid


def new_instance_id() -> str:
    """``<hostname>-<8 hex>``: the host (pod name on Kubernetes) for people, the suffix so a
    restarted process is a new member of the health stream, not its predecessor."""
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
