"""The servicer of every consuming service's dead-letter RPCs: list and replay dead letters.

Each service declares the service in its own proto package (so the gateway routes it to that
service); the messages and this implementation are shared.
"""

from __future__ import annotations

from typing import Any

from common.consumer import DeadLetterAdmin
from common.dead_letters import DeadLetter, DeadLetterStatus
from common.grpc_server import Service
from common.grpc_types import ServicerContext
from common.proto_values import timestamp
from microcommerce.common.v1 import dead_letters_pb2 as pb

_STATUS_TO_PROTO = {
    DeadLetterStatus.PENDING: pb.DEAD_LETTER_STATUS_PENDING,
    DeadLetterStatus.REPLAYED: pb.DEAD_LETTER_STATUS_REPLAYED,
}
_STATUS_FROM_PROTO = {proto: status for status, proto in _STATUS_TO_PROTO.items()}


class DeadLetterApi:
    """ListDeadLetters and ReplayDeadLetter (admin only, declared in the protos)."""

    def __init__(self, admin: DeadLetterAdmin) -> None:
        self._admin = admin

    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: ServicerContext
    ) -> pb.ListDeadLettersResponse:
        letters, next_token = await self._admin.list(
            request.page_size if request.HasField("page_size") else None,
            request.page_token,
            _STATUS_FROM_PROTO.get(request.status),
        )
        return pb.ListDeadLettersResponse(
            dead_letters=[dead_letter_message(letter) for letter in letters],
            next_page_token=next_token,
        )

    async def ReplayDeadLetter(
        self, request: pb.ReplayDeadLetterRequest, context: ServicerContext
    ) -> pb.DeadLetter:
        return dead_letter_message(await self._admin.replay(request.id))


def dead_letter_message(letter: DeadLetter) -> pb.DeadLetter:
    record = letter.record
    return pb.DeadLetter(
        id=letter.id,
        consumer=letter.consumer,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key="" if record.key is None else record.key.decode(errors="replace"),
        event_id=letter.event_id or "",
        event_type=letter.event_type or "",
        payload=record.value.decode(errors="replace"),
        error=letter.error,
        attempts=letter.attempts,
        status=_STATUS_TO_PROTO[letter.status],
        create_time=timestamp(letter.create_time),
        update_time=timestamp(letter.update_time),
    )


def dead_letter_service(
    descriptor_module: Any, grpc_module: Any, admin: DeadLetterAdmin
) -> Service[DeadLetterApi]:
    """The service's own ``<Svc>DeadLetterService`` (``<svc>.v1.dead_letter_service_pb2``,
    ``_pb2_grpc``).

    Named per service, not one shared name in each package: OpenAPI operation ids are built
    from the service's short name and must be unique.
    """
    (service,) = descriptor_module.DESCRIPTOR.services_by_name.values()
    return Service(
        service.full_name,
        DeadLetterApi(admin),
        getattr(grpc_module, f"add_{service.name}Servicer_to_server"),
    )
