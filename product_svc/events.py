"""product_svc's Faust agents: it answers the health stream; event consumers join later."""

from __future__ import annotations

import faust

from common.health_stream import InstanceIdentity, install_pong_responder
from common.service_runner import Wiring


def install_agents(app: faust.App, identity: InstanceIdentity, wiring: Wiring) -> None:
    install_pong_responder(app, identity, wiring.checks)
