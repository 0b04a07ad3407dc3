"""Bearer tokens at the door: protected routes refuse a missing or bad token before any call.

Which routes are protected comes from each RPC's ``access`` option (``Route.access``). The
services check the same token again (``common.access``), so the gateway's check is an early,
cheap refusal, not the only one.
"""

from __future__ import annotations

import grpc
from aiohttp import web

from common.errors import Unauthenticated
from common.tokens import Principal, TokenVerifier, bearer_token
from gateway.problems import ProblemError
from gateway.routes import Route
from microcommerce.common.v1 import annotations_pb2 as mc_annotations

# The verified caller, for rate limits keyed by user.
PRINCIPAL_KEY = web.RequestKey("mc_principal", Principal)

_PROTECTED = frozenset((mc_annotations.ACCESS_USER, mc_annotations.ACCESS_ADMIN))


def _unauthenticated(detail: str, error: str | None) -> ProblemError:
    challenge = "Bearer" if error is None else f'Bearer error="{error}"'
    return ProblemError(
        grpc.StatusCode.UNAUTHENTICATED, detail, headers={"WWW-Authenticate": challenge}
    )


class Authenticator:
    """Verifies the caller of a route against what the route's RPC admits."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    async def admit(self, request: web.Request, route: Route) -> Principal | None:
        """The caller (None when anonymous); raises a 401 or 403 problem when refused."""
        token = bearer_token(request.headers.get("Authorization"))
        if route.access not in _PROTECTED:
            principal = await self._optional(token)
        else:
            if token is None:
                raise _unauthenticated("This route needs an access token (Bearer).", None)
            try:
                principal = await self._verifier.verify(token)
            except Unauthenticated as refusal:
                raise _unauthenticated(refusal.message, "invalid_token") from None
            if route.access == mc_annotations.ACCESS_ADMIN and not principal.is_admin:
                raise ProblemError(
                    grpc.StatusCode.PERMISSION_DENIED, "This route needs the admin role."
                )
        if principal is not None:
            request[PRINCIPAL_KEY] = principal
        return principal

    async def _optional(self, token: str | None) -> Principal | None:
        if token is None:
            return None
        try:
            return await self._verifier.verify(token)
        except Unauthenticated:
            return None  # a public route serves a bad token's bearer anonymously
