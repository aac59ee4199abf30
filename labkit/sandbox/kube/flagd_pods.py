"""Which flagd pod serves: the Service's oldest Ready pod, the flags it loaded, its running servers."""
from __future__ import annotations

from labkit.sandbox import flagd


class FlagdPods:
    """LocalCluster's view of its flagd pods (it provides _cond, _objects, _born, _is_ready, and the
    per-pod maps _pod_flags and _flagd the kubelet fills)."""

    def _serving_uid(self) -> str | None:
        """The pod flagd's Service sends to (the oldest Ready one), None if it has no endpoints."""
        for pod in sorted(self._objects["pods"].values(), key=lambda p: self._born.get(p["metadata"]["uid"], 0)):
            if self._is_ready(pod) and not pod["metadata"].get("deletionTimestamp") \
                    and pod["metadata"]["uid"] in self._pod_flags:
                return pod["metadata"]["uid"]
        return None

    def flagd_flags(self) -> flagd.FlagSet | None:
        """The flags of the pod flagd's Service sends to (the oldest Ready one), None if it has no endpoints."""
        with self._cond:
            uid = self._serving_uid()
            return None if uid is None else self._pod_flags[uid]

    def flagd_process(self) -> flagd.FlagdProcess | None:
        """The running flagd the Service sends to; None if it has no endpoints."""
        with self._cond:
            uid = self._serving_uid()
            return None if uid is None else self._flagd.get(uid)

    def flagd_rpc_address(self) -> tuple[str, int] | None:
        """(host, port) on loopback of the Service's current Ready flagd pod's 8013 (gRPC over HTTP/2, and
        Connect over HTTP/1.1), None when no pod is Ready. What the local cart dials with grpcio."""
        process = self.flagd_process()
        return None if process is None else process.address(8013)

    def _ready_uid(self, name: str) -> str | None:
        """The uid of pod `name` while it is Ready and not terminating (call under self._cond)."""
        pod = self._objects["pods"].get(name)
        if pod is None or not self._is_ready(pod) or pod["metadata"].get("deletionTimestamp"):
            return None
        return pod["metadata"]["uid"]

    def pod_process(self, name: str) -> flagd.FlagdProcess | None:
        """The running flagd of a Ready flagd pod; None for any other pod or state."""
        with self._cond:
            return self._flagd.get(self._ready_uid(name))

    def pod_flags(self, name: str) -> flagd.FlagSet | None:
        """The flags a Ready flagd pod loaded at its start; None for any other pod or state."""
        with self._cond:
            return self._pod_flags.get(self._ready_uid(name))

    def flagd_value(self, flag_key: str, context: dict | None = None) -> dict | None:
        """What a Ready flagd pod serves for a flag in `context` (OFREP body), None if none is Ready/unknown."""
        flags = self.flagd_flags()
        return None if flags is None else flagd.flag_value(flags, flag_key, context)
