"""Sign-in, refresh-token rotation, sessions, throttling and service tokens, on both databases."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from common.tokens import ROLE_SERVICE, TokenVerifier
from microcommerce.user.v1 import user_service_pb2 as pb
from tests.integration.user.conftest import (
    SERVICE_CREDENTIAL,
    UserServer,
    running_user_server,
    user_settings,
)
from tests.integration.user.user_helpers import (
    PASSWORD,
    auth,
    client_metadata,
    retry_delay_s,
    rpc_error,
    sign_in,
    sign_up,
    unique_email,
    violated_field,
)
from user_svc.passwords import Passwords


async def refresh(server: UserServer, token: str) -> pb.TokenPair:
    return await server.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=token))


async def test_a_refresh_token_buys_a_new_pair_once(user_server: UserServer) -> None:
    email = unique_email()
    await sign_up(user_server.stub, email=email)
    first = await sign_in(user_server.stub, email)

    second = await refresh(user_server, first.refresh_token)

    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    assert (await refresh(user_server, second.refresh_token)).access_token


async def test_reusing_a_spent_refresh_token_revokes_the_whole_session(
    user_server: UserServer,
) -> None:
    email = unique_email()
    await sign_up(user_server.stub, email=email)
    first = await sign_in(user_server.stub, email)
    second = await refresh(user_server, first.refresh_token)

    reuse = await rpc_error(refresh(user_server, first.refresh_token))
    # The thief's replay also cut off the legitimate holder of the newest token.
    newest = await rpc_error(refresh(user_server, second.refresh_token))

    assert reuse.code() == grpc.StatusCode.UNAUTHENTICATED
    assert newest.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reuse.details() == newest.details()


async def test_concurrent_refreshes_with_one_token_leave_at_most_one_winner(
    user_server: UserServer,
) -> None:
    email = unique_email()
    await sign_up(user_server.stub, email=email)
    pair = await sign_in(user_server.stub, email)

    results = await asyncio.gather(
        *(refresh(user_server, pair.refresh_token) for _ in range(4)), return_exceptions=True
    )

    winners = [r for r in results if isinstance(r, pb.TokenPair)]
    assert len(winners) <= 1
    assert all(
        r.code() == grpc.StatusCode.UNAUTHENTICATED
        for r in results
        if isinstance(r, grpc.aio.AioRpcError)
    )


async def test_an_unknown_refresh_token_is_refused(user_server: UserServer) -> None:
    error = await rpc_error(refresh(user_server, "made-up"))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_logout_ends_the_session(user_server: UserServer) -> None:
    email = unique_email()
    await sign_up(user_server.stub, email=email)
    pair = await sign_in(user_server.stub, email)

    await user_server.stub.Logout(
        pb.LogoutRequest(refresh_token=pair.refresh_token), metadata=auth(pair.access_token)
    )

    error = await rpc_error(refresh(user_server, pair.refresh_token))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_logout_with_someone_elses_refresh_token_is_not_found(
    user_server: UserServer,
) -> None:
    mine, theirs = unique_email(), unique_email()
    await sign_up(user_server.stub, email=mine)
    await sign_up(user_server.stub, email=theirs)
    my_pair = await sign_in(user_server.stub, mine)
    their_pair = await sign_in(user_server.stub, theirs)

    error = await rpc_error(
        user_server.stub.Logout(
            pb.LogoutRequest(refresh_token=their_pair.refresh_token),
            metadata=auth(my_pair.access_token),
        )
    )

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert (await refresh(user_server, their_pair.refresh_token)).access_token


async def test_a_user_sees_their_sessions_and_revokes_one(user_server: UserServer) -> None:
    email = unique_email()
    await sign_up(user_server.stub, email=email)
    laptop = await user_server.stub.IssueToken(
        pb.IssueTokenRequest(email=email, password=PASSWORD),
        metadata=client_metadata("192.0.2.7", "Firefox/130"),
    )
    phone = await user_server.stub.IssueToken(
        pb.IssueTokenRequest(email=email, password=PASSWORD),
        metadata=client_metadata("198.51.100.9", "ShopApp/2.1"),
    )

    listed = await user_server.stub.ListSessions(
        pb.ListSessionsRequest(), metadata=auth(laptop.access_token)
    )
    by_agent = {session.user_agent: session for session in listed.sessions}
    await user_server.stub.RevokeSession(
        pb.RevokeSessionRequest(id=by_agent["ShopApp/2.1"].id), metadata=auth(laptop.access_token)
    )
    after = await user_server.stub.ListSessions(
        pb.ListSessionsRequest(), metadata=auth(laptop.access_token)
    )

    assert set(by_agent) == {"Firefox/130", "ShopApp/2.1"}
    assert by_agent["Firefox/130"].client_address == "192.0.2.7"
    assert by_agent["Firefox/130"].current
    assert not by_agent["ShopApp/2.1"].current
    assert [s.user_agent for s in after.sessions] == ["Firefox/130"]
    error = await rpc_error(refresh(user_server, phone.refresh_token))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_revoking_someone_elses_session_is_not_found(user_server: UserServer) -> None:
    mine, theirs = unique_email(), unique_email()
    await sign_up(user_server.stub, email=mine)
    await sign_up(user_server.stub, email=theirs)
    my_token = (await sign_in(user_server.stub, mine)).access_token
    their_token = (await sign_in(user_server.stub, theirs)).access_token
    their_sessions = await user_server.stub.ListSessions(
        pb.ListSessionsRequest(), metadata=auth(their_token)
    )

    error = await rpc_error(
        user_server.stub.RevokeSession(
            pb.RevokeSessionRequest(id=their_sessions.sessions[0].id), metadata=auth(my_token)
        )
    )

    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_an_unknown_email_fails_exactly_like_a_wrong_password(
    user_server: UserServer,
) -> None:
    email = unique_email()
    await sign_up(user_server.stub, email=email)

    wrong = await rpc_error(sign_in(user_server.stub, email, "not the password", address="a"))
    unknown = await rpc_error(sign_in(user_server.stub, unique_email(), PASSWORD, address="b"))

    assert (wrong.code(), wrong.details()) == (unknown.code(), unknown.details())
    assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_repeated_failures_for_one_account_are_throttled_even_with_the_right_password(
    user_server: UserServer,
) -> None:
    email = unique_email()
    await sign_up(user_server.stub, email=email)
    for attempt in range(3):  # the test server allows 3 per account
        await rpc_error(
            sign_in(user_server.stub, email, "wrong password", address=f"10.1.0.{attempt}")
        )

    error = await rpc_error(sign_in(user_server.stub, email, address="10.9.9.9"))

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert 0 < retry_delay_s(error) <= 15 * 60


async def test_repeated_failures_from_one_client_are_throttled_across_accounts(
    user_server: UserServer,
) -> None:
    address = f"203.0.113.{time.monotonic_ns() % 250}"
    email = unique_email()
    await sign_up(user_server.stub, email=email)
    for _ in range(5):  # the test server allows 5 per client address
        await rpc_error(sign_in(user_server.stub, unique_email(), "guess", address=address))

    blocked = await rpc_error(sign_in(user_server.stub, email, address=address))
    elsewhere = await sign_in(user_server.stub, email, address="198.18.0.1")

    assert blocked.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert elsewhere.access_token


async def test_a_successful_sign_in_clears_the_accounts_failures(user_server: UserServer) -> None:
    email = unique_email()
    await sign_up(user_server.stub, email=email)
    for round_ in range(2):
        for attempt in range(2):
            await rpc_error(
                sign_in(user_server.stub, email, "wrong", address=f"10.2.{round_}.{attempt}")
            )
        assert (await sign_in(user_server.stub, email, address="10.3.0.1")).access_token


async def test_a_password_is_rehashed_when_the_argon2_parameters_change(
    user_server: UserServer,
) -> None:
    email = unique_email()
    user = await sign_up(user_server.stub, email=email)
    async with user_server.store.unit_of_work() as work:
        before = await work.user(user.id)
    stronger = Passwords(time_cost=2, memory_cost_kib=2048, parallelism=1)
    user_server.accounts._passwords = stronger  # the operator raised the cost

    await sign_in(user_server.stub, email)

    async with user_server.store.unit_of_work() as work:
        after = await work.user(user.id)
    assert before is not None
    assert after is not None
    assert after.password_hash is not None
    assert after.password_hash != before.password_hash
    assert not stronger.needs_rehash(after.password_hash)
    assert (await sign_in(user_server.stub, email)).access_token


async def test_a_service_trades_the_shared_credential_for_a_service_token(
    user_server: UserServer,
) -> None:
    pair = await user_server.stub.IssueServiceToken(
        pb.IssueServiceTokenRequest(service="payment", credential=SERVICE_CREDENTIAL)
    )

    principal = await TokenVerifier(user_server.ring).verify(pair.access_token)

    assert principal.subject == "service:payment"
    assert principal.roles == {ROLE_SERVICE}
    assert principal.is_service
    assert pair.expires_in == 15 * 60


@pytest.mark.parametrize(
    ("service", "credential", "code"),
    [
        ("payment", "wrong", grpc.StatusCode.UNAUTHENTICATED),
        ("billing", SERVICE_CREDENTIAL, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_a_wrong_service_credential_or_name_gets_no_token(
    sqlite_user_server: UserServer, service: str, credential: str, code: grpc.StatusCode
) -> None:
    error = await rpc_error(
        sqlite_user_server.stub.IssueServiceToken(
            pb.IssueServiceTokenRequest(service=service, credential=credential)
        )
    )

    assert error.code() == code


async def test_the_jwks_publishes_the_signing_key(sqlite_user_server: UserServer) -> None:
    jwks = await sqlite_user_server.stub.GetJwks(pb.GetJwksRequest())

    assert [(k.kty, k.crv, k.alg, k.use) for k in jwks.keys] == [("EC", "P-256", "ES256", "sig")]
    assert jwks.keys[0].kid == sqlite_user_server.ring.signer().kid


async def test_an_empty_email_is_invalid_not_unauthenticated(
    sqlite_user_server: UserServer,
) -> None:
    error = await rpc_error(sign_in(sqlite_user_server.stub, "  "))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(error) == "email"


async def test_ended_sessions_are_pruned_and_live_ones_kept(user_server: UserServer) -> None:
    email = unique_email()
    await sign_up(user_server.stub, email=email)
    ended = await sign_in(user_server.stub, email)
    live = await sign_in(user_server.stub, email)
    await user_server.stub.Logout(
        pb.LogoutRequest(refresh_token=ended.refresh_token), metadata=auth(ended.access_token)
    )

    pruned = await user_server.accounts.prune_sessions(retention=timedelta(0))

    assert pruned >= 1
    error = await rpc_error(refresh(user_server, ended.refresh_token))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await refresh(user_server, live.refresh_token)).access_token


async def test_no_service_token_is_issued_while_no_credential_is_configured(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'user.db'}"
    settings = user_settings(tmp_path, url, service_credential=None)
    async with running_user_server(settings) as server:
        error = await rpc_error(
            server.stub.IssueServiceToken(
                pb.IssueServiceTokenRequest(service="payment", credential="")
            )
        )

    assert error.code() == grpc.StatusCode.UNAVAILABLE
