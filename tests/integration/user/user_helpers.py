"""Helpers for the user service tests: sign-ups, sign-ins and reading error details."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy import select

from common.db import Database
from common.outbox import Outbox
from microcommerce.user.v1 import user_service_pb2 as pb
from microcommerce.user.v1 import user_service_pb2_grpc

PASSWORD = "correct horse battery"


def unique_email(prefix: str = "shopper") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


def auth(token: str, **extra: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"), *extra.items())


def client_metadata(address: str, user_agent: str = "pytest") -> tuple[tuple[str, str], ...]:
    return (("x-client-address", address), ("x-client-user-agent", user_agent))


async def sign_up(
    stub: user_service_pb2_grpc.UserServiceAsyncStub,
    email: str | None = None,
    password: str = PASSWORD,
    name: str = "Ada Lovelace",
) -> pb.User:
    return await stub.CreateUser(
        pb.CreateUserRequest(email=email or unique_email(), password=password, name=name)
    )


async def sign_in(
    stub: user_service_pb2_grpc.UserServiceAsyncStub,
    email: str,
    password: str = PASSWORD,
    *,
    address: str = "10.0.0.1",
) -> pb.TokenPair:
    return await stub.IssueToken(
        pb.IssueTokenRequest(email=email, password=password),
        metadata=client_metadata(address),
    )


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def _status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    # A grpc.aio.Metadata at run time; grpc-stubs declare the synchronous API's tuple.
    trailing: Any = error.trailing_metadata()
    return status_pb2.Status.FromString(trailing["grpc-status-details-bin"])


def violated_field(error: grpc.aio.AioRpcError) -> str:
    """The field a BadRequest detail of the error names."""
    for detail in _status(error).details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            return str(bad_request.field_violations[0].field)
    raise AssertionError(f"no BadRequest detail in {error}")


def retry_delay_s(error: grpc.aio.AioRpcError) -> float:
    for detail in _status(error).details:
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(retry):
            return float(retry.retry_delay.ToTimedelta().total_seconds())
    raise AssertionError(f"no RetryInfo detail in {error}")


async def user_events(database: Database, outbox: Outbox, user_id: str) -> list[dict[str, Any]]:
    """The CloudEvents waiting in the outbox for one user, oldest first."""
    table = outbox.table
    query = select(table.c.payload).where(table.c.key == user_id).order_by(table.c.seq)
    async with database.session() as session:
        rows = (await session.execute(query)).scalars().all()
    return [json.loads(payload) for payload in rows]
