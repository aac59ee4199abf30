"""What the local lab's Dynatrace tenant "knows": spans, logs, entities, events and problems.

The shop writes into it as it serves requests; the tenant reads from it to answer API calls. One
lock guards everything, and every method holds it only briefly. Request counts (server spans) are
kept as per-service, per-minute counters so a 24-hour chart at 1-minute resolution is a cheap
lookup; the individual spans, logs and events are kept in bounded lists.

One tenant can hold several labs' data (seats on a shared tenant): every record, log, entity and
problem carries the `k8s.cluster.name` of the lab that produced it, which each lab's `Collector`
stamps on as the lab's OpenTelemetry collector would. Services are split by cluster as Service
Detection v2's default rule splits them (k8s.namespace.name + k8s.cluster.uid, on tenants since SaaS
1.317), so each seat's `cart` is its own SERVICE entity, and problems open per entity. With
split_by_cluster=False the tenant is an older one (split by namespace only): every seat's `cart` is
ONE entity, its counters still kept per cluster (the metrics' k8s.cluster.name dimension).
"""
from __future__ import annotations

import hashlib
import itertools
import random
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from labkit.sandbox.dynatrace.times import MINUTE_MS, iso, now_ms

CART = "cart"
DEFAULT_CLUSTER = "labkit-local"  # k8s.cluster.name of a local lab that was given none

# The OpenTelemetry demo's services as they appear in the lab (OTel-only "unified" services).
SERVICES = ("cart", "frontend", "frontend-proxy", "product-catalog", "checkout", "currency",
            "payment", "shipping", "quote", "email", "recommendation", "ad", "accounting",
            "fraud-detection", "load-generator")

# Baseline requests per minute per service while the lab is calm (seeded history and shopper).
BASELINE_PER_MINUTE = {"cart": 4, "frontend": 12, "frontend-proxy": 14, "product-catalog": 8,
                       "checkout": 1, "currency": 6, "recommendation": 3, "ad": 3}
DEFAULT_PER_MINUTE = 1

REDIS_ERROR = ("Can't access cart storage. System.ApplicationException: Wasn't able to connect to "
               "redis \n  at cart.cartstore.ValkeyCartStore.EmptyCartAsync(String userId) in "
               "/usr/src/app/src/cartstore/ValkeyCartStore.cs:line 177")
CHANGE_LOOKBACK_MS = 30 * MINUTE_MS  # a change this long before a problem counts as evidence

# Dynatrace normalises loglevel and sets status ERROR for all of these (fidelity.md).
ERROR_LEVELS = frozenset({"SEVERE", "ERROR", "CRITICAL", "ALERT", "FATAL", "EMERGENCY"})

MAX_SPANS = 30_000  # about half an hour of the background shopper's traces
MAX_INFO_LOGS = 20_000
MAX_ERROR_LOGS = 20_000
MAX_EVENTS = 5_000


def log_status(level: str) -> str:
    """The `status` Dynatrace derives from a log's level."""
    level = level.upper()
    if level in ERROR_LEVELS:
        return "ERROR"
    if level in ("WARN", "WARNING"):
        return "WARN"
    return "INFO" if level in ("INFO", "DEBUG", "TRACE", "NOTICE") else "NONE"


def service_id(name: str, cluster: str = DEFAULT_CLUSTER) -> str:
    """A stable Dynatrace-shaped id for a service of a cluster (same name and cluster, same id,
    every run); the default cluster keeps the ids a local lab always had."""
    key = name if cluster == DEFAULT_CLUSTER else f"{name}\x00{cluster}"
    return "SERVICE-" + hashlib.sha256(key.encode()).hexdigest()[:16].upper()


