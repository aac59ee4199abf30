"""kubectl port-forward: pods/{name}/portforward upgraded to SPDY/3.1, each connection a pair of streams.

kubectl 1.30+ first asks for a WebSocket tunnel (KEP-4006); this server declines it, as a server
without that feature does, and kubectl falls back to the `Upgrade: SPDY/3.1` it has always spoken.
Each forwarded connection opens an `error` and a `data` stream (headers streamType, port,
requestID); the data stream carries the TCP bytes to the pod's port: a flagd pod's real loopback
listeners (8013 gRPC/Connect, 8014, 8015, 8016: flagd.FlagdProcess), or an app of the local lab
served on a socket pair (the shop behind frontend-proxy). A port nothing listens on gets the
kubelet's error text.
"""
from __future__ import annotations

import socket
import threading

from labkit.sandbox.http import Request, Response, serve_connection
from labkit.sandbox.kube import spdy
from labkit.sandbox.kube.discovery import NS
from labkit.sandbox.kube.errors import StatusError, bad_request, not_found

PROTOCOL = "portforward.k8s.io"


def handle(cluster, req: Request, name: str, namespace: str) -> Response:
    if namespace != NS:  # other namespaces hold nothing of the lab's
        raise not_found("pods", name)
    cluster.check("create", "pods/portforward", name)
    pod = cluster.get("pods", name)
    upgrade = req.headers.get("upgrade", "").lower()
    if upgrade == "websocket":  # no WebSocket tunnel here: kubectl falls back to SPDY
        raise bad_request("the local lab's API server speaks port-forward over SPDY/3.1 only")
    if not upgrade.startswith("spdy/3.1"):
        raise bad_request("Upgrade request required")
    if pod["status"].get("phase") != "Running":
        raise bad_request(f"unable to upgrade connection: pod {name} is not running")
    uid = pod["metadata"]["uid"]
    return Response(101, b"", headers={"Connection": "Upgrade", "Upgrade": "SPDY/3.1",
                                       "X-Stream-Protocol-Version": PROTOCOL},
                    upgrade=lambda rfile, sock: Session(cluster, name, uid, rfile, sock).run())


def _target(cluster, pod: str, port: int) -> socket.socket | None:
    """A connection to what listens on the pod's port: a Ready flagd pod's own listener, or a registered
    app of the local lab (the shop) served on a socket pair; None if nothing listens there."""
    process = cluster.pod_process(pod)
    if process is not None:
        address = process.address(port)
        try:
            return None if address is None else socket.create_connection(address, timeout=5)
        except OSError:  # it stopped in between
            return None
    labels = cluster.get("pods", pod)["metadata"].get("labels") or {}
    app = cluster.service_app(labels.get("opentelemetry.io/name", ""), port)
    if app is None:
        return None
    mine, theirs = socket.socketpair()
    threading.Thread(target=serve_connection, args=(theirs, app), daemon=True,
                     name=f"labkit-portforward-{pod}:{port}").start()
    return mine


class Session:
    """One kubectl port-forward: stream pairs by requestID, each pumped to a connection to the app."""

    def __init__(self, cluster, pod: str, uid: str, rfile, sock):
        self.cluster, self.pod, self.uid = cluster, pod, uid
        self.conn = spdy.Connection(rfile, sock)
        self.pending: dict[str, dict] = {}   # requestID -> {"error": sid, "data": sid, "port": n}
        self.targets: dict[int, socket.socket] = {}  # data stream -> the app end

    def run(self) -> None:
        try:
            for kind, stream, payload, fin in self.conn.frames():
                if kind == "syn":
                    self.conn.reply(stream)
                    self._opened(stream, payload)
                elif kind == "data":
                    self._to_app(stream, payload, fin)
                else:
                    self._close(stream)
        finally:
            for stream in list(self.targets):
                self._close(stream)

    def _opened(self, stream: int, headers: dict) -> None:
        pair = self.pending.setdefault(headers.get("requestid", str(stream)), {})
        pair[headers.get("streamtype", "")] = stream
        pair["port"] = headers.get("port", "")
        if "error" in pair and "data" in pair:
            self._connect(pair)

    def _connect(self, pair: dict) -> None:
        port = int(pair["port"]) if pair["port"].isdigit() else 0
        try:
            target = _target(self.cluster, self.pod, port)
        except StatusError:
            target = None
        if target is None:
            self.conn.data(pair["error"], (
                f"error forwarding port {port} to pod {self.uid}, uid : failed to execute portforward in "
                f'network namespace "/var/run/netns/cni-labkit": failed to connect to localhost:{port} inside '
                f"namespace, IPv4: dial tcp4 127.0.0.1:{port}: connect: connection refused IPv6 dial tcp6 "
                f"[::1]:{port}: connect: connection refused ").encode(), fin=True)
            self.conn.data(pair["data"], b"", fin=True)
            return
        target.settimeout(None)
        self.targets[pair["data"]] = target
        threading.Thread(target=self._from_app, args=(pair, target), daemon=True).start()

    def _to_app(self, stream: int, payload: bytes, fin: bool) -> None:
        target = self.targets.get(stream)
        if target is None:
            return
        try:
            if payload:
                target.sendall(payload)
            if fin:
                target.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(stream)

    def _from_app(self, pair: dict, target: socket.socket) -> None:
        try:
            while chunk := target.recv(65536):
                self.conn.data(pair["data"], chunk)
            self.conn.data(pair["data"], b"", fin=True)
            self.conn.data(pair["error"], b"", fin=True)
        except OSError:
            pass  # kubectl went away, or the stream was reset

    def _close(self, stream: int) -> None:
        target = self.targets.pop(stream, None)
        if target is not None:
            try:
                target.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            target.close()
