"""flagd's evaluation service on port 8013: flagd.evaluation.v1 and v2 `Resolve*`, v1 `ResolveAll`,
`EventStream`, whatever the transport.

The answers are built as flagd v0.16.1 builds them (flagd/pkg/service/flag-evaluation/
flag_evaluator_v1.go, _v2.go, flag_evaluator_types.go) in the message classes of the stubs
OpenFeature's flagd provider ships, so the gRPC servicers (add_servicers) and the Connect HTTP/1.1 route
(connect.py: what the API server's service proxy and curl reach) answer the same:
- v2: a fallback (no default variant) and a disabled flag carry only reason (DEFAULT / DISABLED) and
  metadata, no value or variant; an empty variant is left unset;
- v1: a disabled flag carries the type's zero value and an empty variant; a flag with no default
  variant is FLAG_NOT_FOUND;
- errors are Connect/gRPC status codes with flagd's readable message (errFormat): FLAG_NOT_FOUND
  NotFound, TYPE_MISMATCH InvalidArgument, PARSE_ERROR DataLoss, GENERAL Unknown;
- EventStream sends `provider_ready` on subscribe, then `keep_alive` every 20 s with nothing else to
  say. `configuration_change` goes out only when the served flag set changes; a pod's file never
  changes after its init container copied it (the chart's emptyDir), so a pod never sends one: a
  changed ConfigMap reaches clients as a new pod (a new stream, `provider_ready`).
"""
from __future__ import annotations

import threading
from functools import partial

import grpc
from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message
from openfeature.schemas.protobuf.flagd.evaluation.v1 import evaluation_pb2 as v1
from openfeature.schemas.protobuf.flagd.evaluation.v1 import evaluation_pb2_grpc as v1_grpc
from openfeature.schemas.protobuf.flagd.evaluation.v2 import evaluation_pb2 as v2
from openfeature.schemas.protobuf.flagd.evaluation.v2 import evaluation_pb2_grpc as v2_grpc

from labkit.sandbox.flagd.evaluate import FlagSet, Resolution

PORT = 8013
V1, V2 = "flagd.evaluation.v1.Service", "flagd.evaluation.v2.Service"
MODULES = {V1: v1, V2: v2}
KIND_OF = {"ResolveBoolean": "boolean", "ResolveString": "string", "ResolveFloat": "float",
           "ResolveInt": "int", "ResolveObject": "object"}
ZERO = {"boolean": False, "string": "", "float": 0.0, "int": 0, "object": {}}
# flagd's errFormat: error code -> Connect/gRPC code
CODES = {"FLAG_NOT_FOUND": "not_found", "TYPE_MISMATCH": "invalid_argument", "PARSE_ERROR": "data_loss",
         "GENERAL": "unknown"}
KEEP_ALIVE = 20.0  # seconds between keep_alive messages on a quiet EventStream


class EvaluationError(Exception):
    """A Connect/gRPC error as flagd returns it: a code name (Connect's spelling) and a message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


# ---- answers -------------------------------------------------------------------------------------
def context_of(message) -> dict:
    """The request's `context` Struct as Go's AsMap gives it (numbers are float64)."""
    return json_format.MessageToDict(message.context) if message.HasField("context") else {}


def _struct(value: dict | None) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value or {})
    return out


def resolve(flags: FlagSet, service: str, method: str, request, metrics=None) -> Message:
    """One `Resolve<Type>` answer of `service` (V1 or V2), or EvaluationError as flagd returns it;
    `metrics` (management.Metrics) counts it as flagd's RecordEvaluation does."""
    kind, module = KIND_OF[method], MODULES[service]
    got = flags.resolve(request.flag_key, kind, context_of(request), v1=service == V1)
    if metrics is not None:
        metrics.evaluation(request.flag_key, got.variant, got.reason, got.error_code)
    if got.error_code is not None:
        raise EvaluationError(CODES[got.error_code], got.message)
    answer = getattr(module, f"{method}Response")(reason=got.reason, metadata=_struct(got.metadata))
    if service == V2 and got.reason in ("DEFAULT", "DISABLED") and got.variant is None:
        return answer  # setReasonOnlyV2: no value, no variant
    value = ZERO[kind] if got.value is None else got.value  # v1 DISABLED: the type's zero, variant ""
    if kind == "object":
        answer.value.CopyFrom(_struct(value))
    else:
        answer.value = value
    if got.variant:
        answer.variant = got.variant
    return answer


