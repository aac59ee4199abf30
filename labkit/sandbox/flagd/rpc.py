"""flagd's gRPC services, as servicers of the stubs OpenFeature's flagd provider ships (grpcio):
flagd.evaluation.v1 and v2 on 8013, flagd.sync.v1 FlagSyncService on 8015.

- Resolve*/ResolveAll answer as evaluation.py builds them; an error is the gRPC status flagd's
  errFormat gives (NotFound, InvalidArgument, DataLoss, Unknown) with its readable message.
- EventStream as evaluation.events says (provider_ready, then keep_alive), until the call ends.
- SyncFlags (flag-sync/handler.go) sends the whole flag set as `{"flags":{...}}` (Go's model.Flag
  JSON: source, flag-set metadata merged in, `$ref`s resolved) with an empty sync_context and keeps
  the stream open; FetchAllFlags answers the same text; GetMetadata an empty Struct.
"""
from __future__ import annotations

import threading
from functools import partial

import grpc
from google.protobuf import struct_pb2
from openfeature.schemas.protobuf.flagd.evaluation.v1 import evaluation_pb2_grpc as v1_grpc
from openfeature.schemas.protobuf.flagd.evaluation.v2 import evaluation_pb2_grpc as v2_grpc
from openfeature.schemas.protobuf.flagd.sync.v1 import sync_pb2, sync_pb2_grpc

from labkit.sandbox.flagd import evaluation, gojson
from labkit.sandbox.flagd.logs import URI


def _unary(process, service: str, method: str, request, context):
    try:
        return evaluation.answer(process.flags, service, method, request, process.metrics)
    except evaluation.EvaluationError as err:
        context.abort(grpc.StatusCode[err.code.upper()], err.message)


def _event_stream(process, service: str, request, context):
    done = threading.Event()
    context.add_callback(done.set)  # the client left, or the server stopped (flagd's shutdown)
    yield from evaluation.events(service, process.keep_alive, done)


def add_evaluation(server: grpc.Server, process) -> None:
    """flagd.evaluation.v1 and v2 on `server`, answering from `process` (.flags, .metrics, .keep_alive)."""
    for service, stubs in ((evaluation.V1, v1_grpc), (evaluation.V2, v2_grpc)):
        servicer = stubs.ServiceServicer()
        methods = [*evaluation.KIND_OF, *(["ResolveAll"] if service == evaluation.V1 else [])]
        for method in methods:
            setattr(servicer, method, partial(_unary, process, service, method))
        servicer.EventStream = partial(_event_stream, process, service)
        stubs.add_ServiceServicer_to_server(servicer, server)


# ---- sync ----------------------------------------------------------------------------------------
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


def add_sync(server: grpc.Server, process) -> None:
    sync_pb2_grpc.add_FlagSyncServiceServicer_to_server(_Sync(process), server)
