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

import functools
import hashlib
import inspect
import itertools
import random
import threading
from collections import deque
from dataclasses import dataclass, field

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
PROBLEM_TITLE = "Redis connection errors"
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

    def status(self, now: int) -> str:
        return "OPEN" if self.end > now else "CLOSED"


@dataclass
class Problem:
    problem_id: str
    display_id: str
    start: int
    entity: MonitoredEntity
    last_error: int
    error_count: int
    end: int = -1  # -1 while open, as the classic API shows it
    title: str = PROBLEM_TITLE
    event_ids: list[str] = field(default_factory=list)
    description: str = ""  # markdown: the affected pod's supportInfo (with the runbook link)
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
        # priority-1 cart errors (time, cluster) per entity, for detection
        self._recent_errors: dict[str, deque[tuple[int, str]]] = {}
        self._events: deque[Event] = deque(maxlen=MAX_EVENTS)
        self._problems: list[Problem] = []
        self._display_seq = itertools.count(1)
        # The cart pod's annotations (the lab's values): owner and cost on its logs, supportInfo the
        # description of the problem its logs open (the lab's pipeline puts it there).
        self.cart_annotations: dict[str, str] = {}
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
                self._info_logs.append(self._log_line(t, "GetCartAsync called with userId=seed",
                                                      trace, span, "INFO", "pod-seed", cluster=cluster))

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
                  pod: str, service: str = CART, cluster: str = DEFAULT_CLUSTER) -> dict:
        """A log line shaped like the lab's logs in Grail (OTel + k8s; the cart's pod annotations)."""
        entry = {
            "timestamp": iso(t), "_ms": t, "_seq": next(self._log_seq), "content": content,
            "loglevel": level, "status": log_status(level),
            "service.name": service, "dt.entity.service": self._entity(service, cluster, t).entity_id,
            "trace_id": trace_id, "span_id": span_id, "host.name": f"{service}-{pod}",
            "k8s.cluster.name": cluster, "k8s.namespace.name": "default", "k8s.pod.name": f"{service}-{pod}",
            "k8s.container.name": service, "log.source": "otel", "event.type": "LOG",
        }
        if service == CART:  # otel-demo-values.yaml annotates only the cart's pod
            entry.update({"dt.owner": self.cart_annotations.get("ownedBy", "teamA"),
                          "dt.cost.product": self.cart_annotations.get("product", "otel-demo-app"),
                          "dt.cost.costcenter": self.cart_annotations.get("costCentre", "centre1")})
        return entry

    def log_info(self, service: str, content: str, trace_id: str, span_id: str, pod: str,
                 at: int | None = None, cluster: str = DEFAULT_CLUSTER) -> None:
        """An INFO line of a demo service (cart, checkout, quote, currency) inside a span."""
        with self._lock:
            self._info_logs.append(self._log_line(self.clock() if at is None else at, content,
                                                  trace_id, span_id, "INFO", pod, service, cluster))

    def log_cart(self, level: str, content: str, pod: str = "pod-test",
                 cluster: str = DEFAULT_CLUSTER) -> dict:
        """Any cart log line (tests inject e.g. a CRITICAL one); error ones never open problems."""
        with self._lock:
            entry = self._log_line(self.clock(), content, self._hex(32), self._hex(16),
                                   level.upper(), pod, cluster=cluster)
            (self._error_logs if entry["status"] == "ERROR" else self._info_logs).append(entry)
            return entry

    def log_cart_redis_error(self, trace_id: str, span_id: str, pod: str, at: int | None = None,
                             cluster: str = DEFAULT_CLUSTER) -> dict:
        """The EmptyCart failure log; the lab's pipeline marks it for alerting (priority "1")."""
        with self._lock:
            t = self.clock() if at is None else at
            entry = self._log_line(t, REDIS_ERROR, trace_id, span_id, "ERROR", pod, cluster=cluster)
            entry.update({"statuscode": "FailedPrecondition", "priority": "1", "alertme": "true",
                          "detail": REDIS_ERROR})
            self._error_logs.append(entry)
            self._detect(t, self._entity(CART, cluster, t), cluster)
            return entry

    # ----- problems -------------------------------------------------------------------------
    def _detect(self, t: int, entity: MonitoredEntity, cluster: str) -> None:
        """Open (or extend) `entity`'s Redis problem when enough priority-1 errors of it arrive in
        a window: problems are per entity, as Davis groups them, so one seat's errors never open
        or extend another seat's problem."""
        window = int(self.timings.problem_window * 1000)
        errors = self._recent_errors.setdefault(entity.entity_id, deque())
        errors.append((t, cluster))
        while errors and errors[0][0] < t - window:
            errors.popleft()
        self._close_quiet(t)
        mine = [p for p in self._problems if p.entity.entity_id == entity.entity_id]
        current = mine[-1] if mine and mine[-1].open else None
        if current:
            current.last_error = t
            current.error_count += 1
            current.clusters.add(cluster)
        else:
            # Errors that a closed problem already covered do not count again for a new one.
            covered = mine[-1].last_error if mine else None
            fresh = [(e, c) for e, c in errors if covered is None or e > covered]
            if len(fresh) >= self.timings.problem_errors:
                seq = next(self._display_seq)
                problem_id = f"-{self._rng.getrandbits(62)}_{fresh[0][0]}V2"
                self._problems.append(Problem(problem_id, f"P-{seq:02d}", fresh[0][0], entity, t,
                                              len(fresh), clusters={c for _, c in fresh},
                                              description=self.cart_annotations.get("supportInfo", "")))

    def _close_quiet(self, now: int) -> None:
        quiet = int(self.timings.problem_quiet * 1000)
        for p in self._problems:
            if p.open and now - p.last_error >= quiet:
                p.end = now

    def check_problems(self) -> None:
        """Close problems that have been quiet long enough (called periodically and on reads)."""
        with self._lock:
            self._close_quiet(self.clock())

    def problems(self) -> list[Problem]:
        with self._lock:
            self._close_quiet(self.clock())
            return list(self._problems)

    def change_evidence(self, problem: Problem) -> list[Event]:
        """Change events on the problem's entity in the 30 minutes before it started."""
        with self._lock:
            return [e for e in self._events
                    if e.entity.entity_id == problem.entity.entity_id
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


class Collector:
    """One lab's OpenTelemetry collector: what its shop writes reaches the tenant's Telemetry with
    the lab's `k8s.cluster.name` (as the collector's resource processor adds it). Every write that
    takes a `cluster` gets this lab's; everything else is the Telemetry's own."""

    def __init__(self, telemetry: Telemetry, cluster: str):
        self.telemetry, self.cluster = telemetry, cluster
        telemetry.join(cluster)

    def __getattr__(self, name: str):
        attr = getattr(self.telemetry, name)
        if callable(attr) and _takes_cluster(type(self.telemetry), name):
            return functools.partial(attr, cluster=self.cluster)
        return attr

    def __repr__(self) -> str:
        return f"<Collector k8s.cluster.name={self.cluster!r}>"


@functools.lru_cache(maxsize=None)
def _takes_cluster(cls: type, name: str) -> bool:
    try:
        return "cluster" in inspect.signature(getattr(cls, name)).parameters
    except (TypeError, ValueError, AttributeError):
        return False
