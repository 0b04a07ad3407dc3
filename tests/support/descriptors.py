"""Services built at run time over the test proto's messages, for options no .proto should hold."""

from __future__ import annotations

import uuid

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor

from microcommerce.common.v1 import annotations_pb2 as mc_annotations


def service_with(
    rules: dict[str, http_pb2.HttpRule],
    *,
    request: str = "GetWidgetRequest",
    success_status: int = 0,
) -> ServiceDescriptor:
    """A one-off service over the test proto's messages, added to the default pool."""
    package = f"microcommerce.routetest{uuid.uuid4().hex}.v1"
    file = descriptor_pb2.FileDescriptorProto(
        name=f"{package.replace('.', '/')}/service.proto",
        package=package,
        syntax="proto3",
        dependency=[
            "microcommerce/testing/v1/widgets.proto",
            "google/api/annotations.proto",
            "microcommerce/common/v1/annotations.proto",
        ],
    )
    service = file.service.add(name="TestService")
    for name, rule in rules.items():
        method = service.method.add(
            name=name,
            input_type=f".microcommerce.testing.v1.{request}",
            output_type=".microcommerce.testing.v1.Widget",
        )
        method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
        method.options.Extensions[mc_annotations.access] = mc_annotations.ACCESS_PUBLIC
        if success_status:
            method.options.Extensions[mc_annotations.http_success_status] = success_status
    pool = descriptor_pool.Default()
    pool.AddSerializedFile(file.SerializeToString())
    return pool.FindServiceByName(f"{package}.TestService")
