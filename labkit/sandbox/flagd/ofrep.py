"""A Ready flagd pod's HTTP answers: OFREP on its port 8016 (single and bulk), from the flags it loaded.

As flagd's handler (flagd/pkg/service/flag-evaluation/ofrep/handler.go) answers: POST only (another
method on an OFREP path is gorilla/mux's bare 405), the body's `context` object is the evaluation
context (an empty body is an empty context, a context that is not an object is ignored), a body that
is not JSON is 400 INVALID_CONTEXT; no ETag (flagd sends none).
"""
from __future__ import annotations

import json

from labkit.sandbox.flagd.evaluate import FlagSet
from labkit.sandbox.http import Request, Response, json_response

OFREP_PORT = 8016
BULK = "ofrep/v1/evaluate/flags"
_BAD_CONTEXT = {"errorCode": "INVALID_CONTEXT", "errorDetails": "Provider context is not valid",
                "metadata": None}  # Go's nil map


def flag_set(flags) -> FlagSet:
    """A pod's FlagSet; a bare {key: flag} mapping (older callers) is loaded as a file's flags."""
    return flags if isinstance(flags, FlagSet) else FlagSet({"flags": dict(flags)})


def ofrep(flags, key: str | None, context: dict | None = None) -> tuple[int, dict]:
    """One flag's answer, or every flag's (key None) as the bulk endpoint gives them."""
    flags = flag_set(flags)
    return flags.evaluate_all(context) if key is None else flags.evaluate(key, context)


def flag_value(flags, key: str, context: dict | None = None) -> dict | None:
    """What a service's flagd client reads of one flag in `context`; None for an error answer."""
    status, body = ofrep(flags, key, context)
    if status != 200:
        return None
    return {k: body.get(k) for k in ("key", "value", "variant", "reason")}


def request_context(req: Request) -> tuple[dict | None, bool]:
    """(the evaluation context, whether the body was readable) as flagd decodes an OFREP body."""
    if not req.body or not req.body.strip():
        return {}, True
    try:
        body = json.loads(req.body)
    except (ValueError, UnicodeDecodeError):
        return None, False
    if body is None:
        return {}, True
    if not isinstance(body, dict):  # Go cannot decode it into the request struct
        return None, False
    context = body.get("context")
    return (context if isinstance(context, dict) else {}), True


def _route(path: str) -> tuple[bool, str | None]:
    """(is it an OFREP path, the flag key or None for bulk)."""
    if path in (BULK, BULK + "/"):
        return True, None
    if path.startswith(BULK + "/") and "/" not in path[len(BULK) + 1:]:
        return True, path[len(BULK) + 1:]
    return False, None


def serve(flags, req: Request, port: int, path: str) -> Response:
    """A request reaching the pod on `port` at `path` (no leading slash), as flagd answers it."""
    matched, key = _route(path) if port == OFREP_PORT else (False, None)
    if not matched:
        return Response(404, "404 page not found\n", "text/plain; charset=utf-8")
    if req.method != "POST":
        return Response(405, b"", "text/plain")
    context, readable = request_context(req)
    if not readable:
        return json_response(_BAD_CONTEXT if key is None else {"key": key, **_BAD_CONTEXT}, 400)
    status, body = ofrep(flags, key, context)
    return json_response(body, status)
