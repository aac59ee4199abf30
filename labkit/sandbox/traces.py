"""The demo services' OpenTelemetry instrumentation in the local lab: one trace per shop request.

Spans nest as the demo's do (a gRPC call is the caller's client span around the callee's server
span) on a clock of their own, each span taking `work_ms`. When the root span ends, the trace is
anchored so that it ends now, and its spans and logs reach the tenant together, so a query never
sees half a trace and a log always falls inside its span.
"""
from __future__ import annotations

from contextlib import contextmanager

from labkit.sandbox.dynatrace.telemetry import Span

GRPC_OK, GRPC_FAILED_PRECONDITION = 0, 9


class Trace:
    """The spans of one trace as they are made; `telemetry.add_spans` gets them at the root's end."""

    def __init__(self, telemetry):
        self.telemetry = telemetry
        self.trace_id = telemetry.new_trace()[0]
        self.spans: list[Span] = []
        self._open: list[Span] = []
        self._cursor = 0  # ns since the trace began
        self._after: list = []  # (ns offset, fn(at_ms)): logs written when the trace lands

    @property
    def current(self) -> Span | None:
        return self._open[-1] if self._open else None

    @contextmanager
    def span(self, service: str, name: str, kind: str = "server", work_ms: float = 1.0, **attributes):
        parent = self.current
        span = Span(self._cursor, 0, service, name, kind, self.trace_id, self.telemetry.new_span_id(),
                    parent.span_id if parent else None, attributes=attributes)
        self._open.append(span)
        self._tick(work_ms / 2)
        try:
            yield span
        finally:
            self._tick(work_ms / 2)
            span.end_ns = self._cursor
            self._open.pop()
            self.spans.append(span)
            if not self._open:
                self._land()

    @contextmanager
    def grpc(self, caller: str, service: str, rpc_service: str, method: str, work_ms: float = 1.0):
        """A gRPC call: the caller's client span around the callee's server span (yielded)."""
        name = f"oteldemo.{rpc_service}/{method}"
        rpc = {"rpc.system": "grpc", "rpc.service": f"oteldemo.{rpc_service}", "rpc.method": method}
        with self.span(caller, name, "client", 0.4, **rpc) as client:
            with self.span(service, name, "server", work_ms, **rpc) as server:
                try:
                    yield server
                finally:
                    code = GRPC_FAILED_PRECONDITION if server.failed else GRPC_OK
                    server.attributes["rpc.grpc.status_code"] = client.attributes["rpc.grpc.status_code"] = code
                    client.status = "error" if server.failed else "unset"

    @contextmanager
    def http(self, caller: str | None, service: str, method: str, route: str, work_ms: float = 1.0):
        """An HTTP request (a root one when `caller` is None): the callee's server span (yielded)."""
        name = f"{method} {route}"
        attrs = {"http.request.method": method, "http.route": route}
        if caller is None:
            with self.span(service, name, "server", work_ms, **attrs) as server:
                yield server
            return
        with self.span(caller, name, "client", 0.4, **attrs):
            with self.span(service, name, "server", work_ms, **attrs) as server:
                yield server

    def event(self, span: Span, name: str, **attributes) -> None:
        span.events.append({"span_event.name": name, "_offset": self._cursor, **attributes})

    def fail(self, span: Span, message: str) -> None:
        """The span ends in error (Activity.SetStatus(Error)); Dynatrace counts the request failed."""
        span.failed, span.status = True, "error"
        span.attributes["span.status_message"] = message

    def later(self, fn) -> None:
        """Call fn(at_ms) when the trace lands, at this moment of the trace (a log line)."""
        self._after.append((self._cursor, fn))

    def _tick(self, ms: float) -> None:
        self._cursor += max(int(ms * 1e6), 1000)

    def _land(self) -> None:
        base = self.telemetry.clock() * 1_000_000 - self._cursor  # the trace ends now
        for span in self.spans:
            span.start_ns += base
            span.end_ns += base
            for ev in span.events:
                ev["timestamp"] = base + ev.pop("_offset")
        self.telemetry.add_spans(sorted(self.spans, key=lambda s: s.start_ns))
        for offset, fn in self._after:
            fn((base + offset) // 1_000_000)
