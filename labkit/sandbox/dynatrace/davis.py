"""Events and problems: the change events the lab sends, and what a pipeline's Davis processor makes
of log records (an event per identity, refreshed while records come; a problem per entity)."""
from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

from labkit.sandbox.dynatrace.context import Context
from labkit.sandbox.dynatrace.times import MINUTE_MS
from labkit.sandbox.dynatrace.topology import MonitoredEntity

CHANGE_LOOKBACK_MS = 30 * MINUTE_MS  # a change this long before a problem counts as evidence
MAX_EVENTS = 5_000
OPENPIPELINE = "OPENPIPELINE_DATA_EXTRACTION"  # event.provider of a pipeline's Davis event
# Davis event types that open a problem, and the problem's category (Grail's event.category);
# every other type is info-like: an event, no problem (reference §D, "Info events ... don't result
# in the creation of a new problem").
PROBLEM_CATEGORIES = {"AVAILABILITY_EVENT": "AVAILABILITY", "ERROR_EVENT": "ERROR",
                      "PERFORMANCE_EVENT": "SLOWDOWN", "RESOURCE_CONTENTION_EVENT": "RESOURCE_CONTENTION",
                      "CUSTOM_ALERT": "CUSTOM_ALERT"}


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


class Davis:
    """The tenant's events and problems."""

    def __init__(self, context: Context):
        self._ctx = context
        self._lock = context.lock
        self._events: deque[Event] = deque(maxlen=MAX_EVENTS)
        self._problems: list[Problem] = []
        self._display_seq = itertools.count(1)

    # ----- Davis events and problems (what a pipeline's Davis processor makes) ----------------
    def davis_event(self, name: str, event_type: str, description: str, entity: MonitoredEntity,
                    properties: dict[str, str], t: int, cluster: str | None) -> Event:
        """One record's Davis event: an open event of the same identity (event.name, event.type,
        dt.source_entity; the semantic dictionary's) is refreshed, else a new one starts. It ends a
        quiet period after the last record; a problem-opening type opens (or joins) the entity's
        problem at once, on the first record."""
        quiet = int(self._ctx.timings.problem_quiet * 1000)
        with self._lock:
            self._close_quiet(t)
            event = next((e for e in reversed(self._events) if e.provider == OPENPIPELINE and e.end > t
                          and (e.title, e.event_type, e.entity.entity_id) == (name, event_type, entity.entity_id)),
                         None)
            if event is None:
                event = Event(f"{self._ctx.rng.getrandbits(63) - (1 << 62)}_{t}", self._ctx.hex(16), event_type,
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
            problem = Problem(f"-{self._ctx.rng.getrandbits(62)}_{t}V2", f"P-{seq:02d}", t, event.entity, t, 0,
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
            self._close_quiet(self._ctx.clock())

    def problems(self) -> list[Problem]:
        with self._lock:
            self._close_quiet(self._ctx.clock())
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
            event = Event(f"{self._ctx.rng.getrandbits(63) - (1 << 62)}_{start}", self._ctx.hex(16),
                          event_type, title, start, end, entity, dict(properties))
            self._events.append(event)
            return event

    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)
