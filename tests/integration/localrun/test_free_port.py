"""free_port: the ports a test stack asks for are distinct and bindable when handed out."""

from __future__ import annotations

import random
import socket

import pytest

from localrun import broker
from localrun.broker import free_port


def test_ports_asked_for_before_any_is_bound_are_all_different() -> None:
    # A stack picks its four ports before its servers bind them; one CI run saw the OS hand
    # out the same port twice, and payment_svc never started.
    ports = [free_port() for _ in range(500)]

    assert len(set(ports)) == len(ports)


def test_a_port_handed_out_can_be_listened_on() -> None:
    port = free_port()

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()


def test_a_port_someone_listens_on_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        # The broker module draws with the random module's choice: patched there.
        choose = random.choice
        offered = iter([busy])
        monkeypatch.setattr(random, "choice", lambda ports: next(offered, None) or choose(ports))

        port = broker.free_port()

    assert port != busy
