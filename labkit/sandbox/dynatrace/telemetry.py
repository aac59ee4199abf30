"""What the local lab's Dynatrace tenant "knows": spans, logs, entities, events and problems.

The shop writes into it as it serves requests; the tenant reads from it to answer API calls. One
lock guards everything, and every method holds it only briefly. `Telemetry` is the one door: it
composes a part per subject, each in its module, over one shared `Context` (lock, seeded random
source, clock): the entities (`topology`), the spans and request counters (`spans`), the log records
(`logs`), the events and problems (`davis`).

One tenant can hold several labs' data (seats on a shared tenant): every record, log, entity and
problem carries the `k8s.cluster.name` of the lab that produced it, which each lab's `Collector`
stamps on as the lab's OpenTelemetry collector would. Services are split by cluster as Service
Detection v2's default rule splits them (k8s.namespace.name + k8s.cluster.uid, on tenants since SaaS
1.317), so each seat's `cart` is its own SERVICE entity, and problems open per entity. With
split_by_cluster=False the tenant is an older one (split by namespace only): every seat's `cart` is
ONE entity, its counters still kept per cluster (the metrics' k8s.cluster.name dimension).
"""
from __future__ import annotations

import random
import threading
from typing import Callable

# The records' types and constants, importable from here as they always were.
from labkit.sandbox.dynatrace.context import Context
from labkit.sandbox.dynatrace.davis import (CHANGE_LOOKBACK_MS, MAX_EVENTS, OPENPIPELINE,  # noqa: F401
                                            PROBLEM_CATEGORIES, Davis, Event, Problem)
from labkit.sandbox.dynatrace.logs import (CART, ERROR_LEVELS, MAX_ERROR_LOGS, MAX_INFO_LOGS,  # noqa: F401
                                           REDIS_ERROR, Logs, log_status)
from labkit.sandbox.dynatrace.spans import (BASELINE_PER_MINUTE, DEFAULT_PER_MINUTE, MAX_SPANS,  # noqa: F401
                                            Span, Spans)
from labkit.sandbox.dynatrace.times import now_ms
from labkit.sandbox.dynatrace.topology import (DEFAULT_CLUSTER, POD_TYPE, SERVICES, MonitoredEntity,  # noqa: F401
                                               Topology, pod_id, service_id)


class Telemetry:
    """Thread-safe store of the local lab's observability data."""

    def __init__(self, timings, seed: int | None = None, cluster: str | None = DEFAULT_CLUSTER,
                 split_by_cluster: bool = True):
        self.timings = timings
        self.split_by_cluster = split_by_cluster
        self.clock = now_ms  # tests may replace it
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._context = context = Context(self._lock, self._rng, timings, lambda: self.clock())
        self.topology = Topology(self._lock, split_by_cluster)
        self.entities = self.topology.entities  # (cluster, service) -> entity
        self._spans = Spans(context, self.topology)
        self._logs = Logs(context, self.topology)
        self._davis = Davis(context)
        self._joined: set[str] = set()
        now = self.clock()
        self.environment = MonitoredEntity("environment", "environment",
                                           now - int(timings.seed_hours * 3600_000), now,
                                           "ENVIRONMENT")
        if cluster:  # None: a shared tenant, whose labs join as they start
            self.join(cluster)

    def join(self, cluster: str) -> None:
        """A lab whose collector starts sending here: its services, with a calm past."""
        with self._lock:
            if cluster in self._joined:
                return
            self._joined.add(cluster)
            now = self.clock()
            seed_start = now - int(self.timings.seed_hours * 3600_000)
            for name in SERVICES:
                self.topology.service(name, cluster, seed_start).last_seen = now
            self._spans.seed(seed_start, now, cluster)  # the counters first, then the logs: the
            self._logs.seed(seed_start, now, cluster)  # random source's order, as it always was

    @property
    def on_log(self) -> Callable[[dict], None] | None:
        """Each log record once stored goes here (the tenant's OpenPipeline)."""
        return self._logs.on_log

    @on_log.setter
    def on_log(self, hook: Callable[[dict], None] | None) -> None:
        self._logs.on_log = hook

    # ----- ids ------------------------------------------------------------------------------
    def new_trace(self) -> tuple[str, str]:
        with self._lock:
            return self._context.hex(32), self._context.hex(16)

    def new_span_id(self) -> str:
        with self._lock:
            return self._context.hex(16)

    # ----- spans and requests (spans.py) ----------------------------------------------------
    def add_spans(self, spans: list[Span], cluster: str = DEFAULT_CLUSTER) -> None:
        self._spans.add_spans(spans, cluster)

    def series(self) -> list[tuple[MonitoredEntity, str]]:
        return self._spans.series()

    def minute_counts(self, entity_id: str, first_minute: int, last_minute: int,
                      cluster: str | None = None) -> list[tuple[int, int] | None]:
        return self._spans.minute_counts(entity_id, first_minute, last_minute, cluster)

    def records(self, service: str | None = None, cluster: str | None = None) -> list[Span]:
        return self._spans.records(service, cluster)

    def spans(self, start: int, end: int, cluster: str | None = None) -> list[Span]:
        return self._spans.spans(start, end, cluster)

    # ----- logs (logs.py) -------------------------------------------------------------------
    def log_info(self, service: str, content: str, trace_id: str, span_id: str, pod: str,
                 at: int | None = None, cluster: str = DEFAULT_CLUSTER,
                 attributes: dict | None = None) -> dict:
        return self._logs.log_info(service, content, trace_id, span_id, pod, at, cluster, attributes)

    def log_cart(self, level: str, content: str, pod: str = "cart-pod-test",
                 cluster: str = DEFAULT_CLUSTER, attributes: dict | None = None) -> dict:
        return self._logs.log_cart(level, content, pod, cluster, attributes)

    def log_cart_redis_error(self, trace_id: str, span_id: str, pod: str, at: int | None = None,
                             cluster: str = DEFAULT_CLUSTER, attributes: dict | None = None) -> dict:
        return self._logs.log_cart_redis_error(trace_id, span_id, pod, at, cluster, attributes)

    def logs(self, start: int, end: int, cluster: str | None = None) -> list[dict]:
        return self._logs.logs(start, end, cluster)

    # ----- events and problems (davis.py) ---------------------------------------------------
    def davis_event(self, name: str, event_type: str, description: str, entity: MonitoredEntity,
                    properties: dict[str, str], t: int, cluster: str | None) -> Event:
        return self._davis.davis_event(name, event_type, description, entity, properties, t, cluster)

    def check_problems(self) -> None:
        self._davis.check_problems()

    def problems(self) -> list[Problem]:
        return self._davis.problems()

    def change_evidence(self, problem: Problem) -> list[Event]:
        return self._davis.change_evidence(problem)

    def add_event(self, event_type: str, title: str, entity: MonitoredEntity, start: int,
                  end: int, properties: dict[str, str]) -> Event:
        return self._davis.add_event(event_type, title, entity, start, end, properties)

    def events(self) -> list[Event]:
        return self._davis.events()

    # ----- entities (topology.py) -----------------------------------------------------------
    def entity_list(self) -> list[MonitoredEntity]:
        return self.topology.entity_list()

    def entity_of(self, service: str, cluster: str) -> MonitoredEntity | None:
        return self.topology.entity_of(service, cluster)

    def entity_by_id(self, entity_id: str) -> MonitoredEntity | None:
        return self.topology.entity_by_id(entity_id)
