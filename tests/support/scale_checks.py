"""What replicas must share, checked replica by replica: signing keys, page-token keys, budgets.

Calls go straight to one replica's gRPC port where the question is "does *this* replica
accept what *that* one made", since a gateway's round robin would hide which replica answered.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import grpc

from microcommerce.payment.v1 import order_service_pb2, order_service_pb2_grpc
from microcommerce.product.v1 import product_service_pb2, product_service_pb2_grpc
from microcommerce.user.v1 import user_service_pb2, user_service_pb2_grpc
from tests.support.scale_stack import ADMIN_EMAIL, Member, ScaleStack

RPC_TIMEOUT_S = 10.0


@asynccontextmanager
async def channel_to(member: Member) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to exactly this replica."""
    channel = grpc.aio.insecure_channel(member.address)
    try:
        yield channel
    finally:
        await channel.close(None)


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def admin_token_from(replica: Member, password: str) -> str:
    """An access token signed by this user_svc replica."""
    async with channel_to(replica) as channel:
        pair = await user_service_pb2_grpc.UserServiceStub(channel).IssueToken(
            user_service_pb2.IssueTokenRequest(email=ADMIN_EMAIL, password=password),
            timeout=RPC_TIMEOUT_S,
        )
    return pair.access_token


async def grpc_verdict(member: Member, token: str) -> str:
    """How one replica answers an authenticated call made with ``token``: a status name.

    Each call needs a verified token (and, for product_svc, the admin role) before the
    servicer runs: user_svc ``GetMe`` and payment_svc ``ListOrders`` answer OK, product_svc
    ``AdjustStock`` of a product that does not exist NOT_FOUND; a token the replica cannot
    verify is UNAUTHENTICATED whatever the call.
    """
    metadata = _bearer(token)
    async with channel_to(member) as channel:
        try:
            if member.role == "user":
                await user_service_pb2_grpc.UserServiceStub(channel).GetMe(
                    user_service_pb2.GetMeRequest(), metadata=metadata, timeout=RPC_TIMEOUT_S
                )
            elif member.role == "payment":
                await order_service_pb2_grpc.OrderServiceStub(channel).ListOrders(
                    order_service_pb2.ListOrdersRequest(page_size=1),
                    metadata=metadata,
                    timeout=RPC_TIMEOUT_S,
                )
            else:
                await product_service_pb2_grpc.ProductServiceStub(channel).AdjustStock(
                    product_service_pb2.AdjustStockRequest(
                        id=str(uuid.uuid4()), delta=1, reason="token probe"
                    ),
                    metadata=metadata,
                    timeout=RPC_TIMEOUT_S,
                )
        except grpc.aio.AioRpcError as error:
            return error.code().name
    return grpc.StatusCode.OK.name


EXPECTED_VERDICT = {"user": "OK", "payment": "OK", "product": "NOT_FOUND"}


async def rest_verdicts(stack: ScaleStack, token: str) -> dict[str, int]:
    """``gateway-N`` → status of an admin route (``GET /api/v1/users``) there."""
    verdicts: dict[str, int] = {}
    for gateway in stack.gateways:
        async with stack.http.get(
            f"{gateway.url}/api/v1/users?page_size=1",
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            verdicts[gateway.name] = response.status
    return verdicts


@dataclass(frozen=True)
class TokenMatrix:
    """Where each user_svc replica's token was accepted: signer → verifier → verdict."""

    verdicts: dict[str, dict[str, str]]

    def refusals(self) -> list[str]:
        """Every verifier that answered otherwise than a verified token gets there."""
        wrong: list[str] = []
        for signer, row in self.verdicts.items():
            for verifier, verdict in row.items():
                role = verifier.split("-")[0]
                if verdict != EXPECTED_VERDICT.get(role, "200"):
                    wrong.append(f"{signer}'s token at {verifier}: {verdict}")
        return wrong


async def token_matrix(stack: ScaleStack, tokens: dict[str, str]) -> TokenMatrix:
    """Each signer's token at both gateways and at every replica of every service."""
    verdicts: dict[str, dict[str, str]] = {}
    for signer, token in tokens.items():
        row = {name: str(status) for name, status in (await rest_verdicts(stack, token)).items()}
        for member in stack.members.values():
            if member.role != "gateway":
                row[member.name] = await grpc_verdict(member, token)
        verdicts[signer] = row
    return TokenMatrix(verdicts)


async def sign_at_every_user_replica(stack: ScaleStack) -> dict[str, str]:
    return {
        replica.name: await admin_token_from(replica, stack.admin_password)
        for replica in stack.replicas("user")
    }


async def list_page(
    member: Member, category_id: str, page_size: int, page_token: str = ""
) -> tuple[list[str], str]:
    """One page of a category's products from exactly this product_svc replica."""
    async with channel_to(member) as channel:
        response = await product_service_pb2_grpc.ProductServiceStub(channel).ListProducts(
            product_service_pb2.ListProductsRequest(
                category_id=category_id, page_size=page_size, page_token=page_token
            ),
            timeout=RPC_TIMEOUT_S,
        )
    return [p.id for p in response.products], response.next_page_token


async def walk_alternating(
    replicas: Sequence[Member], category_id: str, page_size: int, first: int = 0
) -> list[str]:
    """Every product of a category, each page asked of the other replica than the last."""
    ids, token = await list_page(replicas[first], category_id, page_size)
    turn = first + 1
    while token:
        page, token = await list_page(replicas[turn % len(replicas)], category_id, page_size, token)
        ids += page
        turn += 1
    return ids


async def spend_shared_budget(stack: ScaleStack) -> tuple[list[int], list[int]]:
    """The run's small budget spent at gateway-0, then asked for at gateway-1 (statuses)."""

    async def status_at(gateway: Member) -> int:
        try:
            async with stack.http.get(f"{gateway.url}/api/v1/categories") as response:
                return response.status
        except aiohttp.ClientError:
            return 0

    first, second = stack.gateways
    spent = [await status_at(first) for _ in range(stack.rate_limit_burst)]
    refused = [await status_at(second) for _ in range(2)]
    return spent, refused
