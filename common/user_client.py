"""What every service needs from user_svc: its public keys and a service identity token.

Both come over gRPC from user_svc at ``MC_USER_ADDRESS``; the channel is opened lazily so a
service starts (and serves public RPCs) before user_svc is up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf import json_format

from common.access import AUTHORIZATION_METADATA_KEY
from common.errors import Unavailable
from common.grpc_client import LazyStub
from common.request_context import outgoing_metadata
from common.settings import CommonSettings
from common.tokens import JwksCache
from microcommerce.user.v1 import user_service_pb2, user_service_pb2_grpc

# Renew a service token when less than this share of its lifetime is left.
_RENEW_AT_REMAINING = 0.25


class UserServiceClient:
    """A channel to user_svc for key discovery and service tokens."""

    def __init__(self, address: str, *, timeout_s: float = 5.0) -> None:
        self._address = address
        self._timeout_s = timeout_s
        self._stub: LazyStub[user_service_pb2_grpc.UserServiceAsyncStub] = LazyStub(
            address, user_service_pb2_grpc.UserServiceStub
        )

    async def fetch_jwks(self) -> Mapping[str, Any]:
        """The JWKS document, as a dict (the shape served at /.well-known/jwks.json)."""
        response = await self._stub().GetJwks(
            user_service_pb2.GetJwksRequest(), timeout=self._timeout_s
        )
        return json_format.MessageToDict(response, preserving_proto_field_name=True)

    async def issue_service_token(self, service: str, credential: str) -> tuple[str, int]:
        """A service identity token and its lifetime in seconds."""
        pair = await self._stub().IssueServiceToken(
            user_service_pb2.IssueServiceTokenRequest(service=service, credential=credential),
            timeout=self._timeout_s,
        )
        return pair.access_token, pair.expires_in

    async def close(self) -> None:
        await self._stub.close()


def jwks_cache(client: UserServiceClient) -> JwksCache:
    """A verifier key source backed by user_svc's JWKS."""
    return JwksCache(client.fetch_jwks)


class ServiceTokens:
    """This service's identity token, fetched when first needed and renewed before it expires."""

    def __init__(
        self, client: UserServiceClient, *, service: str, settings: CommonSettings
    ) -> None:
        self._client = client
        self._service = service
        self._credential = settings.service_credential
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        if self._token is not None and time.monotonic() < self._renew_at:
            return self._token
        async with self._lock:
            if self._token is not None and time.monotonic() < self._renew_at:
                return self._token
            if self._credential is None or not self._credential.get_secret_value():
                raise Unavailable("MC_SERVICE_CREDENTIAL is not set: no service identity")
            try:
                token, expires_in = await self._client.issue_service_token(
                    self._service, self._credential.get_secret_value()
                )
            except grpc.aio.AioRpcError as error:
                raise Unavailable(
                    f"user service cannot issue a service token: {error.code().name}"
                ) from error
            lifetime = timedelta(seconds=max(expires_in, 1)).total_seconds()
            self._token = token
            self._renew_at = time.monotonic() + lifetime * (1 - _RENEW_AT_REMAINING)
            return token

    async def metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata for an outgoing call: the request id and this service's bearer token."""
        return (
            *outgoing_metadata(),
            (AUTHORIZATION_METADATA_KEY, f"Bearer {await self.token()}"),
        )
