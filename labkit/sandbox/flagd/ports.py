"""What a Ready flagd pod answers over HTTP/1.1, by port: 8013 Connect (evaluation), 8016 OFREP.

The API server's service and pod proxies speak HTTP/1.1 to the pod, so these are what `kubectl get
--raw .../services/flagd:8013/proxy/flagd.evaluation.v2.Service/ResolveFloat` and curl through
`kubectl proxy` reach. Any other port answers as a Go mux with nothing routed: 404.
"""
from __future__ import annotations

from labkit.sandbox.flagd import evaluation
from labkit.sandbox.flagd.ofrep import flag_set, serve as serve_ofrep
from labkit.sandbox.http import Request, Response


def serve(flags, req: Request, port: int, path: str) -> Response:
    """A request reaching the pod on `port` at `path` (no leading slash), as flagd answers it."""
    if port == evaluation.PORT:
        return evaluation.serve(flag_set(flags), req, path)
    return serve_ofrep(flags, req, port, path)
