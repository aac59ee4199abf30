"""A Ready flagd pod's HTTP answers: OFREP on its port 8016 (single and bulk), from the flags it loaded."""
from __future__ import annotations

from labkit.sandbox.flagd.evaluate import evaluate
from labkit.sandbox.http import Request, Response, json_response

OFREP_PORT = 8016
BULK = "ofrep/v1/evaluate/flags"


def ofrep(flags: dict, key: str | None) -> tuple[int, dict]:
    """One flag's answer, or every flag's (key None) as the bulk endpoint gives them."""
    if key is None:
        return 200, {"flags": [evaluate(flags, k)[1] for k in flags]}
    return evaluate(flags, key)


def flag_value(flags: dict, key: str) -> dict | None:
    """What the shop's flagd client reads of one flag; None for an error answer."""
    status, body = evaluate(flags, key)
    if status != 200:
        return None
    return {k: body[k] for k in ("key", "value", "variant", "reason")}


def serve(flags: dict, req: Request, port: int, path: str) -> Response:
    """A request reaching the pod on `port` at `path` (no leading slash), as flagd answers it."""
    if port == OFREP_PORT and req.method == "POST":
        key = path[len(BULK) + 1:] if path.startswith(BULK + "/") else ""
        if key or path.rstrip("/") == BULK:
            status, body = ofrep(flags, key or None)
            return json_response(body, status)
    return Response(404, "404 page not found\n", "text/plain; charset=utf-8")
