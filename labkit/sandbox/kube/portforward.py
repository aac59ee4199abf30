"""kubectl port-forward: not yet carried (a Status that says so)."""
from __future__ import annotations

from labkit.sandbox.kube.errors import StatusError


def handle(cluster, req, name: str, namespace: str):
    cluster.get("pods", name)
    raise StatusError(400, "BadRequest", "port-forward is not served by the local lab yet")
