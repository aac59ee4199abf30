"""The loopback HTTP/1.1 server and the route table every local-lab API uses, with fault knobs for tests.

Each API is a `Router`: its routes as data, 404 vs 405 decided here once, the error body shaped by
that API's own `HttpError` (Kubernetes Status, Dynatrace error envelope, ...). A Response whose body
is an iterator is streamed with chunked encoding (watches, `logs -f`); request bodies may be chunked
(`kubectl create --raw`).
"""
from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

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
    #: a connection upgrade (status 101): called as upgrade(reader, socket) once the headers are sent;
    #: it owns the connection until it returns (port-forward's SPDY session)
    upgrade: Callable | None = None


def json_response(obj, status: int = 200, **headers) -> Response:
    return Response(status, obj, JSON, dict(headers))


class HttpError(Exception):
    """An answer other than success, with its wire status. Each API subclasses it to shape the body
    its clients parse (moto's exceptions carry the wire code the same way)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message

    def response(self) -> Response:
        return json_response({"error": {"code": self.status, "message": self.message}}, self.status)


@dataclass(frozen=True)
class Route:
    """`path` may hold `{name}` (one segment, percent-decoded) and a last `{name:path}` (the rest).
    The handler is called as handler(state, request, **params)."""

    path: str
    handler: Callable[..., Response]
    methods: tuple[str, ...] = ("GET",)

    def __post_init__(self):
        pattern = re.sub(r"\{(\w+)(:path)?\}",
                         lambda m: f"(?P<{m[1]}>{'.*' if m[2] else '[^/]+'})", self.path)
        object.__setattr__(self, "_regex", re.compile(f"^{pattern}$"))

    def match(self, path: str) -> dict[str, str] | None:
        found = self._regex.match(path)  # type: ignore[attr-defined]
        return {k: unquote(v) for k, v in found.groupdict().items()} if found else None


@dataclass(frozen=True)
class Mount:
    """Every path under `prefix` goes to another router (another API with its own error shape)."""

    prefix: str
    router: "Router"


class Router:
    """One API: the first route whose path and method match answers; a path that matches with
    another method is a 405, no match a 404 (starlette's rule); `error` shapes both, and every
    HttpError a handler raises, in that API's own body."""

    def __init__(self, routes: list, error: Callable[[int, str], HttpError], state=None,
                 name: str = "the local lab's API"):
        self.routes, self.error, self.state, self.name = routes, error, state, name

    def bind(self, state) -> "Router":
        """The same table over one model instance (tables are module-level data)."""
        return Router(self.routes, self.error, state, self.name)

    def __call__(self, req: Request) -> Response:
        path = req.path.rstrip("/") or "/"
        try:
            return self._dispatch(req, path)
        except HttpError as err:
            return err.response()

    def _dispatch(self, req: Request, path: str) -> Response:
        allowed: list[str] = []
        for route in self.routes:
            if isinstance(route, Mount):
                if path == route.prefix or path.startswith(route.prefix.rstrip("/") + "/"):
                    return route.router.bind(self.state)(req)
                continue
            params = route.match(path)
            if params is None:
                continue
            methods = route.methods + (("HEAD",) if "GET" in route.methods else ())
            if "*" in methods or req.method in methods:
                return route.handler(self.state, req, **params)
            allowed += [m for m in route.methods if m not in allowed]
        if allowed:
            raise self.error(405, f"method {req.method} is not allowed on {path} (allowed: "
                                  f"{', '.join(allowed)})")
        raise self.error(404, f"{req.method} {path} is not an endpoint of {self.name}")


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

    def _upgrade(self, resp: Response):
        """101 Switching Protocols, then the connection is the upgrade's until it returns."""
        self.send_response(101)
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        try:
            resp.upgrade(self.rfile, self.connection)
        except OSError:
            pass  # the client went away mid-session

    def _send(self, resp: Response):
        if resp.upgrade is not None:
            return self._upgrade(resp)
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


class _PipeHandler(_Handler):
    disable_nagle_algorithm = False  # a socketpair is not TCP


def serve_connection(sock, app: Callable[[Request], Response]) -> None:
    """Serve HTTP/1.1 from `app` on one already connected socket until it closes (a port-forward's
    data stream reaching an app of the local lab as if it were the pod's port)."""
    server = type("Pipe", (), {"app": staticmethod(app), "faults": Faults()})()
    try:
        _PipeHandler(sock, ("127.0.0.1", 0), server)
    except OSError:
        pass
    finally:
        sock.close()


class LabServer(ThreadingHTTPServer):
    """One API of the local lab on 127.0.0.1; port 0 picks a free port."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, app: Callable[[Request], Response], port: int = 0, host: str = "127.0.0.1",
                 tls=None):
        super().__init__((host, port), _Handler)
        self.app = app
        self.tls = tls  # an ssl.SSLContext: serve https (the local lab's Kubernetes API)
        self.faults = Faults()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    def get_request(self):
        """With TLS, the handshake happens in the request's own thread (on its first read), so a
        slow or plain-http client cannot stall the accept loop."""
        sock, addr = super().get_request()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

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

        import ssl

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError, ssl.SSLError)):
            super().handle_error(request, client_address)
