"""The .proto comments of services, RPCs and fields, for the OpenAPI document.

Descriptors built from generated code carry no source info, but grpcio-tools copies each
service's and RPC's leading comment into the docstrings of the generated servicer class; field
comments come from the descriptor set with source info that ``make proto`` writes.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FieldDescriptor, ServiceDescriptor

# What grpcio-tools writes where the .proto has no comment.
_MISSING = "Missing associated documentation comment in .proto file."
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def service_comments(service: ServiceDescriptor) -> dict[str, str]:
    """RPC name → its comment, and ``""`` → the service's; empty when nothing is documented
    or the generated module is not importable (a descriptor built at run time)."""
    module_name = service.file.name.removesuffix(".proto").replace("/", ".") + "_pb2_grpc"
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return {}
    servicer = getattr(module, f"{service.name}Servicer", None)
    if servicer is None:
        return {}
    comments = {"": _clean(servicer.__doc__)}
    for method in service.methods:
        comments[method.name] = _clean(
            getattr(getattr(servicer, method.name, None), "__doc__", None)
        )
    return {name: text for name, text in comments.items() if text}


def summary_of(comment: str) -> str:
    """The comment's first sentence."""
    return _SENTENCE_END.split(comment, maxsplit=1)[0]


def _clean(docstring: str | None) -> str:
    text = inspect.cleandoc(docstring or "")
    if text == _MISSING:
        return ""
    # Lines were wrapped for the .proto; paragraphs (blank-line separated) are what matter.
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return "\n\n".join(p for p in paragraphs if p)


# FileDescriptorProto field numbers along a SourceCodeInfo location path.
_MESSAGE_TYPE, _NESTED_TYPE, _FIELD = 4, 3, 2
SOURCE_INFO_FILE = "source_info.binpb"


def field_comment(field: FieldDescriptor) -> str:
    """The field's leading .proto comment, paragraphs joined; empty when unknown.

    Generated modules carry no comments of fields, so ``make proto`` writes a descriptor set
    with source info (``source_info.binpb``) at the root of the generated tree; it is found
    next to the module that defines the field.
    """
    holder = field.containing_type
    if holder is None:
        return ""
    return _field_comments(_generated_root(holder.file.name)).get(field.full_name, "")


def _generated_root(proto_file: str) -> str:
    module_name = proto_file.removesuffix(".proto").replace("/", ".") + "_pb2"
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return ""
    file = getattr(module, "__file__", None)
    if file is None:
        return ""
    return str(Path(file).parents[proto_file.count("/")])


@functools.cache
def _field_comments(root: str) -> dict[str, str]:
    path = Path(root, SOURCE_INFO_FILE) if root else None
    if path is None or not path.is_file():
        return {}
    files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    comments: dict[str, str] = {}
    for file in files.file:
        leading = {
            tuple(location.path): location.leading_comments
            for location in file.source_code_info.location
            if location.leading_comments
        }
        for index, message in enumerate(file.message_type):
            _collect(message, f"{file.package}.", (_MESSAGE_TYPE, index), leading, comments)
    return comments


def _collect(
    message: descriptor_pb2.DescriptorProto,
    prefix: str,
    path: tuple[int, ...],
    leading: dict[tuple[int, ...], str],
    comments: dict[str, str],
) -> None:
    name = f"{prefix}{message.name}"
    for index, field in enumerate(message.field):
        text = _clean(leading.get((*path, _FIELD, index)))
        if text:
            comments[f"{name}.{field.name}"] = text
    for index, nested in enumerate(message.nested_type):
        _collect(nested, f"{name}.", (*path, _NESTED_TYPE, index), leading, comments)
