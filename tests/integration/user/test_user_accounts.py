"""Accounts through a real user_svc gRPC server, on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc

from common.tokens import ROLE_ADMIN, ROLE_CUSTOMER, TokenVerifier
from microcommerce.user.v1 import user_service_pb2 as pb
from tests.integration.user.conftest import UserServer
from tests.integration.user.user_helpers import (
    PASSWORD,
    auth,
    rpc_error,
    sign_in,
    sign_up,
    unique_email,
    user_events,
    violated_field,
)


async def test_a_new_user_is_a_customer_with_a_normalized_email(user_server: UserServer) -> None:
    email = unique_email("Mixed.Case")
    user = await sign_up(user_server.stub, email=email.upper())

    assert user.email == email.lower()
    assert list(user.roles) == [ROLE_CUSTOMER]
    assert user.id
    assert user.create_time.seconds > 0


async def test_an_email_with_surrounding_spaces_is_refused_by_the_declared_email_rule(
    user_server: UserServer,
) -> None:
    # The contract's `string.email` rule (also the OpenAPI `format: email`) admits no spaces.
    error = await rpc_error(sign_up(user_server.stub, email=f"  {unique_email()} "))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(error) == "email"


async def test_registration_is_announced_on_user_events(user_server: UserServer) -> None:
    user = await sign_up(user_server.stub)

    events = await user_events(user_server.database, user_server.outbox, user.id)

    assert [event["type"] for event in events] == ["microcommerce.user.registered"]
    assert events[0]["data"] == {"user_id": user.id, "roles": ["customer"]}
    assert events[0]["subject"] == user.id


async def test_an_email_is_taken_whatever_its_case(user_server: UserServer) -> None:
    email = unique_email()
    await sign_up(user_server.stub, email=email)

    error = await rpc_error(sign_up(user_server.stub, email=email.upper()))

    assert error.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_bad_registrations_name_the_offending_field(user_server: UserServer) -> None:
    cases = [
        ({"email": "not-an-email"}, "email"),
        ({"password": "short"}, "password"),
        ({"password": "password123"}, "password"),
        ({"name": "   "}, "name"),
    ]
    for change, field in cases:
        request = {"email": unique_email(), "password": PASSWORD, "name": "Ada", **change}
        error = await rpc_error(user_server.stub.CreateUser(pb.CreateUserRequest(**request)))

        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, change
        assert violated_field(error) == field


async def test_a_signed_in_user_reads_and_renames_their_profile(user_server: UserServer) -> None:
    email = unique_email()
    user = await sign_up(user_server.stub, email=email)
    pair = await sign_in(user_server.stub, email)

    me = await user_server.stub.GetMe(pb.GetMeRequest(), metadata=auth(pair.access_token))
    renamed = await user_server.stub.UpdateMe(
        pb.UpdateMeRequest(name="Countess"), metadata=auth(pair.access_token)
    )
    unchanged = await user_server.stub.UpdateMe(
        pb.UpdateMeRequest(), metadata=auth(pair.access_token)
    )

    assert me.id == user.id
    assert me.email == email
    assert renamed.name == "Countess"
    assert unchanged.name == "Countess"


async def test_the_access_token_carries_the_users_identity(user_server: UserServer) -> None:
    email = unique_email()
    user = await sign_up(user_server.stub, email=email)

    pair = await sign_in(user_server.stub, email)
    principal = await TokenVerifier(user_server.ring).verify(pair.access_token)

    assert pair.token_type == "Bearer"
    assert pair.expires_in == 15 * 60
    assert principal.subject == user.id
    assert principal.roles == {ROLE_CUSTOMER}
    assert principal.session_id


async def test_preferences_default_then_are_replaced_as_a_whole(user_server: UserServer) -> None:
    email = unique_email()
    await sign_up(user_server.stub, email=email)
    token = (await sign_in(user_server.stub, email)).access_token

    defaults = await user_server.stub.GetPreferences(
        pb.GetPreferencesRequest(), metadata=auth(token)
    )
    await user_server.stub.UpdatePreferences(
        pb.UpdatePreferencesRequest(
            preferences=pb.Preferences(currency="eur", language="de-CH", marketing_emails=True)
        ),
        metadata=auth(token),
    )
    stored = await user_server.stub.GetPreferences(pb.GetPreferencesRequest(), metadata=auth(token))
    reset = await user_server.stub.UpdatePreferences(
        pb.UpdatePreferencesRequest(preferences=pb.Preferences(language="fr")),
        metadata=auth(token),
    )

    assert (defaults.currency, defaults.language, defaults.marketing_emails) == ("USD", "en", False)
    assert (stored.currency, stored.language, stored.marketing_emails) == ("EUR", "de-CH", True)
    assert (reset.currency, reset.language, reset.marketing_emails) == ("USD", "fr", False)


async def test_an_unknown_currency_is_refused_by_field(user_server: UserServer) -> None:
    email = unique_email()
    await sign_up(user_server.stub, email=email)
    token = (await sign_in(user_server.stub, email)).access_token

    error = await rpc_error(
        user_server.stub.UpdatePreferences(
            pb.UpdatePreferencesRequest(preferences=pb.Preferences(currency="euros")),
            metadata=auth(token),
        )
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(error) == "preferences.currency"


async def test_deleting_an_account_erases_it_and_ends_its_sessions(
    user_server: UserServer,
) -> None:
    email = unique_email()
    user = await sign_up(user_server.stub, email=email, name="Grace Hopper")
    pair = await sign_in(user_server.stub, email)

    await user_server.stub.DeleteMe(pb.DeleteMeRequest(), metadata=auth(pair.access_token))

    me = await rpc_error(
        user_server.stub.GetMe(pb.GetMeRequest(), metadata=auth(pair.access_token))
    )
    refresh = await rpc_error(
        user_server.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=pair.refresh_token))
    )
    login = await rpc_error(sign_in(user_server.stub, email))
    async with user_server.store.unit_of_work() as work:
        stored = await work.user(user.id)
    events = await user_events(user_server.database, user_server.outbox, user.id)
    assert me.code() == grpc.StatusCode.NOT_FOUND
    assert refresh.code() == grpc.StatusCode.UNAUTHENTICATED
    assert login.code() == grpc.StatusCode.UNAUTHENTICATED
    assert stored is not None
    assert email not in stored.email
    assert stored.name == ""
    assert stored.password_hash is None
    assert events[-1]["type"] == "microcommerce.user.deleted"
    assert events[-1]["data"] == {"user_id": user.id}
    # The address is free again: a new account may use it.
    assert (await sign_up(user_server.stub, email=email)).id != user.id


async def test_an_admin_lists_users_newest_first_by_page_and_filters_by_email(
    user_server: UserServer,
) -> None:
    admin_email = unique_email("admin")
    await user_server.accounts.bootstrap_admin(admin_email, PASSWORD)
    token = (await sign_in(user_server.stub, admin_email)).access_token
    created = [await sign_up(user_server.stub) for _ in range(3)]

    first = await user_server.stub.ListUsers(pb.ListUsersRequest(page_size=2), metadata=auth(token))
    second = await user_server.stub.ListUsers(
        pb.ListUsersRequest(page_size=2, page_token=first.next_page_token), metadata=auth(token)
    )
    filtered = await user_server.stub.ListUsers(
        pb.ListUsersRequest(email=created[0].email.upper()), metadata=auth(token)
    )

    assert [u.id for u in first.users] == [created[2].id, created[1].id]
    assert first.next_page_token
    assert second.users[0].id == created[0].id
    assert [u.id for u in filtered.users] == [created[0].id]
    assert filtered.next_page_token == ""


async def test_a_customer_cannot_list_users(user_server: UserServer) -> None:
    email = unique_email()
    await sign_up(user_server.stub, email=email)
    token = (await sign_in(user_server.stub, email)).access_token

    error = await rpc_error(user_server.stub.ListUsers(pb.ListUsersRequest(), metadata=auth(token)))

    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_an_admin_grants_a_role_that_shows_from_the_next_refresh(
    user_server: UserServer,
) -> None:
    admin_email = unique_email("admin")
    admin = await user_server.accounts.bootstrap_admin(admin_email, PASSWORD)
    admin_token = (await sign_in(user_server.stub, admin_email)).access_token
    email = unique_email()
    user = await sign_up(user_server.stub, email=email)
    pair = await sign_in(user_server.stub, email)

    changed = await user_server.stub.SetUserRoles(
        pb.SetUserRolesRequest(id=user.id, roles=["customer", "admin"]),
        metadata=auth(admin_token),
    )
    refreshed = await user_server.stub.RefreshToken(
        pb.RefreshTokenRequest(refresh_token=pair.refresh_token)
    )
    principal = await TokenVerifier(user_server.ring).verify(refreshed.access_token)
    events = await user_events(user_server.database, user_server.outbox, user.id)

    assert sorted(changed.roles) == [ROLE_ADMIN, ROLE_CUSTOMER]
    assert principal.is_admin
    assert events[-1]["type"] == "microcommerce.user.roles_changed"
    assert events[-1]["data"] == {
        "user_id": user.id,
        "roles": ["admin", "customer"],
        "previous_roles": ["customer"],
        "changed_by": admin.id,
    }


async def test_an_unknown_role_is_refused(user_server: UserServer) -> None:
    admin_email = unique_email("admin")
    await user_server.accounts.bootstrap_admin(admin_email, PASSWORD)
    token = (await sign_in(user_server.stub, admin_email)).access_token
    user = await sign_up(user_server.stub)

    error = await rpc_error(
        user_server.stub.SetUserRoles(
            pb.SetUserRolesRequest(id=user.id, roles=["service"]), metadata=auth(token)
        )
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(error) == "roles[0]"


async def test_the_bootstrap_admin_is_updated_when_the_configured_password_changes(
    user_server: UserServer,
) -> None:
    email = unique_email("admin")
    first = await user_server.accounts.bootstrap_admin(email, PASSWORD)

    again = await user_server.accounts.bootstrap_admin(email.upper(), "a new long passphrase")

    assert again.id == first.id
    assert ROLE_ADMIN in again.roles
    assert (await sign_in(user_server.stub, email, "a new long passphrase")).access_token
