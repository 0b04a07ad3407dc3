"""The user service's gRPC servicers: proto in, use case, proto out."""

from __future__ import annotations

from microcommerce.user.v1 import user_service_pb2_grpc
from user_svc.service import Accounts


class UserApi(user_service_pb2_grpc.UserServiceServicer):
    """Accounts, tokens, sessions, profile, preferences and roles.

    RPCs not overridden here answer UNIMPLEMENTED (501 through the gateway) until their issue
    lands: the generated base raises NotImplementedError, which the boundary interceptor maps.
    """

    def __init__(self, use_cases: Accounts) -> None:
        self._use_cases = use_cases
