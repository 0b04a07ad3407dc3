"""The .proto comments of services and RPCs, for the OpenAPI document.

Descriptors built from generated code carry no source info, but grpcio-tools copies each
service's and RPC's leading comment into the docstrings of the generated servicer class.
"""

from __future__ import annotations

import importlib
import inspect
import re

from google.protobuf.descriptor import ServiceDescriptor

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
