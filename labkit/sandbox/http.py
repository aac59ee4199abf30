"""A small threaded HTTP/1.1 server for the local lab's APIs, with fault knobs for tests.

Each API is an `app(request) -> Response`; a Response whose body is an iterator is streamed with
chunked encoding (Kubernetes watches). Request bodies may be chunked (`kubectl create --raw`).
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

JSON = "application/json"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case keys
    body: bytes = b""

    def json(self):
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int = 200
    body: object = b""  # bytes, str, a JSON-able value, or an iterator of bytes (streamed)
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)


def json_response(obj, status: int = 200, **headers) -> Response:
    return Response(status, obj, JSON, dict(headers))


@dataclass
class Fault:
    """Answer `count` matching requests with `status` (or delay them); -1 means forever."""

    status: int | None = None
    retry_after: str | None = None
    latency: float = 0.0
    count: int = -1
    path_prefix: str = ""
    method: str | None = None
    body: object = None  # raw body for a malformed answer, else a generic error JSON


class Faults:
    """Fault knobs shared by one server's requests; tests add and clear them."""

    def __init__(self):
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.seen = 0  # requests that matched a fault

    def add(self, **kw) -> Fault:
        fault = Fault(**kw)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, req: Request) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.count == 0 or not req.path.startswith(fault.path_prefix):
                    continue
                if fault.method and fault.method != req.method:
                    continue
                if fault.count > 0:
                    fault.count -= 1
                self.seen += 1
                return fault
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "labkit-local-lab"
    disable_nagle_algorithm = True  # headers and body go out at once: no 40 ms delayed-ACK stall

    def log_message(self, *args):  # quiet: the lab's own output matters, not access logs
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self):
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        req = Request(self.command, url.path, query, {k.lower(): v for k, v in self.headers.items()},
                      self._read_body())
        server: LabServer = self.server  # type: ignore[assignment]
        fault = server.faults.take(req)
        if fault and fault.latency:
            time.sleep(fault.latency)
        if fault and fault.status:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            body = fault.body if fault.body is not None else {
                "error": {"code": fault.status, "message": f"injected fault {fault.status}"}}
            resp = Response(fault.status, body, JSON, headers)
        else:
            try:
                resp = server.app(req)
            except Exception as exc:  # a bug in the sandbox must not kill the connection silently
                resp = json_response({"error": {"code": 500, "message": f"sandbox error: {exc!r}"}}, 500)
        self._send(resp)

    def _send(self, resp: Response):
        body = resp.body
        if isinstance(body, Iterator):
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Transfer-Encoding", "chunked")
            for k, v in resp.headers.items():
                self.send_header(k, v)
            self.end_headers()
            try:
                for chunk in body:
                    if chunk:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError, OSError):
                self.close_connection = True
            finally:
                close = getattr(body, "close", None)
                if close:
                    close()
            return
        if isinstance(body, str):
            data = body.encode()
        elif isinstance(body, (bytes, bytearray)):
            data = bytes(body)
        else:
            data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


class LabServer(ThreadingHTTPServer):
    """One API of the local lab on 127.0.0.1; port 0 picks a free port."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, app: Callable[[Request], Response], port: int = 0, host: str = "127.0.0.1"):
        super().__init__((host, port), _Handler)
        self.app = app
        self.faults = Faults()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "LabServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"labkit-{self.url}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def handle_error(self, request, client_address) -> None:
        """A client that hangs up first (a timeout, Ctrl-C) is normal here, not worth a traceback."""
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)
