"""The demo services' OpenTelemetry instrumentation in the local lab: one trace per shop request.

Spans nest as the demo's do (a gRPC call is the caller's client span around the callee's server
span) and take the time the local lab takes (the tenant's clock, to the nanosecond). When the root
span ends, its spans reach the tenant together, so a query never sees half a trace; a log line is
written at its moment inside its span.
"""
from __future__ import annotations

import time
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
        self._began = (telemetry.clock() * 1_000_000, time.perf_counter_ns())
        self._last = 0

    @property
    def current(self) -> Span | None:
        return self._open[-1] if self._open else None

    def now_ns(self) -> int:
        """The trace's clock: the tenant's at its start plus the time since, never standing still."""
        wall, counter = self._began
        self._last = max(wall + time.perf_counter_ns() - counter, self._last + 1000)
        return self._last

    @contextmanager
    def span(self, service: str, name: str, kind: str = "server", **attributes):
        parent = self.current
        span = Span(self.now_ns(), 0, service, name, kind, self.trace_id, self.telemetry.new_span_id(),
                    parent.span_id if parent else None, attributes=attributes)
        self._open.append(span)
        try:
            yield span
        finally:
            span.end_ns = self.now_ns()
            self._open.pop()
            self.spans.append(span)
            if not self._open:  # the root ended: the whole trace to the tenant
                self.telemetry.add_spans(sorted(self.spans, key=lambda s: s.start_ns))

    @contextmanager
    def grpc(self, caller: str, service: str, rpc_service: str, method: str):
        """A gRPC call: the caller's client span around the callee's server span (yielded)."""
        name = f"oteldemo.{rpc_service}/{method}"
        rpc = {"rpc.system": "grpc", "rpc.service": f"oteldemo.{rpc_service}", "rpc.method": method}
        with self.span(caller, name, "client", **rpc) as client:
            with self.span(service, name, "server", **rpc) as server:
                try:
                    yield server
                finally:
                    code = GRPC_FAILED_PRECONDITION if server.failed else GRPC_OK
                    server.attributes["rpc.grpc.status_code"] = client.attributes["rpc.grpc.status_code"] = code
                    client.status = "error" if server.failed else "unset"

    @contextmanager
    def http(self, caller: str | None, service: str, method: str, route: str):
        """An HTTP request: the caller's client span around the callee's server span (yielded); with
        `caller` None only the server span (the shop's entry, or a hop from envoy, whose one span
        per request stands for both sides)."""
        name = f"{method} {route}"
        attrs = {"http.request.method": method, "http.route": route}
        if caller is None:
            with self.span(service, name, "server", **attrs) as server:
                yield server
            return
        with self.span(caller, name, "client", **attrs):
            with self.span(service, name, "server", **attrs) as server:
                yield server

    def traceparent(self, span: Span) -> str:
        """The W3C trace context an instrumented client sends from `span`."""
        return f"00-{span.trace_id}-{span.span_id}-01"

    def event(self, span: Span, name: str, **attributes) -> None:
        span.events.append({"span_event.name": name, "timestamp": self.now_ns(), **attributes})

    def fail(self, span: Span, message: str) -> None:
        """The span ends in error (Activity.SetStatus(Error)); Dynatrace counts the request failed."""
        span.failed, span.status = True, "error"
        span.attributes["span.status_message"] = message