POD_TYPE = "CLOUD_APPLICATION_INSTANCE"  # a Kubernetes pod, as the lab's screenshots show it
OPENPIPELINE = "OPENPIPELINE_DATA_EXTRACTION"  # event.provider of a pipeline's Davis event
# Davis event types that open a problem, and the problem's category (Grail's event.category);
# every other type is info-like: an event, no problem (reference §D, "Info events ... don't result
# in the creation of a new problem").
PROBLEM_CATEGORIES = {"AVAILABILITY_EVENT": "AVAILABILITY", "ERROR_EVENT": "ERROR",
                      "PERFORMANCE_EVENT": "SLOWDOWN", "RESOURCE_CONTENTION_EVENT": "RESOURCE_CONTENTION",
                      "CUSTOM_ALERT": "CUSTOM_ALERT"}


def pod_id(pod: str, cluster: str = DEFAULT_CLUSTER) -> str:
    """A stable id for a pod of a cluster (the same pod name, the same entity)."""
    return POD_TYPE + "-" + hashlib.sha256(f"{pod}\x00{cluster}".encode()).hexdigest()[:16].upper()


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

    @property
    def time(self) -> int:
        return self.start_ns // 1_000_000

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6



@dataclass
class MonitoredEntity:
    entity_id: str
    name: str
    first_seen: int
    last_seen: int
    type: str = "SERVICE"
    cluster: str | None = None  # k8s.cluster.name of the workload behind a service
    runs: str | None = None  # a pod's: the service entity its logs name (its topology link)

    def stub(self) -> dict:
        return {"entityId": {"id": self.entity_id, "type": self.type}, "name": self.name}


@dataclass
class Event:
    event_id: str
    correlation_id: str
    event_type: str
    title: str
    start: int
    end: int
    entity: MonitoredEntity
    properties: dict[str, str]
    description: str = ""
    provider: str = "EVENTS_REST_API_INGEST"
    cluster: str | None = None  # k8s.cluster.name of the record a pipeline made it from
    records: int = 1  # records that made or refreshed it

    def status(self, now: int) -> str:
        return "OPEN" if self.end > now else "CLOSED"


@dataclass
class Problem:
    problem_id: str
    display_id: str
    start: int
    entity: MonitoredEntity
    last_error: int  # when a record last refreshed one of its events
    error_count: int  # records behind its events
    title: str  # its first event's name (the resolved event.name)
    category: str = "ERROR"  # event.category, from the event type
    end: int = -1  # -1 while open, as the classic API shows it
    events: list[Event] = field(default_factory=list)
    description: str = ""  # markdown: its first event's description (the pod's supportInfo ...)
    clusters: set[str] = field(default_factory=set)  # k8s.cluster.name of the logs behind it

    @property
    def open(self) -> bool:
        return self.end == -1


