"""flagd's gRPC services, as servicers of the stubs OpenFeature's flagd provider ships (grpcio):
flagd.evaluation.v1 and v2 on 8013, flagd.sync.v1 FlagSyncService on 8015.

- Resolve*/ResolveAll answer as evaluation.py builds them; an error is the gRPC status flagd's
  errFormat gives (NotFound, InvalidArgument, DataLoss, Unknown) with its readable message.
- EventStream (flag_evaluator_v1.go/_v2.go) sends `provider_ready` on subscribe, then `keep_alive`
  every 20 s. `configuration_change` goes out only when the served flag set changes; a pod's file
  never changes after its init container copied it (the chart's emptyDir), so a pod never sends one:
  a changed ConfigMap reaches clients as a new pod (a new stream: `provider_ready`).
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

KEEP_ALIVE = 20.0  # seconds between keep_alive messages on a quiet EventStream


def _unary(process, service: str, method: str, request, context):
    try:
        return evaluation.answer(process.flags, service, method, request, process.metrics)
    except evaluation.EvaluationError as err:
        context.abort(grpc.StatusCode[err.code.upper()], err.message)


def _event_stream(process, module, request, context):
    """provider_ready at once, then keep_alive while the stream lasts (flagd ends it on shutdown)."""
    done = threading.Event()
    context.add_callback(done.set)
    yield module.EventStreamResponse(type="provider_ready", data=struct_pb2.Struct())
    while not done.wait(process.keep_alive):
        yield module.EventStreamResponse(type="keep_alive")


def add_evaluation(server: grpc.Server, process) -> None:
    """flagd.evaluation.v1 and v2 on `server`, answering from `process` (.flags, .metrics, .keep_alive)."""
    for service, stubs in ((evaluation.V1, v1_grpc), (evaluation.V2, v2_grpc)):
        servicer = stubs.ServiceServicer()
        methods = [*evaluation.KIND_OF, *(["ResolveAll"] if service == evaluation.V1 else [])]
        for method in methods:
            setattr(servicer, method, partial(_unary, process, service, method))
        servicer.EventStream = partial(_event_stream, process, evaluation.MODULES[service])
        stubs.add_ServiceServicer_to_server(servicer, server)


# ---- sync ----------------------------------------------------------------------------------------
def flag_configuration(flags) -> str:
    """The flag set as flagd's sync handler marshals it: {"flags": {key: model.Flag}}."""
    shared = flags.doc.get("metadata") if isinstance(flags.doc.get("metadata"), dict) else {}
    out = {}
    for key, flag in flags.flags.items():
        flag = flag if isinstance(flag, dict) else {}
        one = {"state": flag.get("state", ""), "defaultVariant": flag.get("defaultVariant") or "",
               "variants": dict(sorted((flag.get("variants") or {}).items()))}
        if flag.get("targeting") is not None:
            one["targeting"] = flag["targeting"]
        one["source"] = URI
        metadata = {**shared, **(flag.get("metadata") if isinstance(flag.get("metadata"), dict) else {})}
        if metadata:
            one["metadata"] = dict(sorted(metadata.items()))
        out[key] = one
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
