"""Writes buf/validate/validate.proto, as a FileDescriptorSet, for `make proto` to compile against.

Buf publishes validate.proto only through its registry, which the buf CLI cannot reach
offline, and no package ships the .proto source. The protovalidate wheel (pinned in the lock)
embeds the file's descriptor, so we take it from there instead of vendoring a copy that could
drift from the runtime that enforces it. The well-known types it imports come first, as protoc
requires a set's dependencies before their dependents.
"""

import sys
from pathlib import Path

from google.protobuf import descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2
from protovalidate._gen.buf.validate import validate_pb


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """The validate.proto descriptor preceded by the well-known files it imports."""
    files = descriptor_pb2.FileDescriptorSet()
    for module in (descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2):
        module.DESCRIPTOR.CopyToProto(files.file.add())
    files.file.add().ParseFromString(validate_pb._DESC.proto.to_binary())
    return files


def main() -> None:
    Path(sys.argv[1]).write_bytes(descriptor_set().SerializeToString())


if __name__ == "__main__":
    main()
