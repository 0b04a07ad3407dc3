"""Wiring and start-up of the user service: settings, layers, gRPC server, health stream."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import Field

from common.grpc_server import Service
from common.service_runner import (
    Runtime,
    ServiceSettings,
    ServiceSpec,
    Wiring,
    run_service,
)
from microcommerce.user.v1 import user_service_pb2, user_service_pb2_grpc
from user_svc import events, grpc_api
from user_svc.service import Accounts
from user_svc.store import AccountStore


class UserSettings(ServiceSettings):
    port: int = Field(8083, ge=0, le=65535, validation_alias="MC_USER_PORT")


def wire(runtime: Runtime) -> Wiring:
    # The servicers are abstract to mypy until every RPC is written; at run time the generated
    # base answers the missing ones UNIMPLEMENTED, which is the contract until their issue lands.
    use_cases = Accounts(AccountStore(runtime.database))
    return Wiring(
        services=[
            Service(
                user_service_pb2.DESCRIPTOR.services_by_name["UserService"].full_name,
                grpc_api.UserApi(use_cases),  # type: ignore[abstract]
                user_service_pb2_grpc.add_UserServiceServicer_to_server,
            ),
        ],
        checks={"database": use_cases.database_reachable},
    )


SPEC = ServiceSpec(
    name="user",
    migrations=Path(__file__).parent / "migrations",
    wire=wire,
    install_agents=events.install_agents,
)


def main() -> None:
    asyncio.run(run_service(SPEC, UserSettings()))
