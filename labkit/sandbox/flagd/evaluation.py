"""flagd's evaluation service on port 8013: flagd.evaluation.v1 and v2 `Resolve*`, v1 `ResolveAll`.

The answers are built as flagd v0.16.1 builds them (flagd/pkg/service/flag-evaluation/
flag_evaluator_v1.go, _v2.go, flag_evaluator_types.go) in the message classes of the stubs
OpenFeature's flagd provider ships, so the gRPC servicers (grpc.py) and the Connect HTTP/1.1 JSON
route here (what the API server's service proxy and curl reach) answer the same:
- v2: a fallback (no default variant) and a disabled flag carry only reason (DEFAULT / DISABLED) and
  metadata, no value or variant; an empty variant is left unset;
- v1: a disabled flag carries the type's zero value and an empty variant; a flag with no default
  variant is FLAG_NOT_FOUND;
- errors are Connect/gRPC errors with flagd's readable message (errFormat): FLAG_NOT_FOUND NotFound,
  TYPE_MISMATCH InvalidArgument, PARSE_ERROR DataLoss, GENERAL Unknown.
Connect's JSON is Go's protojson with EmitUnpopulated (connect_service.go): fields in field order,
unset optional/oneof fields left out, an unset message field as null, int64 as a string.
"""
from __future__ import annotations

import json

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import DecodeError, Message
from openfeature.schemas.protobuf.flagd.evaluation.v1 import evaluation_pb2 as v1
from openfeature.schemas.protobuf.flagd.evaluation.v2 import evaluation_pb2 as v2

from labkit.sandbox.flagd import gojson
from labkit.sandbox.flagd.evaluate import FlagSet, Resolution
from labkit.sandbox.http import Request, Response

PORT = 8013
V1, V2 = "flagd.evaluation.v1.Service", "flagd.evaluation.v2.Service"
MODULES = {V1: v1, V2: v2}
GO_PACKAGES = {V1: "evaluationv1", V2: "evaluationv2"}  # how connect-go names the request type (%T)
KIND_OF = {"ResolveBoolean": "boolean", "ResolveString": "string", "ResolveFloat": "float",
           "ResolveInt": "int", "ResolveObject": "object"}
ZERO = {"boolean": False, "string": "", "float": 0.0, "int": 0, "object": {}}
# flagd's errFormat: error code -> Connect/gRPC code
CODES = {"FLAG_NOT_FOUND": "not_found", "TYPE_MISMATCH": "invalid_argument", "PARSE_ERROR": "data_loss",
         "GENERAL": "unknown"}
# connect-go's connectCodeToHTTP
HTTP_STATUS = {"canceled": 408, "unknown": 500, "invalid_argument": 400, "deadline_exceeded": 408,
               "not_found": 404, "already_exists": 409, "permission_denied": 403, "resource_exhausted": 429,
               "failed_precondition": 412, "aborted": 409, "out_of_range": 400, "unimplemented": 404,
               "internal": 500, "unavailable": 503, "data_loss": 500, "unauthenticated": 401}
JSON_TYPES = ("application/json", "application/json; charset=utf-8")
PROTO_TYPE = "application/proto"


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


# ---- Connect over HTTP/1.1 -----------------------------------------------------------------------
def protojson(message: Message) -> dict:
    """Go's protojson.Marshal with EmitUnpopulated, as a dict in field order."""
    printed = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    out = {}
    for fd in message.DESCRIPTOR.fields:
        if fd.json_name in printed:
            value = gojson.numbers(printed[fd.json_name])  # a whole double without `.0`
            out[fd.json_name] = dict(sorted(value.items())) if _is_map(fd) else value  # Go sorts map keys
        elif fd.message_type is not None and fd.containing_oneof is None and not _repeated(fd):
            out[fd.json_name] = None  # an unset singular message field: null
    return out


def _is_map(fd) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


def _repeated(fd) -> bool:
    return getattr(fd, "is_repeated", None) or fd.label == fd.LABEL_REPEATED


def connect_error(code: str, message: str) -> Response:
    """A Connect unary error: the code's HTTP status, `{"code", "message"}` as JSON."""
    return Response(HTTP_STATUS.get(code, 500), json.dumps({"code": code, "message": message}, separators=(",", ":")).encode(),
                    "application/json")


def _route(path: str) -> tuple[str, str] | None:
    """(service, method) for a procedure path flagd's handlers serve, else None."""
    service, _, method = path.strip("/").partition("/")
    if service not in MODULES or "/" in method:
        return None
    if method in KIND_OF or (method == "ResolveAll" and service == V1):
        return service, method
    return None


def _decode(service: str, method: str, req: Request, binary: bool):
    request = getattr(MODULES[service], f"{method}Request")()
    target = f"*{GO_PACKAGES[service]}.{method}Request"
    try:
        if binary:
            request.ParseFromString(req.body)
        elif not req.body:
            raise ValueError("zero-length payload is not a valid JSON object")
        else:
            json_format.Parse(req.body.decode(), request, ignore_unknown_fields=True)
    except (ValueError, DecodeError, json_format.ParseError, UnicodeDecodeError) as exc:
        raise EvaluationError("invalid_argument", f"unmarshal into {target}: {exc}") from None
    return request


def serve(flags: FlagSet, req: Request, path: str, metrics=None) -> Response:
    """A Connect unary call on 8013 (HTTP/1.1: JSON or binary protobuf), as connect-go answers it."""
    route = _route(path)
    if route is None or route[1] == "EventStream":
        return Response(404, "404 page not found\n", "text/plain; charset=utf-8")
    if req.method != "POST":
        return Response(405, b"", "text/plain", {"Allow": "POST"})
    ctype = req.headers.get("content-type", "").lower().strip()
    binary = ctype == PROTO_TYPE
    if not binary and ctype not in JSON_TYPES:
        return Response(415, b"", "text/plain", {"Accept-Post": "application/json, application/proto"})
    try:
        message = answer(flags, *route, _decode(*route, req, binary), metrics)
    except EvaluationError as err:
        return connect_error(err.code, err.message)
    if binary:
        return Response(200, message.SerializeToString(), PROTO_TYPE)
    return Response(200, json.dumps(protojson(message), separators=(",", ":")).encode(), "application/json")
