"""One running flagd container of the local lab: its four ports as real loopback listeners.

- 8013: gRPC (HTTP/2: evaluation v1/v2) and Connect over HTTP/1.1 on the same port, as flagd's h2c
  server does: the first bytes of a connection decide (the HTTP/2 preface goes to the grpcio server,
  anything else to the HTTP/1.1 handler);
- 8014: management (`/healthz`, `/readyz`, `/metrics`), HTTP/1.1;
- 8015: flagd.sync.v1, gRPC only (a grpcio server of its own, as flagd's is a plain grpc-go server);
- 8016: OFREP, HTTP/1.1.
Each listens on 127.0.0.1 at a port the OS picks; `address(port)` says where. The kubelet side
(controllers.py) starts a process when the container starts and stops it when the pod terminates, so
a client connected to it sees the pod go, as it would on a cluster.
"""
from __future__ import annotations

import socket
import threading
import time
from concurrent import futures

import grpc

from labkit.sandbox.flagd import connect, evaluation, management, sync
from labkit.sandbox.flagd.evaluate import FlagSet
from labkit.sandbox.flagd.ofrep import OFREP_PORT, serve as serve_ofrep
from labkit.sandbox.http import Request, Response, serve_connection

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
WORKERS = 32  # each open EventStream/SyncFlags holds one of the server's threads


class FlagdProcess:
    """flagd's servers for one pod: start(), load(flags), address(port), serve(req, port, path), stop()."""

    def __init__(self, name: str, keep_alive: float = evaluation.KEEP_ALIVE):
        self.name, self.keep_alive = name, keep_alive
        self.flags = FlagSet()  # flagd's empty store until the sync source has been read
        self.loaded = False
        self.metrics = management.Metrics()
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listeners: dict[int, socket.socket] = {}
        self._addresses: dict[int, tuple[str, int]] = {}
        self._servers: list[grpc.Server] = []
        self._evaluation_port = 0
        self._apps = {evaluation.PORT: lambda req, path: connect.serve(self.flags, req, path, self.metrics,
                                                                     self.keep_alive, self.stopped),
                      management.PORT: lambda req, path: management.serve(self.ready, self.metrics, req, path),
                      OFREP_PORT: lambda req, path: serve_ofrep(self.flags, req, OFREP_PORT, path)}

    # ---- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> "FlagdProcess":
        self._evaluation_port = self._grpc_server(evaluation.add_servicers)
        self._addresses[sync.PORT] = ("127.0.0.1", self._grpc_server(sync.add_servicer))
        self._listen(evaluation.PORT, self._evaluation_connection)
        for port in (management.PORT, OFREP_PORT):
            self._listen(port, lambda sock, port=port: self._http_connection(sock, port))
        return self

    def load(self, flags: FlagSet) -> None:
        """The sync source has been read: serve these flags (readyz turns 200)."""
        self.flags, self.loaded = flags, True

    @property
    def ready(self) -> bool:
        return self.loaded and not self.stopped.is_set()

    def stop(self) -> None:
        """flagd exits: listeners close, open connections and streams end."""
        if self.stopped.is_set():
            return
        self.stopped.set()
        for server in self._servers:
            server.stop(grace=1.0)  # GOAWAY first, as Go's Shutdown does; its connections close below
        with self._lock:
            sockets = [*self._listeners.values(), *self._open]
            self._listeners.clear()
            self._open.clear()
        for sock in sockets:
            _close(sock)

    # ---- what clients reach --------------------------------------------------------------------------
    def address(self, port: int) -> tuple[str, int] | None:
        """Where the pod's `port` listens on loopback; None for a port flagd does not open, or once stopped."""
        return None if self.stopped.is_set() else self._addresses.get(port)

    def serve(self, req: Request, port: int, path: str) -> Response | None:
        """An HTTP/1.1 request for the pod's `port` (the API server's proxies); None where no HTTP/1.1
        server listens (nothing there, or gRPC-only 8015)."""
        app = None if self.stopped.is_set() else self._apps.get(port)
        return None if app is None else app(req, path)

    # ---- servers ---------------------------------------------------------------------------------------
    def _grpc_server(self, add) -> int:
        server = grpc.server(futures.ThreadPoolExecutor(WORKERS, thread_name_prefix=f"flagd-{self.name}"),
                             options=[("grpc.so_reuseport", 0)])
        add(server, self)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._servers.append(server)
        return port

    def _listen(self, port: int, handle) -> None:
        sock = socket.create_server(("127.0.0.1", 0))
        self._listeners[port] = sock
        self._addresses[port] = sock.getsockname()[:2]
        threading.Thread(target=self._accept, args=(sock, handle), daemon=True,
                         name=f"flagd-{self.name}:{port}").start()

    def _accept(self, listener: socket.socket, handle) -> None:
        while not self.stopped.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                return  # closed: the process stopped
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self.stopped.is_set():
                    _close(sock)
                    return
                self._open.add(sock)
            threading.Thread(target=self._connection, args=(sock, handle), daemon=True).start()

    def _connection(self, sock: socket.socket, handle) -> None:
        try:
            handle(sock)
        finally:
            with self._lock:
                self._open.discard(sock)
            _close(sock)

    def _http_connection(self, sock: socket.socket, port: int) -> None:
        serve_connection(sock, lambda req: self._apps[port](req, req.path.lstrip("/")))

    def _evaluation_connection(self, sock: socket.socket) -> None:
        """8013: HTTP/2 (gRPC) goes to the grpcio server, HTTP/1.1 (Connect) to the HTTP handler."""
        if not _starts_with_preface(sock):
            return self._http_connection(sock, evaluation.PORT)
        try:
            upstream = socket.create_connection(("127.0.0.1", self._evaluation_port))
        except OSError:
            return
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._open.add(upstream)
        try:
            back = threading.Thread(target=_pump, args=(upstream, sock), daemon=True)
            back.start()
            _pump(sock, upstream)
            back.join()
        finally:
            with self._lock:
                self._open.discard(upstream)
            _close(upstream)


def _starts_with_preface(sock: socket.socket) -> bool:
    """Peek (without consuming) until the first bytes show HTTP/2's preface or something else."""
    seen = b""
    while len(seen) < len(PREFACE) and PREFACE.startswith(seen):
        try:
            seen = sock.recv(len(PREFACE), socket.MSG_PEEK)
        except OSError:
            return False
        if not seen:
            return False
        if PREFACE.startswith(seen) and len(seen) < len(PREFACE):
            time.sleep(0.001)  # a client that sent the preface in pieces
    return seen == PREFACE


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
        target.shutdown(socket.SHUT_WR)
    except OSError:
        _close(target)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
