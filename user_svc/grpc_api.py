"""The user service's gRPC servicers: proto in, use case, proto out."""

from __future__ import annotations

from google.protobuf import empty_pb2

from common.access import require_principal
from common.grpc_types import ServicerContext
from common.proto_values import timestamp
from common.request_context import CLIENT_ADDRESS_METADATA_KEY, CLIENT_USER_AGENT_METADATA_KEY
from microcommerce.user.v1 import user_service_pb2 as pb
from microcommerce.user.v1 import user_service_pb2_grpc
from user_svc.domain import Preferences, Session, User
from user_svc.service import Accounts, Client, IssuedTokens


def _user(user: User) -> pb.User:
    return pb.User(
        id=user.id,
        email=user.email,
        name=user.name,
        roles=sorted(user.roles),
        create_time=timestamp(user.create_time),
    )


def _pair(tokens: IssuedTokens) -> pb.TokenPair:
    return pb.TokenPair(
        access_token=tokens.access_token,
        token_type="Bearer",
        expires_in=tokens.expires_in,
        refresh_token=tokens.refresh_token,
    )


def _preferences(preferences: Preferences) -> pb.Preferences:
    return pb.Preferences(
        currency=preferences.currency,
        language=preferences.language,
        marketing_emails=preferences.marketing_emails,
    )


def _session(session: Session, current_id: str) -> pb.Session:
    return pb.Session(
        id=session.id,
        create_time=timestamp(session.create_time),
        last_used_time=timestamp(session.last_used_time),
        user_agent=session.user_agent,
        client_address=session.client_address,
        current=session.id == current_id,
    )


def _client(context: ServicerContext) -> Client:
    # Set by the gateway from the REST connection; a direct gRPC caller leaves them empty
    # and is then throttled per account only.
    metadata = {key: value for key, value in context.invocation_metadata() or ()}
    address = metadata.get(CLIENT_ADDRESS_METADATA_KEY, "")
    user_agent = metadata.get(CLIENT_USER_AGENT_METADATA_KEY, "")
    return Client(
        address=address if isinstance(address, str) else "",
        user_agent=user_agent if isinstance(user_agent, str) else "",
    )


class UserApi(user_service_pb2_grpc.UserServiceServicer):
    """Accounts, tokens, sessions, profile, preferences and roles."""

    def __init__(self, use_cases: Accounts) -> None:
        self._use_cases = use_cases

    async def IssueServiceToken(
        self, request: pb.IssueServiceTokenRequest, context: ServicerContext
    ) -> pb.TokenPair:
        return _pair(self._use_cases.issue_service_token(request.service, request.credential))

    async def IssueToken(
        self, request: pb.IssueTokenRequest, context: ServicerContext
    ) -> pb.TokenPair:
        tokens = await self._use_cases.issue_token(
            request.email, request.password, _client(context)
        )
        return _pair(tokens)

    async def RefreshToken(
        self, request: pb.RefreshTokenRequest, context: ServicerContext
    ) -> pb.TokenPair:
        return _pair(await self._use_cases.refresh(request.refresh_token, _client(context)))

    async def Logout(self, request: pb.LogoutRequest, context: ServicerContext) -> empty_pb2.Empty:
        await self._use_cases.logout(require_principal().user_id, request.refresh_token)
        return empty_pb2.Empty()

    async def CreateUser(self, request: pb.CreateUserRequest, context: ServicerContext) -> pb.User:
        user = await self._use_cases.register(request.email, request.password, request.name)
        return _user(user)

    async def GetMe(self, request: pb.GetMeRequest, context: ServicerContext) -> pb.User:
        return _user(await self._use_cases.me(require_principal().user_id))

    async def UpdateMe(self, request: pb.UpdateMeRequest, context: ServicerContext) -> pb.User:
        name = request.name if request.HasField("name") else None
        return _user(await self._use_cases.update_me(require_principal().user_id, name=name))

    async def DeleteMe(
        self, request: pb.DeleteMeRequest, context: ServicerContext
    ) -> empty_pb2.Empty:
        await self._use_cases.delete_me(require_principal().user_id)
        return empty_pb2.Empty()

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: ServicerContext
    ) -> pb.ListSessionsResponse:
        principal = require_principal()
        found, next_token = await self._use_cases.sessions(
            principal.user_id,
            page_size=request.page_size if request.HasField("page_size") else None,
            page_token=request.page_token,
        )
        return pb.ListSessionsResponse(
            sessions=[_session(session, principal.session_id) for session in found],
            next_page_token=next_token,
        )

    async def RevokeSession(
        self, request: pb.RevokeSessionRequest, context: ServicerContext
    ) -> empty_pb2.Empty:
        await self._use_cases.revoke_session(require_principal().user_id, request.id)
        return empty_pb2.Empty()

    async def GetPreferences(
        self, request: pb.GetPreferencesRequest, context: ServicerContext
    ) -> pb.Preferences:
        return _preferences(await self._use_cases.preferences(require_principal().user_id))

    async def UpdatePreferences(
        self, request: pb.UpdatePreferencesRequest, context: ServicerContext
    ) -> pb.Preferences:
        given = request.preferences
        preferences = Preferences.parse(given.currency, given.language, given.marketing_emails)
        updated = await self._use_cases.update_preferences(require_principal().user_id, preferences)
        return _preferences(updated)

    async def ListUsers(
        self, request: pb.ListUsersRequest, context: ServicerContext
    ) -> pb.ListUsersResponse:
        found, next_token = await self._use_cases.list_users(
            page_size=request.page_size if request.HasField("page_size") else None,
            page_token=request.page_token,
            email=request.email,
        )
        return pb.ListUsersResponse(
            users=[_user(user) for user in found], next_page_token=next_token
        )

    async def SetUserRoles(
        self, request: pb.SetUserRolesRequest, context: ServicerContext
    ) -> pb.User:
        admin = require_principal()
        user = await self._use_cases.set_roles(admin.subject, request.id, list(request.roles))
        return _user(user)

    async def GetJwks(
        self, request: pb.GetJwksRequest, context: ServicerContext
    ) -> pb.JsonWebKeySet:
        return pb.JsonWebKeySet(keys=[pb.JsonWebKey(**jwk) for jwk in self._use_cases.jwks()])