class Telemetry:
    """Thread-safe store of the local lab's observability data."""

    def __init__(self, timings, seed: int | None = None, cluster: str | None = DEFAULT_CLUSTER,
                 split_by_cluster: bool = True):
        self.timings = timings
        self.split_by_cluster = split_by_cluster
        self.clock = now_ms  # tests may replace it
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        # (entity id, cluster) -> minute -> [requests, failed]
        self._minutes: dict[tuple[str, str], dict[int, list[int]]] = {}
        self._spans: deque[Span] = deque(maxlen=MAX_SPANS)
        self._info_logs: deque[dict] = deque(maxlen=MAX_INFO_LOGS)
        # Error logs are kept apart so a flood of INFO lines never pushes them out.
        self._error_logs: deque[dict] = deque(maxlen=MAX_ERROR_LOGS)
        self._events: deque[Event] = deque(maxlen=MAX_EVENTS)
        self._problems: list[Problem] = []
        self._display_seq = itertools.count(1)
        # Each log record once stored goes here (the tenant's OpenPipeline: route -> pipeline ->
        # Davis event); called outside the lock, as it writes events back.
        self.on_log: Callable[[dict], None] | None = None
        self._log_seq = itertools.count()  # orders log lines written in the same millisecond
        self.entities: dict[tuple[str | None, str], MonitoredEntity] = {}  # (cluster, service)
        self._by_id: dict[str, MonitoredEntity] = {}
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
                self._entity(name, cluster, seed_start).last_seen = now
            self._seed(seed_start, now, cluster)

    def _entity(self, service: str, cluster: str, t: int) -> MonitoredEntity:
        """The service entity a span of `cluster` lands on: the cluster's own, or on a tenant that
        does not split by cluster the one shared by every cluster."""
        own = cluster if self.split_by_cluster else None
        entity = self.entities.get((own, service))
        if entity is None:
            entity = self.entities[(own, service)] = MonitoredEntity(
                service_id(service, own or DEFAULT_CLUSTER), service, t, t, cluster=own)
            self._by_id[entity.entity_id] = entity
        return entity

    # ----- ids ------------------------------------------------------------------------------
    def _hex(self, n: int) -> str:
        return "".join(self._rng.choice("0123456789abcdef") for _ in range(n))

    def new_trace(self) -> tuple[str, str]:
        with self._lock:
            return self._hex(32), self._hex(16)

    # ----- writing --------------------------------------------------------------------------
    def _seed(self, start: int, end: int, cluster: str) -> None:
        """Baseline history so charts have a past: a few calm requests a minute, no failures."""
        for service in SERVICES:
            rate = BASELINE_PER_MINUTE.get(service, DEFAULT_PER_MINUTE)
            buckets = self._minutes.setdefault((self._entity(service, cluster, start).entity_id, cluster), {})
            for minute in range(start // MINUTE_MS, end // MINUTE_MS):
                n = self._poisson(rate)
                if n:
                    buckets[minute] = [n, 0]
        # A little INFO history for the cart, so "surrounding logs" is not empty.
        t = start
        while t < end:
            t += int(self._rng.expovariate(1 / 60_000))
            if t < end:
                trace, span = self._hex(32), self._hex(16)
                self._info_logs.append(self._log_line(  # history from before any route existed
                    t, "GetCartAsync called with userId=seed", trace, span, "INFO", "cart-seed", cluster=cluster,
                    attributes={"dt.openpipeline.pipelines": ["logs:default"]}))

    def _poisson(self, lam: float) -> int:
        # Knuth's method: fine for the small rates used here.
        limit, k, p = pow(2.718281828459045, -lam), 0, 1.0
        while True:
            p *= self._rng.random()
            if p <= limit:
                return k
            k += 1

    def new_span_id(self) -> str:
        with self._lock:
            return self._hex(16)

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
        entity = self._entity(service, cluster, t)
        buckets = self._minutes.setdefault((entity.entity_id, cluster), {})
        slot = buckets.get(t // MINUTE_MS)
        if slot is None:
            slot = buckets[t // MINUTE_MS] = [0, 0]
        slot[0] += 1
        slot[1] += failed
        entity.last_seen = max(entity.last_seen, t)

    def _log_line(self, t: int, content: str, trace_id: str, span_id: str, level: str,
                  pod: str, service: str = CART, cluster: str = DEFAULT_CLUSTER,
                  attributes: dict | None = None) -> dict:
        """A log line shaped like the lab's logs in Grail (OTel + k8s), with what the lab's
        collector added (`attributes`: the pod's annotations, the transform's fields)."""
        entry = {
            "timestamp": iso(t), "_ms": t, "_seq": next(self._log_seq), "content": content,
            "loglevel": level, "status": log_status(level),
            "service.name": service, "dt.entity.service": self._entity(service, cluster, t).entity_id,
            "trace_id": trace_id, "span_id": span_id, "host.name": pod,
            "k8s.cluster.name": cluster, "k8s.namespace.name": "default", "k8s.pod.name": pod,
            "k8s.container.name": service, "log.source": "otel", "event.type": "LOG",
        }
        entry.update(attributes or {})
        return entry

    def _enrich(self, entry: dict) -> dict:
        """A record of the lab's collector on its pod's entity (dt.source_entity), as the tenant's
        entity enrichment puts it (called under the lock)."""
        pod = self._pod(entry["k8s.pod.name"], entry["k8s.cluster.name"], entry["_ms"])
        pod.runs = entry["dt.entity.service"]
        entry.update({"dt.source_entity": pod.entity_id, "dt.entity.cloud_application_instance": pod.entity_id,
                      "dt.entity.cloud_application_instance.name": pod.name})
        return entry

    def _pod(self, name: str, cluster: str, t: int) -> MonitoredEntity:
        entity = self._by_id.get(pod_id(name, cluster))
        if entity is None:
            entity = MonitoredEntity(pod_id(name, cluster), name, t, t, POD_TYPE, cluster)
            self._by_id[entity.entity_id] = entity
            self.entities[(cluster, f"pod:{name}")] = entity
        entity.last_seen = max(entity.last_seen, t)
        return entity

    def _store(self, entry: dict) -> dict:
        """Through the tenant's OpenPipeline (outside the lock: it writes events back), then kept."""
        if self.on_log is not None:
            self.on_log(entry)
        with self._lock:
            (self._error_logs if entry["status"] == "ERROR" else self._info_logs).append(entry)
        return entry

    def log_info(self, service: str, content: str, trace_id: str, span_id: str, pod: str,
                 at: int | None = None, cluster: str = DEFAULT_CLUSTER,
                 attributes: dict | None = None) -> dict:
        """An INFO line of a demo service (cart, checkout, quote, currency) inside a span."""
        with self._lock:
            entry = self._enrich(self._log_line(self.clock() if at is None else at, content, trace_id,
                                                span_id, "INFO", pod, service, cluster, attributes))
        return self._store(entry)

    def log_cart(self, level: str, content: str, pod: str = "cart-pod-test",
                 cluster: str = DEFAULT_CLUSTER, attributes: dict | None = None) -> dict:
        """Any cart log line (tests inject e.g. a CRITICAL one)."""
        with self._lock:
            entry = self._enrich(self._log_line(self.clock(), content, self._hex(32), self._hex(16),
                                                level.upper(), pod, cluster=cluster, attributes=attributes))
        return self._store(entry)

    def log_cart_redis_error(self, trace_id: str, span_id: str, pod: str, at: int | None = None,
                             cluster: str = DEFAULT_CLUSTER, attributes: dict | None = None) -> dict:
        """The EmptyCart failure log. Whether it opens a problem is the tenant's pipeline's say."""
        with self._lock:
            t = self.clock() if at is None else at
            entry = self._log_line(t, REDIS_ERROR, trace_id, span_id, "ERROR", pod, cluster=cluster,
                                   attributes=attributes)
            entry.update({"statuscode": "FailedPrecondition", "detail": REDIS_ERROR})
            self._enrich(entry)
        return self._store(entry)

    # ----- Davis events and problems (what a pipeline's Davis processor makes) ----------------
    def davis_event(self, name: str, event_type: str, description: str, entity: MonitoredEntity,
                    properties: dict[str, str], t: int, cluster: str | None) -> Event:
        """One record's Davis event: an open event of the same identity (event.name, event.type,
        dt.source_entity; the semantic dictionary's) is refreshed, else a new one starts. It ends a
        quiet period after the last record; a problem-opening type opens (or joins) the entity's
        problem at once, on the first record."""
        quiet = int(self.timings.problem_quiet * 1000)
        with self._lock:
            self._close_quiet(t)
            event = next((e for e in reversed(self._events) if e.provider == OPENPIPELINE and e.end > t
                          and (e.title, e.event_type, e.entity.entity_id) == (name, event_type, entity.entity_id)),
                         None)
            if event is None:
                event = Event(f"{self._rng.getrandbits(63) - (1 << 62)}_{t}", self._hex(16), event_type,
                              name, t, t + quiet, entity, dict(properties), description, OPENPIPELINE,
                              cluster)
                self._events.append(event)
            else:
                event.end, event.records = t + quiet, event.records + 1
                event.properties.update(properties)
            if event_type in PROBLEM_CATEGORIES:
                self._raise(event, t, cluster)
            return event

    def _raise(self, event: Event, t: int, cluster: str | None) -> None:
        """The entity's open problem takes the event (Davis groups by entity), else one opens."""
        mine = [p for p in self._problems if p.open and p.entity.entity_id == event.entity.entity_id]
        problem = mine[-1] if mine else None
        if problem is None:
            seq = next(self._display_seq)
            problem = Problem(f"-{self._rng.getrandbits(62)}_{t}V2", f"P-{seq:02d}", t, event.entity, t, 0,
                              event.title, PROBLEM_CATEGORIES[event.event_type],
                              description=event.description)
            self._problems.append(problem)
        if all(e is not event for e in problem.events):
            problem.events.append(event)
        problem.last_error, problem.error_count = t, problem.error_count + 1
        if cluster:
            problem.clusters.add(cluster)

    def _close_quiet(self, now: int) -> None:
        """A problem closes once every event of it has ended (no record refreshed it lately)."""
        for p in self._problems:
            if p.open and all(e.end <= now for e in p.events):
                p.end = max((e.end for e in p.events), default=now)

    def check_problems(self) -> None:
        """Close problems that have been quiet long enough (called periodically and on reads)."""
        with self._lock:
            self._close_quiet(self.clock())

    def problems(self) -> list[Problem]:
        with self._lock:
            self._close_quiet(self.clock())
            return list(self._problems)

    def change_evidence(self, problem: Problem) -> list[Event]:
        """Change events on the problem's entity (or the service its pod runs) in the 30 minutes
        before it started."""
        ids = {problem.entity.entity_id, problem.entity.runs}
        with self._lock:
            return [e for e in self._events
                    if e.entity.entity_id in ids
                    and e.event_type in ("CUSTOM_CONFIGURATION", "CUSTOM_DEPLOYMENT")
                    and problem.start - CHANGE_LOOKBACK_MS <= e.start <= problem.start]

    # ----- events ---------------------------------------------------------------------------
    def add_event(self, event_type: str, title: str, entity: MonitoredEntity, start: int,
                  end: int, properties: dict[str, str]) -> Event:
        with self._lock:
            event = Event(f"{self._rng.getrandbits(63) - (1 << 62)}_{start}", self._hex(16),
                          event_type, title, start, end, entity, dict(properties))
            self._events.append(event)
            return event

    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    # ----- reading --------------------------------------------------------------------------
    def entity_list(self) -> list[MonitoredEntity]:
        with self._lock:
            return list(self.entities.values())

    def entity_of(self, service: str, cluster: str) -> MonitoredEntity | None:
        """The entity a span of `service` from `cluster` landed on (None: never seen)."""
        with self._lock:
            return self.entities.get((cluster if self.split_by_cluster else None, service))

    def entity_by_id(self, entity_id: str) -> MonitoredEntity | None:
        with self._lock:
            return self._by_id.get(entity_id)

    def series(self) -> list[tuple[MonitoredEntity, str]]:
        """(service entity, k8s.cluster.name) of every request counter: the metrics' dimensions."""
        with self._lock:
            return [(self._by_id[eid], cluster) for eid, cluster in self._minutes]

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

    def logs(self, start: int, end: int) -> list[dict]:
        """Log records in [start, end), oldest first, Grail-shaped; `_ms` is private (epoch ms)."""
        with self._lock:
            rows = [r for r in itertools.chain(self._info_logs, self._error_logs)
                    if start <= r["_ms"] < end]
        rows.sort(key=lambda r: (r["_ms"], r["_seq"]))
        return rows

    def records(self, service: str | None = None, cluster: str | None = None) -> list[Span]:
        """The requests served (server spans), oldest first."""
        with self._lock:
            return [r for r in self._spans if r.kind == "server" and service in (None, r.service)
                    and cluster in (None, r.cluster)]

    def spans(self, start: int, end: int) -> list[Span]:
        """Every span that started in [start, end) epoch ms, oldest first."""
        with self._lock:
            return [s for s in self._spans if start <= s.time < end]
