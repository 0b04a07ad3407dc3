"""ListUsers and ListSessions page as AIP-158 says: keyset tokens bound to the filters."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import grpc

from common.clock import now
from microcommerce.user.v1 import user_service_pb2 as pb
from tests.integration.user.conftest import UserServer
from tests.integration.user.user_helpers import (
    PASSWORD,
    auth,
    rpc_error,
    sign_in,
    sign_up,
    unique_email,
    violated_field,
)
from user_svc.domain import Session, User, new_id


async def admin_token(server: UserServer) -> str:
    email = unique_email("admin")
    await server.accounts.bootstrap_admin(email, PASSWORD)
    return (await sign_in(server.stub, email)).access_token


async def add_users(
    server: UserServer, count: int, *, create_time: datetime | None = None
) -> list[str]:
    """Accounts stored directly (no password hashing), all created at ``create_time`` if given."""
    ids = []
    async with server.store.unit_of_work() as work:
        for _ in range(count):
            user = User(
                id=new_id(),
                email=unique_email("listed"),
                name="Listed",
                roles=frozenset({"customer"}),
                create_time=create_time or now(),
                password_hash=None,
            )
            await work.add_user(user)
            ids.append(user.id)
    return ids


async def add_sessions(
    server: UserServer, user_id: str, count: int, *, last_used: datetime | None = None
) -> list[str]:
    """Live sessions of ``user_id`` stored directly, all last used at ``last_used`` if given."""
    ids = []
    async with server.store.unit_of_work() as work:
        for _ in range(count):
            moment = last_used or now()
            session = Session(
                id=new_id(),
                user_id=user_id,
                create_time=moment,
                last_used_time=moment,
                expire_time=moment + timedelta(days=1),
                user_agent="pytest",
                client_address="192.0.2.1",
            )
            await work.add_session(session)
            ids.append(session.id)
    return ids


async def walk(
    list_page: Callable[[str], Awaitable[tuple[list[str], str]]],
    between_pages: Callable[[], Awaitable[object]],
) -> list[str]:
    """Every id of every page in order, calling ``between_pages`` after each page."""
    seen: list[str] = []
    token = ""
    while True:
        ids, token = await list_page(token)
        seen.extend(ids)
        if not token:
            return seen
        await between_pages()


# ListUsers


async def test_paging_through_users_returns_each_once_while_accounts_are_created(
    user_server: UserServer,
) -> None:
    token = await admin_token(user_server)
    # Five accounts share one create_time: the id must break the tie across page seams.
    existing = await add_users(user_server, 5, create_time=now() - timedelta(seconds=1))
    existing += await add_users(user_server, 4)

    async def list_page(page_token: str) -> tuple[list[str], str]:
        page = await user_server.stub.ListUsers(
            pb.ListUsersRequest(page_size=2, page_token=page_token), metadata=auth(token)
        )
        return [user.id for user in page.users], page.next_page_token

    seen = await walk(list_page, lambda: sign_up(user_server.stub))

    assert len(seen) == len(set(seen))
    assert set(existing) <= set(seen)


async def test_a_users_page_token_replayed_with_another_email_is_refused(
    user_server: UserServer,
) -> None:
    token = await admin_token(user_server)
    await add_users(user_server, 3)
    first = await user_server.stub.ListUsers(pb.ListUsersRequest(page_size=1), metadata=auth(token))

    error = await rpc_error(
        user_server.stub.ListUsers(
            pb.ListUsersRequest(
                page_size=1, page_token=first.next_page_token, email=unique_email()
            ),
            metadata=auth(token),
        )
    )

    assert first.next_page_token
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(error) == "page_token"


async def test_a_users_page_size_above_100_is_coerced_to_100(user_server: UserServer) -> None:
    token = await admin_token(user_server)
    await add_users(user_server, 101)

    page = await user_server.stub.ListUsers(
        pb.ListUsersRequest(page_size=1000), metadata=auth(token)
    )

    assert len(page.users) == 100
    assert page.next_page_token


async def test_a_negative_users_page_size_is_refused(sqlite_user_server: UserServer) -> None:
    token = await admin_token(sqlite_user_server)

    error = await rpc_error(
        sqlite_user_server.stub.ListUsers(pb.ListUsersRequest(page_size=-1), metadata=auth(token))
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(error) == "page_size"


async def test_a_forged_users_page_token_is_refused(sqlite_user_server: UserServer) -> None:
    token = await admin_token(sqlite_user_server)

    error = await rpc_error(
        sqlite_user_server.stub.ListUsers(
            # What the old offset tokens looked like: base64 of "o:20".
            pb.ListUsersRequest(page_token="bzoyMA=="),
            metadata=auth(token),
        )
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(error) == "page_token"


# ListSessions


async def signed_in_user(server: UserServer) -> tuple[str, str]:
    """A new account's id and an access token of one of its sessions."""
    email = unique_email()
    user = await sign_up(server.stub, email=email)
    return user.id, (await sign_in(server.stub, email)).access_token


async def test_paging_through_sessions_returns_each_once_while_new_sign_ins_happen(
    user_server: UserServer,
) -> None:
    user_id, token = await signed_in_user(user_server)
    email = (await user_server.stub.GetMe(pb.GetMeRequest(), metadata=auth(token))).email
    existing = await add_sessions(user_server, user_id, 5, last_used=now() - timedelta(seconds=1))
    existing += await add_sessions(user_server, user_id, 2)

    async def list_page(page_token: str) -> tuple[list[str], str]:
        page = await user_server.stub.ListSessions(
            pb.ListSessionsRequest(page_size=2, page_token=page_token), metadata=auth(token)
        )
        return [session.id for session in page.sessions], page.next_page_token

    seen = await walk(list_page, lambda: sign_in(user_server.stub, email))

    assert len(seen) == len(set(seen))
    assert set(existing) <= set(seen)


async def test_a_sessions_page_token_of_another_user_is_refused(user_server: UserServer) -> None:
    mine_id, mine = await signed_in_user(user_server)
    _, theirs = await signed_in_user(user_server)
    await add_sessions(user_server, mine_id, 2)
    first = await user_server.stub.ListSessions(
        pb.ListSessionsRequest(page_size=1), metadata=auth(mine)
    )

    error = await rpc_error(
        user_server.stub.ListSessions(
            pb.ListSessionsRequest(page_token=first.next_page_token), metadata=auth(theirs)
        )
    )

    assert first.next_page_token
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(error) == "page_token"


async def test_a_sessions_page_size_above_100_is_coerced_to_100(user_server: UserServer) -> None:
    user_id, token = await signed_in_user(user_server)
    await add_sessions(user_server, user_id, 100)

    page = await user_server.stub.ListSessions(
        pb.ListSessionsRequest(page_size=1000), metadata=auth(token)
    )

    assert len(page.sessions) == 100
    assert page.next_page_token


async def test_a_negative_sessions_page_size_is_refused(sqlite_user_server: UserServer) -> None:
    _, token = await signed_in_user(sqlite_user_server)

    error = await rpc_error(
        sqlite_user_server.stub.ListSessions(
            pb.ListSessionsRequest(page_size=-1), metadata=auth(token)
        )
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(error) == "page_size"
