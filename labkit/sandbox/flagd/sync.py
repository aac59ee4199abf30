"""flagd's sync port 8015: flagd.sync.v1 FlagSyncService over gRPC only (flag-sync/handler.go,
sync_service.go: a plain grpc-go server), as a servicer of the stubs OpenFeature's flagd provider ships.

SyncFlags sends the whole flag set as `{"flags":{...}}` (Go's model.Flag JSON: the source added,
flag-set metadata merged in, `$ref`s resolved, no `description`) with an empty sync_context and keeps
the stream open (a pod's store never changes after it loaded its file); FetchAllFlags answers the same
text; GetMetadata an empty Struct (deprecated; flagd answers it unless --disable-sync-metadata).
"""
from __future__ import annotations

import threading

import grpc
from google.protobuf import struct_pb2
from openfeature.schemas.protobuf.flagd.sync.v1 import sync_pb2, sync_pb2_grpc

from labkit.sandbox.flagd import gojson
from labkit.sandbox.flagd.logs import URI

PORT = 8015


def flag_configuration(flags) -> str:
    """The flag set as flagd's sync handler marshals it: {"flags": {key: model.Flag}}."""
    shared = flags.doc.get("metadata") if isinstance(flags.doc.get("metadata"), dict) else {}
    out = {}
    for key, flag in flags.flags.items():
        flag = flag if isinstance(flag, dict) else {}
        one = {"state": flag.get("state", ""), "defaultVariant": flag.get("defaultVariant") or "",
               "variants": gojson.sorted_maps(flag.get("variants") or {})}
        if flag.get("targeting") is not None:
            one["targeting"] = flag["targeting"]  # json.RawMessage: the file's own key order
        one["source"] = URI
        metadata = {**shared, **(flag.get("metadata") if isinstance(flag.get("metadata"), dict) else {})}
        if metadata:
            one["metadata"] = gojson.sorted_maps(metadata)
        out[key] = one  # model.Flag: its fields in struct order
    return gojson.dumps({"flags": dict(sorted(out.items()))})


class _Sync(sync_pb2_grpc.FlagSyncServiceServicer):
    def __init__(self, process):
        self.process = process

    def SyncFlags(self, request, context):
        done = threading.Event()
        context.add_callback(done.set)
        self.process.metrics.sync_stream(+1)
        try:
            yield sync_pb2.SyncFlagsResponse(flag_configuration=flag_configuration(self.process.flags),
                                             sync_context=struct_pb2.Struct())
            done.wait()  # the store never changes: nothing more to send until the stream ends
        finally:
            self.process.metrics.sync_stream(-1)

    def FetchAllFlags(self, request, context):
        return sync_pb2.FetchAllFlagsResponse(flag_configuration=flag_configuration(self.process.flags))

    def GetMetadata(self, request, context):
        return sync_pb2.GetMetadataResponse(metadata=struct_pb2.Struct())


def add_servicer(server: grpc.Server, process) -> None:
    """FlagSyncService on `server`, from `process` (.flags, .metrics)."""
    sync_pb2_grpc.add_FlagSyncServiceServicer_to_server(_Sync(process), server)
