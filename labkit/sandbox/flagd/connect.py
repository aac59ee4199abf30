"""The Connect protocol on flagd's 8013 over HTTP/1.1, as connect-go answers it (connectrpc.com/connect
v1.19, flagd's marshal options in connect_service.go): what curl, the API server's proxies and
`kubectl port-forward` with an HTTP/1.1 client reach.

- Unary (`Resolve*`, `ResolveAll`): POST with `application/json` (or `application/proto`); the answer
  is 200 with the message, or the error's HTTP status with `{"code","message"}`.
- Server streaming (`EventStream`): POST with `application/connect+json` (or `+proto`) and an
  enveloped request; the answer is 200 and a stream of enveloped messages.
JSON is Go's protojson with EmitUnpopulated: fields in field order, unset optional/oneof fields left
out, an unset message field as null, int64 as a string, map keys sorted.
"""
from __future__ import annotations

import json
import struct
import threading

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from labkit.sandbox.flagd import evaluation, gojson
from labkit.sandbox.flagd.evaluate import FlagSet
from labkit.sandbox.http import Request, Response

GO_PACKAGES = {evaluation.V1: "evaluationv1", evaluation.V2: "evaluationv2"}  # connect-go's %T of a request
# connect-go's connectCodeToHTTP
HTTP_STATUS = {"canceled": 408, "unknown": 500, "invalid_argument": 400, "deadline_exceeded": 408,
               "not_found": 404, "already_exists": 409, "permission_denied": 403, "resource_exhausted": 429,
               "failed_precondition": 412, "aborted": 409, "out_of_range": 400, "unimplemented": 404,
               "internal": 500, "unavailable": 503, "data_loss": 500, "unauthenticated": 401}
UNARY_JSON = ("application/json", "application/json; charset=utf-8")
UNARY_PROTO = "application/proto"
STREAM_JSON, STREAM_PROTO = "application/connect+json", "application/connect+proto"
END_STREAM = 0x02  # envelope flag of the last message of a stream
NOT_FOUND = Response(404, "404 page not found\n", "text/plain; charset=utf-8")


def protojson(message: Message):
    """Go's protojson.Marshal with EmitUnpopulated: fields in field order, map (and Struct) keys sorted."""
    if message.DESCRIPTOR.full_name.startswith("google.protobuf."):  # Struct, Value: plain JSON
        return gojson.sorted_maps(gojson.numbers(json_format.MessageToDict(message)))
    printed = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    out = {}
    for fd in message.DESCRIPTOR.fields:
        value = getattr(message, fd.name)
        if fd.json_name not in printed:
            if fd.message_type is not None and fd.containing_oneof is None and not _is_map(fd):
                out[fd.json_name] = None  # an unset singular message field: null
        elif _is_map(fd):
            printed_map = printed[fd.json_name]
            messages = fd.message_type.fields_by_name["value"].message_type is not None
            out[fd.json_name] = {str(k): protojson(value[k]) if messages else gojson.numbers(printed_map[str(k)])
                                 for k in sorted(value)}
        elif fd.message_type is not None:
            out[fd.json_name] = protojson(value)
        else:
            out[fd.json_name] = gojson.numbers(printed[fd.json_name])  # a whole double without `.0`
    return out


def _is_map(fd) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


def _json(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def connect_error(code: str, message: str) -> Response:
    """A Connect unary error: the code's HTTP status, `{"code","message"}` as JSON."""
    return Response(HTTP_STATUS.get(code, 500), _json({"code": code, "message": message}), "application/json")


def _decode(service: str, method: str, body: bytes, binary: bool):
    request = getattr(evaluation.MODULES[service], f"{method}Request")()
    try:
        if binary:
            request.ParseFromString(body)
        elif not body:
            raise ValueError("zero-length payload is not a valid JSON object")
        else:
            json_format.Parse(body.decode(), request, ignore_unknown_fields=True)
    except (ValueError, DecodeError, json_format.ParseError, UnicodeDecodeError) as exc:
        raise evaluation.EvaluationError(
            "invalid_argument", f"unmarshal into *{GO_PACKAGES[service]}.{method}Request: {exc}") from None
    return request


def _encode(message: Message, binary: bool) -> bytes:
    return message.SerializeToString() if binary else _json(protojson(message))


def _envelope(payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(payload)) + payload


def _unary(flags: FlagSet, route, req: Request, metrics) -> Response:
    ctype = req.headers.get("content-type", "").lower().strip()
    binary = ctype == UNARY_PROTO
    if not binary and ctype not in UNARY_JSON:
        return Response(415, b"", "text/plain", {"Accept-Post": "application/json, application/proto"})
    try:
        message = evaluation.answer(flags, *route, _decode(*route, req.body, binary), metrics)
    except evaluation.EvaluationError as err:
        return connect_error(err.code, err.message)
    return Response(200, _encode(message, binary), UNARY_PROTO if binary else "application/json")


def _stream(route, req: Request, keep_alive: float, stopped: threading.Event) -> Response:
    """EventStream: 200 and enveloped messages until flagd stops or the client leaves; an error
    goes in the end-of-stream message, as Connect's streaming protocol says."""
    ctype = req.headers.get("content-type", "").lower().strip()
    if ctype not in (STREAM_JSON, STREAM_PROTO):
        return Response(415, b"", "text/plain", {"Accept-Post": f"{STREAM_JSON}, {STREAM_PROTO}"})
    binary, body = ctype == STREAM_PROTO, req.body
    try:
        if len(body) < 5 or body[0] & 0x01 or len(body) != 5 + struct.unpack(">I", body[1:5])[0]:
            raise evaluation.EvaluationError("invalid_argument", "protocol error: incomplete envelope")
        _decode(*route, body[5:], binary)
    except evaluation.EvaluationError as err:
        end = _json({"error": {"code": err.code, "message": err.message}})
        return Response(200, iter([_envelope(end, END_STREAM)]), ctype)
    messages = evaluation.events(route[0], keep_alive, stopped)
    return Response(200, (_envelope(_encode(m, binary)) for m in messages), ctype)


def serve(flags: FlagSet, req: Request, path: str, metrics=None, keep_alive: float = evaluation.KEEP_ALIVE,
          stopped: threading.Event | None = None) -> Response:
    """A Connect call on 8013 over HTTP/1.1. `stopped` is flagd's end (it ends open streams)."""
    route = evaluation.procedure(path)
    if route is None:
        return NOT_FOUND
    if req.method != "POST":
        return Response(405, b"", "text/plain", {"Allow": "POST"})
    if route[1] == "EventStream":
        return _stream(route, req, keep_alive, stopped or threading.Event())
    return _unary(flags, route, req, metrics)
