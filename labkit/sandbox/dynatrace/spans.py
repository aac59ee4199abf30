"""The spans the shop's services export, and the requests they count.

Request counts (server spans) are kept as per-service, per-minute counters so a 24-hour chart at
1-minute resolution is a cheap lookup; the individual spans are kept in a bounded list.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from labkit.sandbox.dynatrace.context import Context
from labkit.sandbox.dynatrace.times import MINUTE_MS
from labkit.sandbox.dynatrace.topology import DEFAULT_CLUSTER, SERVICES, MonitoredEntity, Topology

# Baseline requests per minute per service while the lab is calm (seeded history and shopper).
BASELINE_PER_MINUTE = {"cart": 4, "frontend": 12, "frontend-proxy": 14, "product-catalog": 8,
                       "checkout": 1, "currency": 6, "recommendation": 3, "ad": 3}
DEFAULT_PER_MINUTE = 1

MAX_SPANS = 30_000  # about half an hour of the background shopper's traces


@dataclass(slots=True)
class Span:
    """One span as the demo's OTel SDKs export it; a server span is one request of its service."""
    start_ns: int  # epoch ns, UTC
    end_ns: int
    service: str
    name: str
    kind: str  # server | client | internal
    trace_id: str
    span_id: str
    parent_id: str | None = None
    cluster: str = DEFAULT_CLUSTER  # k8s.cluster.name (the lab's collector adds it)
    failed: bool = False  # request.is_failed: Dynatrace's failure detection on a server span
    status: str = "unset"  # span.status_code: ok | error | unset
    attributes: dict = field(default_factory=dict)  # rpc.*, http.*, user.id ...
    events: list = field(default_factory=list)  # span events: {"span_event.name", "timestamp", ...}
    record: dict | None = field(default=None, repr=False, compare=False)  # as Grail returns it (grail.py)

    @property
    def time(self) -> int:
        return self.start_ns // 1_000_000

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


class Spans:
    """The spans kept and the requests counted, per (service entity, cluster) and minute."""

    def __init__(self, context: Context, topology: Topology):
        self._ctx = context
        self._lock = context.lock
        self._topology = topology
        # (entity id, cluster) -> minute -> [requests, failed]
        self._minutes: dict[tuple[str, str], dict[int, list[int]]] = {}
        self._spans: deque[Span] = deque(maxlen=MAX_SPANS)

    # ----- writing --------------------------------------------------------------------------
    def seed(self, start: int, end: int, cluster: str) -> None:
        """Baseline history so charts have a past: a few calm requests a minute, no failures
        (called under the lock)."""
        for service in SERVICES:
            rate = BASELINE_PER_MINUTE.get(service, DEFAULT_PER_MINUTE)
            buckets = self._minutes.setdefault((self._topology.service(service, cluster, start).entity_id,
                                                cluster), {})
            for minute in range(start // MINUTE_MS, end // MINUTE_MS):
                n = self._poisson(rate)
                if n:
                    buckets[minute] = [n, 0]

    def _poisson(self, lam: float) -> int:
        # Knuth's method: fine for the small rates used here.
        limit, k, p = pow(2.718281828459045, -lam), 0, 1.0
        while True:
            p *= self._ctx.rng.random()
            if p <= limit:
                return k
            k += 1

    def add_spans(self, spans: list[Span], cluster: str = DEFAULT_CLUSTER) -> None:
        """A finished trace's spans from `cluster`'s collector; each server span counts as one
        request of its service (the cluster's own entity)."""
        with self._lock:
            for span in spans:
                span.cluster = cluster
                if span.kind == "server":
                    self._count(span.service, span.time, span.failed, cluster)
                self._spans.append(span)

    def _count(self, service: str, t: int, failed: bool, cluster: str) -> None:
        entity = self._topology.service(service, cluster, t)
        buckets = self._minutes.setdefault((entity.entity_id, cluster), {})
        slot = buckets.get(t // MINUTE_MS)
        if slot is None:
            slot = buckets[t // MINUTE_MS] = [0, 0]
        slot[0] += 1
        slot[1] += failed
        entity.last_seen = max(entity.last_seen, t)

    # ----- reading --------------------------------------------------------------------------
    def series(self) -> list[tuple[MonitoredEntity, str]]:
        """(service entity, k8s.cluster.name) of every request counter: the metrics' dimensions."""
        with self._lock:
            return [(self._topology.get(eid), cluster) for eid, cluster in self._minutes]

    def minute_counts(self, entity_id: str, first_minute: int, last_minute: int,
                      cluster: str | None = None) -> list[tuple[int, int] | None]:
        """[(requests, failures) or None] of a service entity (of one cluster's spans, or all) for
        each minute in [first, last): None = no data."""
        with self._lock:
            parts = [b for (eid, c), b in self._minutes.items()
                     if eid == entity_id and cluster in (None, c)]
            out = []
            for m in range(first_minute, last_minute):
                slots = [b[m] for b in parts if m in b]
                out.append((sum(x[0] for x in slots), sum(x[1] for x in slots)) if slots else None)
            return out

    def records(self, service: str | None = None, cluster: str | None = None) -> list[Span]:
        """The requests served (server spans), oldest first."""
        with self._lock:
            return [r for r in self._spans if r.kind == "server" and service in (None, r.service)
                    and cluster in (None, r.cluster)]

    def spans(self, start: int, end: int, cluster: str | None = None) -> list[Span]:
        """Every span (of `cluster`, or all) that started in [start, end) epoch ms, oldest first."""
        lo, hi = start * 1_000_000, end * 1_000_000
        with self._lock:
            return [s for s in self._spans if lo <= s.start_ns < hi and cluster in (None, s.cluster)]
