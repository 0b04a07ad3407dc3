"""Every domain error names a real gRPC status that tells the caller something specific."""

from __future__ import annotations

import grpc
import pytest

from common import errors
from common.errors import DomainError
from common.grpc_server import status_code_of


def all_subclasses(cls: type[DomainError]) -> list[type[DomainError]]:
    found: list[type[DomainError]] = []
    for sub in cls.__subclasses__():
        found += [sub, *all_subclasses(sub)]
    return found


DOMAIN_ERRORS = [DomainError, *all_subclasses(DomainError)]


@pytest.mark.parametrize("error_class", DOMAIN_ERRORS, ids=lambda c: c.__name__)
def test_each_domain_error_maps_to_a_specific_status(error_class: type[DomainError]) -> None:
    code = status_code_of(error_class("message"))

    assert code.name == error_class.status_name
    assert code not in (grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)


def test_the_table_covers_the_module() -> None:
    declared = {
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, DomainError)
    }
    # Services add subclasses for one cause (payment_svc.domain.PaymentDeclined, ...).
    assert declared == {c for c in DOMAIN_ERRORS if c.__module__ == errors.__name__}