_ANY_FIELD = {"boolean": "bool_value", "string": "string_value", "float": "double_value",
              "object": "object_value"}


def _kind_of_default(flag) -> str | None:
    """Which resolve[T] flagd's ResolveAll uses for a flag: its default variant value's Go type;
    None (v1 skips the flag) for anything else, a missing default included."""
    variants = flag.get("variants") if isinstance(flag, dict) else None
    value = variants.get(flag.get("defaultVariant") or "") if isinstance(variants, dict) else None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "float"
    return {str: "string", dict: "object"}.get(type(value))


def resolve_all(flags: FlagSet, request, metrics=None) -> v1.ResolveAllResponse:
    """v1 ResolveAll: every flag read as its default variant's type; a flag that fails keeps its
    reason (ERROR) and the type's zero value, as flagd's ResolveAllValues/NewAnyValue do."""
    answer = v1.ResolveAllResponse(metadata=_struct({}))  # flag-set metadata: the selector's (none)
    context = context_of(request)
    for key, flag in flags.flags.items():
        kind = _kind_of_default(flag)
        if kind is None:
            continue
        got: Resolution = flags.resolve(key, kind, context, v1=True)
        if metrics is not None:
            metrics.evaluation(key, got.variant, got.reason, got.error_code)
        value = ZERO[kind] if got.value is None else got.value
        one = answer.flags[key]
        one.reason, one.variant = got.reason, got.variant or ""
        if kind == "object":
            one.object_value.CopyFrom(_struct(value))
        else:
            setattr(one, _ANY_FIELD[kind], value)
        one.metadata.CopyFrom(_struct(got.metadata))
    return answer


def answer(flags: FlagSet, service: str, method: str, request, metrics=None) -> Message:
    """The unary answer of `service`/`method` to a decoded request (gRPC and Connect share it)."""
    if method == "ResolveAll":
        return resolve_all(flags, request, metrics)
    return resolve(flags, service, method, request, metrics)


def procedure(path: str) -> tuple[str, str] | None:
    """(service, method) for a procedure path flagd's v1/v2 handlers serve, else None."""
    service, _, method = path.strip("/").partition("/")
    if service not in MODULES or "/" in method:
        return None
    if method in KIND_OF or method == "EventStream" or (method == "ResolveAll" and service == V1):
        return service, method
    return None


def events(service: str, keep_alive: float, done: threading.Event):
    """An EventStream's messages: provider_ready at once, then keep_alive until `done` (the client
    left, or flagd stopped)."""
    module = MODULES[service]
    yield module.EventStreamResponse(type="provider_ready", data=struct_pb2.Struct())
    while not done.wait(keep_alive):
        yield module.EventStreamResponse(type="keep_alive")


# ---- gRPC ------------------------------------------------------------------------------------------
def _unary(process, service: str, method: str, request, context):
    try:
        return answer(process.flags, service, method, request, process.metrics)
    except EvaluationError as err:
        context.abort(grpc.StatusCode[err.code.upper()], err.message)


def _event_stream(process, service: str, request, context):
    done = threading.Event()
    context.add_callback(done.set)  # the client left, or the server stopped (flagd's shutdown)
    yield from events(service, process.keep_alive, done)


def add_servicers(server: grpc.Server, process) -> None:
    """flagd.evaluation.v1 and v2 on `server`, answering from `process` (.flags, .metrics, .keep_alive)."""
    for service, stubs in ((V1, v1_grpc), (V2, v2_grpc)):
        servicer = stubs.ServiceServicer()
        for method in [*KIND_OF, *(["ResolveAll"] if service == V1 else [])]:
            setattr(servicer, method, partial(_unary, process, service, method))
        servicer.EventStream = partial(_event_stream, process, service)
        stubs.add_ServiceServicer_to_server(servicer, server)
