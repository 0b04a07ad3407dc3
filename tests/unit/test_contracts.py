"""Every RPC of every service says who may call it, and only service RPCs stay off REST."""

from __future__ import annotations

import importlib

import pytest
from google.api import annotations_pb2 as http_annotations
from google.protobuf.descriptor import MethodDescriptor

from microcommerce.common.v1 import annotations_pb2 as mc

SERVICE_MODULES = (
    "microcommerce.payment.v1.order_service_pb2",
    "microcommerce.product.v1.product_service_pb2",
    "microcommerce.product.v1.inventory_service_pb2",
    "microcommerce.user.v1.user_service_pb2",
)


def all_methods() -> list[MethodDescriptor]:
    methods: list[MethodDescriptor] = []
    for name in SERVICE_MODULES:
        file = importlib.import_module(name).DESCRIPTOR
        for service in file.services_by_name.values():
            methods.extend(service.methods)
    return methods


@pytest.mark.parametrize("method", all_methods(), ids=lambda m: m.full_name)
def test_every_rpc_declares_who_may_call_it(method: MethodDescriptor) -> None:
    access = method.GetOptions().Extensions[mc.access]

    assert access != mc.ACCESS_UNSPECIFIED


@pytest.mark.parametrize("method", all_methods(), ids=lambda m: m.full_name)
def test_service_only_rpcs_have_no_rest_route_and_the_rest_do(method: MethodDescriptor) -> None:
    options = method.GetOptions()
    has_route = options.HasExtension(http_annotations.http)

    assert has_route == (
        options.Extensions[mc.access] not in (mc.ACCESS_SERVICE, mc.ACCESS_SERVICE_CREDENTIAL)
    )
