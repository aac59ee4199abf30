"""The Dynatrace API for the lab: change events, failed requests, problems, logs, entities, scopes.

A `Dynatrace` object speaks the lab's words; underneath, `_http` is the one request path (which
token a call takes, retries, scrubbing, labkit errors), `_query` spells selectors, DQL and
timeframes, `_grail` runs a DQL query, `_frames` turns answers into DataFrames, `_events` is the
change event's body and result, `_links` points into the tenant's own screens, `_access` is the
preflight of both tokens and `_scope` keeps a seat on a shared tenant to its own data
(Settings.cluster_name).

Results carry links: `Entity.link`, `ChangeEvent.link`, a `link` column on problems and change
events, and `frame.attrs["link"]` on the error-log and change-event frames.

pandas is imported inside the functions that build DataFrames, so importing this package is cheap.
"""
from __future__ import annotations

import functools
import logging
import re
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Callable, Iterable

import httpx

from labkit.dynatrace._access import Access, access
from labkit.dynatrace._documents import Documents
from labkit.dynatrace._events import (EVENT_TYPE, ChangeEvent, _change_event_body, _check_change,
                                      _ingest_result)
from labkit.dynatrace._frames import (call_frame, change_event_frame, classic_log_row, evaluation_frame,
                                      failure_frame, grail_log_row, log_frame, metric_series, problem_frame,
                                      slot_ms, span_frame, workload_pod)
from labkit.dynatrace._grail import run_dql
from labkit.dynatrace._http import GRAIL_LOG_SCOPES, PLATFORM_SCOPES, Http, json_object, platform_token_message
from labkit.dynatrace._links import logs_link, notebook_link, problem_link, service_link, trace_link
from labkit.dynatrace._http import parse_retry_after as _parse_retry_after  # noqa: F401 (tests use it)
from labkit.dynatrace._query import (as_datetime, as_str, dql_from, dql_string, quote_selector_value,
                                     service_selector, time_param, utc_ms)
from labkit.dynatrace._scope import Scope
from labkit.dynatrace._settings import SettingsObjects
from labkit.errors import BadInput, Forbidden, LabError, LabTimeout, NotFound
from labkit.progress import Progress
from labkit.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["Dynatrace", "ChangeEvent", "Entity", "Access", "Scope", "READ_SCOPES", "INGEST_SCOPE", "GRAIL_LOG_SCOPES",
           "PLATFORM_SCOPES", "ERROR_LEVELS",
           "EVENT_TYPE", "UNIFIED_KEYS", "ONEAGENT_KEYS", "service_selector", "quote_selector_value"]

log = logging.getLogger(__name__)

#: Api-Token scopes labkit's reads need (FACTS.md, reference §11).
READ_SCOPES = frozenset({"events.read", "metrics.read", "problems.read", "entities.read"})
INGEST_SCOPE = "events.ingest"

UNIFIED_KEYS = ("builtin:service.request.failure_count", "builtin:service.request.count")
ONEAGENT_KEYS = ("builtin:service.errors.total.count", "builtin:service.requestCount.total")

#: Log levels Dynatrace gives `status == "ERROR"` (fidelity.md): all of them are error logs.
ERROR_LEVELS = frozenset({"SEVERE", "ERROR", "CRITICAL", "ALERT", "FATAL", "EMERGENCY"})



# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Entity:
    """A monitored entity (here: a service) as the tenant knows it."""

    id: str
    name: str
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    link: str | None = None  # the service's screen in the tenant
    # on a shared tenant: other seats' spans land on this entity too (the tenant does not split
    # services by cluster), so the entity alone does not keep a seat apart
    shared: bool = False

    def __repr__(self) -> str:
        seen = f", last seen {self.last_seen:%Y-%m-%d %H:%M} UTC" if self.last_seen else ""
        return f"<service {self.name} {self.id}{seen}>"

    def seen_within(self, delta: timedelta, now: datetime | None = None) -> bool:
        now = now or datetime.now(timezone.utc)
        return self.last_seen is not None and self.last_seen >= now - delta


# --------------------------------------------------------------------------- the client


class Dynatrace:
    """The lab's Dynatrace tenant (or the local lab's stand-in) over HTTP.

    >>> with Dynatrace(Settings.load()) as dt:
    ...     dt.send_change_event("cart", "cartFailure", "on", old="off")
    """

    def __init__(self, settings: Settings, *, timeout: float = 10.0, retries: int = 3,
                 backoff: float = 0.5, transport: httpx.BaseTransport | None = None):
        self._http = Http(settings, timeout=timeout, retries=retries, backoff=backoff,
                          transport=transport)
        self.settings = settings
        self.settings_objects = SettingsObjects(self._http)  # Settings 2.0 (`settings` is the lab's)
        self.documents = Documents(self._http)  # the Documents API (platform token only)
        self.scope = Scope(settings.cluster_name)  # this lab's seat on a shared tenant, if any
        self.ui = settings.platform_url or settings.dt_url  # where the tenant's screens are
        self._entity_cache: dict[str, tuple[float, Entity | None]] = {}
        self.entity_cache_seconds = 60.0
        self._entities_forbidden_until = 0.0

    # ---- lifecycle

    @property
    def timeout(self) -> float:
        return self._http.timeout

    @property
    def retries(self) -> int:
        return self._http.retries

    @property
    def backoff(self) -> float:
        return self._http.backoff

    def __repr__(self) -> str:
        where = "local lab" if self.settings.local else "tenant"
        return f"Dynatrace({where} {self.settings.dt_url!r})"

    def __enter__(self) -> "Dynatrace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ---- reading the classic API

    def _get_json(self, path: str, *, scope: str, what: str, params: dict | None = None) -> dict:
        resp = self._http.request("classic", "GET", path, params=params, scope=scope, what=what)
        return json_object(resp, what)

    def _paged(self, path: str, key: str, *, scope: str, what: str, params: dict,
               keep: Iterable[str] = (), max_pages: int = 100) -> list[dict]:
        """All items of a paged list: the nextPageKey is sent alone (plus `keep` params)."""
        items: list[dict] = []
        page = self._get_json(path, scope=scope, what=what, params=params)
        for _ in range(max_pages):
            got = page.get(key) or []
            items.extend(x for x in got if isinstance(x, dict))
            cursor = page.get("nextPageKey")
            if not cursor:
                return items
            next_params = {"nextPageKey": cursor}
            next_params.update({k: params[k] for k in keep if params.get(k) is not None})
            page = self._get_json(path, scope=scope, what=what, params=next_params)
        log.warning("%s: stopped after %d pages", what, max_pages)
        return items

    # ---- entities

    def find_service(self, name: str) -> Entity | None:
        """The SERVICE entity named `name` (case-insensitive, as Dynatrace matches), seen in 3 days;
        on a shared tenant this seat's own when Grail may be asked (each seat's cart is an entity
        of its own, all named cart), else the one seen last."""
        if self.scope:
            try:
                return self._seat_service(name)
            except Forbidden as exc:  # no Grail for this lab: the newest of that name, as alone
                _unless_not_allowed(exc)
        found = self._services(name)
        return found[0] if found else None

    def _services(self, name: str, selector: str | None = None) -> list[Entity]:
        """Every SERVICE entity named `name` (or matching `selector`) seen in 3 days, the exact name
        and newest first."""
        params = {"entitySelector": selector or service_selector(name), "from": "now-3d",
                  "fields": "+lastSeenTms,+firstSeenTms"}
        entities = self._paged("/api/v2/entities", "entities", scope="entities.read",
                               what=f"to look up the service {name!r}", params=params)
        found = [Entity(id=str(e.get("entityId", "")), name=str(e.get("displayName", name)),
                        first_seen=utc_ms(e.get("firstSeenTms")), last_seen=utc_ms(e.get("lastSeenTms")),
                        link=service_link(self.ui, e["entityId"]))
                 for e in entities if e.get("entityId")]
        epoch = datetime.min.replace(tzinfo=timezone.utc)
        found.sort(key=lambda e: (e.name == name, e.last_seen or epoch), reverse=True)
        return found

    def _seat_service(self, name: str) -> Entity | None:
        """This seat's `name` service, from the seat's newest log of the day in Grail; Forbidden
        when this lab has no platform token (or one without storage:logs:read)."""
        if not self.settings.platform_token:
            exc = Forbidden(f"telling {self.scope.describe()}'s service {name!r} from the other "
                            "seats' takes Grail, and DT_PLATFORM_TOKEN is not set")
            exc.status = 403
            raise exc
        for row in self.dql(self.scope.service_query(name), max_records=1):
            value = row.get("dt.entity.service")
            value = value[0] if isinstance(value, list) and value else value
            if isinstance(value, str) and value:
                break
        else:
            return None
        try:  # the entity as the tenant knows it (first and last seen)
            found = self._services(name, f"entityId({quote_selector_value(value, always=True)})")
        except Forbidden as exc:  # no entities.read: what the log said is enough to address it
            _unless_not_allowed(exc)
            found = []
        seen = as_datetime(row["timestamp"]) if row.get("timestamp") else None
        entity = found[0] if found else Entity(id=value, name=name, last_seen=seen,
                                               link=service_link(self.ui, value))
        # not scoped by dql(): the question is whether other clusters' logs land on it
        others = run_dql(self._http, self.scope.others_query(value), timeout=60.0, progress=None,
                         max_records=1)
        return replace(entity, shared=bool(others))

    def _event_target(self, service: str) -> tuple[str, list[str]]:
        """(entity selector, warnings) for the change event: the service by name, or on a shared
        tenant this seat's own entity (never every seat's, unless Grail cannot be asked: then by
        name, with a warning that says so)."""
        by_name = service_selector(service)  # also refuses an empty name
        if not self.scope:
            return by_name, self._service_warnings(service)
        try:
            entity = self._seat(service)
        except Forbidden as exc:
            _unless_not_allowed(exc)
            return by_name, [
                f"could not find the {service!r} of {self.scope.describe()} ({exc}); the event "
                f"goes to every service named {service!r} on the tenant (on a shared tenant, "
                "every seat's)"] + self._service_warnings(service)
        if entity is not None and entity.shared:
            return f"entityId({quote_selector_value(entity.id, always=True)})", [_NOT_SPLIT.format(
                service=service, seat=self.scope.describe())]
        if entity is None:
            raise NotFound(
                f"No entity matched {by_name} of {self.scope.describe()}: Dynatrace has "
                "no logs of it from that cluster in the last 24 hours, so labkit cannot tell which "
                "of the tenant's services is yours. Check that your lab's collector sets "
                f"k8s.cluster.name to {self.scope.cluster!r} (LABKIT_CLUSTER_NAME), send some "
                "traffic (labkit shop) and try again.")
        return f"entityId({quote_selector_value(entity.id, always=True)})", []

    def _service(self, name: str) -> Entity | None:
        """find_service with a short cache (the event POST should cost one round trip)."""
        return self._cached(name, lambda: self.find_service(name))

    def _seat(self, name: str) -> Entity | None:
        """This seat's own `name` service, cached like _service; Forbidden (403) without Grail."""
        return self._cached(("seat", name), lambda: self._seat_service(name))

    def _cached(self, key, find: Callable[[], Entity | None]) -> Entity | None:
        now = time.monotonic()
        hit = self._entity_cache.get(key)
        if hit and now - hit[0] < self.entity_cache_seconds and hit[1] is not None:
            return hit[1]
        entity = find()
        self._entity_cache[key] = (now, entity)
        return entity

    def _require_service(self, name: str) -> Entity:
        entity = self._service(name)
        if entity is None:
            raise _no_service(name)
        return entity

    # ---- change events

    def send_change_event(self, service: str, flag: str, new, old=None, run_id: str | None = None,
                          title: str = "feature flag changed") -> ChangeEvent:
        """Tell Dynatrace a flag changes on `service`: the lab's CUSTOM_CONFIGURATION event.

        The body is the lab's payload (runtime_change.py) with all property values as strings, plus
        `previousValue` and `labkit.run_id`. Warnings (unknown service, not seen in 24 h, could not
        check) go to `.warnings`. Raises LabError when an entity result is not OK or when no entity
        matched; never resends after the tenant may have processed the POST.
        """
        _check_change(service, flag, new, old)
        selector, warnings = self._event_target(service)
        run_id = run_id or uuid.uuid4().hex[:12]
        body = _change_event_body(title, selector, flag, new, old, run_id, self.scope)
        sent_at = datetime.now(timezone.utc)
        what = f"the change event for {flag} on service {service!r}"
        resp = self._http.request("classic", "POST", "/api/v2/events/ingest", body=body,
                                  scope=INGEST_SCOPE, what=what, idempotent=False, event=True)
        event = _ingest_result(resp, what, selector, ChangeEvent(
            service=service, flag=flag, old=None if old is None else as_str(old), new=as_str(new),
            run_id=run_id, sent_at=sent_at, report_count=0, warnings=warnings, ui=self.ui,
            cluster=self.scope.cluster))
        if event.report_count == 0:
            self._entity_cache.pop(service, None)
            self._entity_cache.pop(("seat", service), None)
            note = "".join(f" ({w})" for w in warnings)
            raise LabError(
                f"No entity matched {selector}: {what} was not recorded{note}. The service was not "
                f"seen in the last 24 hours, or its name differs (Dynatrace shows it under Services). "
                "Send some traffic (labkit shop) and try again.")
        for w in warnings:
            log.warning("%s", w)
        return event

    def _service_warnings(self, service: str) -> list[str]:
        """Why the event may match no entity, checked before sending (never stops the send)."""
        try:
            if self._entities_forbidden_until > time.monotonic():
                raise Forbidden("entities.read missing (remembered)")
            entity = self._service(service)
        except Forbidden:
            # the lab's own token has ingest scopes only: remember, so each send costs one POST
            self._entities_forbidden_until = time.monotonic() + self.entity_cache_seconds
            return [f"could not check that the service {service!r} exists (the token lacks "
                    "entities.read); sending the event anyway"]
        except BadInput:
            raise
        except LabError as exc:
            return [f"could not check the service {service!r} first ({exc}); sending anyway"]
        if entity is None:
            return [f"Dynatrace knows no service named {service!r} (not seen in the last "
                    "3 days): the event will probably match no entity"]
        if not entity.seen_within(timedelta(hours=24)):
            seen = entity.last_seen.isoformat(timespec="minutes") if entity.last_seen else "never"
            return [f"the service {service!r} was last seen {seen}; the event selector "
                    "only matches entities seen in the last 24 hours"]
        return []

    def change_events(self, service: str, since="now-2h") -> "pd.DataFrame":
        """CUSTOM_CONFIGURATION events on `service` since `since`, oldest first."""
        params = {"eventSelector": f'eventType("{EVENT_TYPE}")',
                  "entitySelector": service_selector(service),
                  "from": time_param(since), "pageSize": 1000}
        events = self._paged("/api/v2/events", "events", scope="events.read",
                             what=f"to read change events of service {service!r}", params=params)
        events = [e for e in events if self.scope.owns_event(e)]
        return self._with_event_links(change_event_frame(events), service, since)

    def change_event(self, event_id: str) -> "pd.DataFrame":
        """One event by its id (GET /api/v2/events/{eventId}), as a one-row change-event frame."""
        if not isinstance(event_id, str) or not re.fullmatch(r"-?[0-9]+_[0-9]+", event_id):
            raise BadInput(f"{event_id!r} is not an event id (like -4321987654321098765_1754552700000).")
        body = self._get_json(f"/api/v2/events/{event_id}", scope="events.read",
                              what=f"to read the event {event_id}")
        return self._with_event_links(change_event_frame([body]), None, None)

    def _with_event_links(self, frame: "pd.DataFrame", service: str | None, since) -> "pd.DataFrame":
        frame["link"] = [notebook_link(self.ui, f"fetch events | filter event.id == {dql_string(str(i))}")
                         for i in frame["event_id"]]
        if service is not None:
            query = (f"fetch events, from: {dql_from(since)} | filter event.type == "
                     f"{dql_string(EVENT_TYPE)} and dt.entity.service.name == {dql_string(service)}"
                     " | sort timestamp desc")
            frame.attrs["link"] = notebook_link(self.ui, self.scope.dql(query))
        return frame

    # ---- metrics

    def failed_requests(self, service: str, since="now-2h", resolution: str = "1m",
                        until=None) -> "pd.DataFrame":
        """Failed and total requests of `service` per slot, and the failure rate.

        Columns: timestamp (UTC, the START of each slot: the minute it covers; Dynatrace labels a
        slot by its end), failed, requests (int64), failure_rate (failed / requests as a 0..1
        float), partial (True for the slot still running: its counts are so far). Unified-service keys first
        (OTel services), the OneAgent keys when those are empty. A slot with no data point (null)
        counted nothing, so it becomes 0 for both counts; failure_rate is NaN where requests == 0
        (undefined, not 0 %).
        """
        selector, only = self._metric_target(service)
        what = f"to read failed requests of service {service!r}"
        series, body = None, {}
        asked_at = int(time.time() * 1000)  # before asking: a slot ending later was still running
        for keys in (UNIFIED_KEYS, ONEAGENT_KEYS):
            metric_selector = ",".join(f"{k}{only}:splitBy():value:default(0)" for k in keys)
            params = {"metricSelector": metric_selector, "entitySelector": selector,
                      "from": time_param(since), "to": time_param(until, "until"),
                      "resolution": resolution}
            body = self._get_json("/api/v2/metrics/query", scope="metrics.read", what=what,
                                  params=params)
            series = metric_series(body, keys)
            if series[0] is not None or series[1] is not None:
                break
        stamps = next((s[0] for s in series if s is not None), None)
        return failure_frame(*series, slot=slot_ms(body, resolution, stamps), now_ms=asked_at)

    def calls(self, service: str, operation: str, since="now-1h", limit: int = 100_000) -> "pd.DataFrame":
        """The server calls of `operation` (e.g. EmptyCart) on `service`, each at its own time, from
        Grail's spans (platform token with storage:spans:read), oldest first. Columns: timestamp
        (the span's start, UTC), failed (request.is_failed). The demo names the span
        oteldemo.CartService/EmptyCart, so the name is matched at its end."""
        query = (f"fetch spans, from: {dql_from(since)} | filter service.name == {dql_string(service)}"
                 f' and endsWith(span.name, {dql_string(operation)}) and span.kind == "server"'
                 f" | fields start_time, request.is_failed | sort start_time asc | limit {int(limit)}")
        return call_frame(self.dql(query, max_records=limit))

    def _metric_target(self, service: str) -> tuple[str, str]:
        """(entity selector, metric filter) for `service`'s series: by name; on a shared tenant the
        seat's own entity when Grail can name it (a documented selector), else the metrics'
        k8s.cluster.name dimension (that the unified service metrics carry it is unconfirmed)."""
        if not self.scope:
            return service_selector(service), ""
        try:
            entity = self._seat(service)
        except Forbidden as exc:
            _unless_not_allowed(exc)
            entity = None
        if entity is None or entity.shared:
            return service_selector(service), self.scope.metric_filter()
        return f"entityId({quote_selector_value(entity.id, always=True)})", ""

    # ---- problems

    def problems(self, service: str | None = None, since="now-1d", status: str | None = None) -> "pd.DataFrame":
        """Problems (optionally those affecting `service`; status 'open' or 'closed'), newest first.

        A problem affects `service` when an affected entity is a pod of its workload (by name:
        `cart-<hash>-<hash>`; the lab's pipeline opens its problem on the cart's pod) or the service
        itself. Columns: display_id, title, status (OPEN/CLOSED), severity, start, end (NaT while
        open), affected (names joined by ', '), pod (the pod it affects, or None), root_cause (name
        or None), link, problem_id (for API calls).
        """
        criteria = []
        if status is not None:
            status = str(status).lower()
            if status not in ("open", "closed"):
                raise BadInput(f"status must be 'open' or 'closed' (or None for both); got {status!r}.")
            criteria.append(f'status("{status}")')
        params = {"problemSelector": ",".join(criteria) or None, "from": time_param(since),
                  "pageSize": 500}
        what = "to read problems" + (f" of service {service!r}" if service else "")
        items = self._paged("/api/v2/problems", "problems", scope="problems.read", what=what,
                            params=params)
        if service is not None:
            ids = functools.cache(lambda: {e.id for e in (
                self._services(service) if self.scope else [self._require_service(service)])})
            items = [p for p in items if _affects(p, service, ids)]
        frame = problem_frame(self._seat_problems(items, service))
        # the link beside what a person reads; the internal id stays the last column
        frame.insert(len(frame.columns) - 1, "link", [problem_link(self.ui, p) for p in frame["problem_id"]])
        return frame

    def problem_descriptions(self, problem_ids) -> dict[str, str]:
        """Each problem's description (markdown; the lab's carries the affected pod's supportInfo
        with the runbook link), from Grail's dt.davis.problems: {problem id: description}."""
        ids = [str(i) for i in problem_ids if isinstance(i, str) and i]
        if not ids:
            return {}
        match = " or ".join(f"event.id == {dql_string(i)}" for i in ids[:50])
        records = self.dql(f"fetch dt.davis.problems, from: {dql_from('now-7d')} | filter {match}"
                           " | fields event.id, event.description", max_records=200)
        return {str(r.get("event.id")): str(r.get("event.description") or "") for r in records}

    def trace_link(self, trace_id: str) -> str:
        """The trace in the tenant's Distributed traces app."""
        return trace_link(self.ui, trace_id)

    def traces_through(self, trace_ids, service: str, since="now-1d") -> set[str]:
        """Which of `trace_ids` `service` took part in (a span of it in the trace)."""
        ids = [t for t in trace_ids if isinstance(t, str) and re.fullmatch(r"[0-9a-fA-F]{16,32}", t)][:20]
        if not ids:
            return set()
        match = " or ".join(f"trace.id == {dql_string(t)}" for t in ids)
        query = (f"fetch spans, from: {dql_from(since)} | filter service.name == {dql_string(service)}"
                 f" and ({match}) | fields trace.id | limit 1000")
        return {str(r.get("trace.id")) for r in self.dql(query, max_records=1000)}

    def trace_spans(self, trace_id: str, since="now-1d", limit: int = 1000) -> "pd.DataFrame":
        """The spans of one trace (Grail `fetch spans`; a platform token), by start time."""
        if not isinstance(trace_id, str) or not re.fullmatch(r"[0-9a-fA-F]{16,32}", trace_id):
            raise BadInput(f"{trace_id!r} is not a trace id (32 hex digits, as in a log's trace_id).")
        query = (f"fetch spans, from: {dql_from(since)} | filter trace.id == {dql_string(trace_id)}"
                 f" | sort start_time asc | limit {int(limit)}")
        frame = span_frame(self.dql(query, max_records=limit))
        frame.attrs["link"] = trace_link(self.ui, trace_id)
        return frame

    def _seat_problems(self, items: list[dict], service: str | None) -> list[dict]:
        """The problems of this seat: its k8s.cluster.name on the problem, or (a problem without
        that field) its own entity among the affected ones; without a seat, all of them."""
        if not self.scope:
            return items
        mine, seat = [], None
        for p in items:
            owned = self.scope.owns_problem(p)
            if owned is None and service is not None:
                try:
                    seat = seat or self._seat(service)
                except Forbidden as exc:  # no Grail: a problem without a cluster is nobody's
                    _unless_not_allowed(exc)
                affected = [(x.get("entityId") or {}).get("id") for x in p.get("affectedEntities") or []
                            if isinstance(x, dict)]
                owned = seat is not None and seat.id in affected
            if owned:
                mine.append(p)
        return mine

    # ---- logs

    def dql(self, query: str, *, timeout: float = 60.0, progress: Progress | None = None,
            max_records: int | None = None) -> list[dict]:
        """Run a DQL query on Grail (platform token) and return its records; on a shared tenant
        only this seat's (the query gets the seat's k8s.cluster.name filter)."""
        return run_dql(self._http, self.scope.dql(query), timeout=timeout, progress=progress,
                       max_records=max_records)

    def cart_evaluations(self, since="now-30m", flag: str = "cartFailure", service: str = "cart") -> "pd.DataFrame":
        """Which variant the cart itself evaluated, from the `feature_flag.evaluation` span events its
        OpenFeature hook writes on its spans (Grail, platform token): per answer (variant, value, reason,
        error type) the calls and when first and last seen, newest first. flagd-consumers.md §2.4 A."""
        event = 'span.events[span_event.name] == "feature_flag.evaluation"'
        query = (f"fetch spans, from: {dql_from(since)} | filter service.name == {dql_string(service)}"
                 ' | filter iAny(span.events[][span_event.name] == "feature_flag.evaluation")'
                 f" | expand span.events | filter {event} and span.events[feature_flag.key] == {dql_string(flag)}"
                 " | fields start_time, variant = span.events[feature_flag.result.variant],"
                 " value = span.events[feature_flag.result.value], reason = span.events[feature_flag.result.reason],"
                 " error = span.events[error.type]"
                 " | summarize calls = count(), first_seen = min(start_time), last_seen = max(start_time),"
                 " by: { variant, value, reason, error } | sort last_seen desc")
        if not self.settings.platform_token:
            raise Forbidden("Reading the cart's span events needs a platform token: set DT_PLATFORM_TOKEN to a "
                            "token with storage:spans:read and storage:buckets:read (spans are in Grail only).")
        return evaluation_frame(self.dql(query, max_records=100))

    def error_logs(self, service: str, since="now-1h", limit: int = 100) -> "pd.DataFrame":
        """ERROR logs of `service`, newest first: Grail DQL with the platform token, else the
        classic log search with the API token, else Forbidden naming the token needed.

        Columns: timestamp (UTC), loglevel, status, content, trace_id, span_id, service, statuscode, detail,
        dt.owner, dt.cost.product, dt.cost.costcenter (the pod's owner and cost, as the collector tags them).
        """
        limit = max(1, min(int(limit), 10000))
        # status, not loglevel: Dynatrace marks SEVERE, CRITICAL, FATAL, ... as status ERROR too
        query = (f"fetch logs, from: {dql_from(since)} | filter service.name == {dql_string(service)}"
                 f' and status == "ERROR" | sort timestamp desc | limit {limit}')
        classic_query = f'status="ERROR" AND service.name="{service.replace(chr(34), "")}"'
        frame = self._logs(query, classic_query, since=since, limit=limit, newest_first=True,
                           keep=lambda r: r["service"] in (None, service) and _is_error(r))
        frame.attrs["link"] = logs_link(self.ui, self.scope.dql(query.rsplit(" | limit ", 1)[0]), since)
        return frame

    def logs_for_trace(self, trace_id: str, since="now-1d", limit: int = 1000) -> "pd.DataFrame":
        """All logs carrying `trace_id`, oldest first (the story of one failed request)."""
        if not isinstance(trace_id, str) or not re.fullmatch(r"[0-9a-fA-F]{16,32}", trace_id):
            raise BadInput(f"{trace_id!r} is not a trace id (32 hex digits, as in a log's trace_id).")
        query = (f"fetch logs, from: {dql_from(since)} | filter trace_id == {dql_string(trace_id)}"
                 f" | sort timestamp asc | limit {int(limit)}")
        classic_query = f'trace_id="{trace_id}"'
        return self._logs(query, classic_query, since=since, limit=limit, newest_first=False,
                          keep=lambda r: r["trace_id"] in (None, trace_id))

    def _logs(self, query: str, classic_query: str, *, since, limit: int, newest_first: bool,
              keep: Callable[[dict], bool]) -> "pd.DataFrame":
        grail_problem: LabError | None = None
        rows: list[dict] | None = None
        if self.settings.platform_token:
            try:
                rows = [grail_log_row(r) for r in self.dql(query, max_records=limit)]
            except NotFound as exc:  # no Grail on this host: maybe classic log storage
                grail_problem = exc
        if rows is None:
            if not self.settings.api_token:
                raise Forbidden(platform_token_message() + f" (Grail said: {grail_problem})")
            try:
                rows = self._classic_logs(classic_query, since, limit)
            except (Forbidden, NotFound):
                why = f" (Grail said: {grail_problem})" if grail_problem else ""
                raise Forbidden(platform_token_message() + why) from None
        rows = [r for r in rows if keep(r)]
        return log_frame(rows, newest_first)

    def _classic_logs(self, query: str, since, limit: int) -> list[dict]:
        params = {"query": self.scope.classic_log_query(query), "from": time_param(since),
                  "limit": min(limit, 1000),
                  "sort": "-timestamp"}
        body = self._get_json("/api/v2/logs/search", scope="logs.read", what="to search logs",
                              params=params)
        return [classic_log_row(r) for r in (body.get("results") or []) if isinstance(r, dict)]

    # ---- tokens

    def token_scopes(self) -> set[str]:
        """The scopes of DT_API_TOKEN, from POST /api/v2/apiTokens/lookup."""
        if not self.settings.api_token:
            raise LabError("No DT_API_TOKEN is set, so there are no API-token scopes to look up; "
                           "with a platform token alone, check() probes what it may do.")
        return self._http.lookup_api_scopes()

    def access(self) -> list[Access]:
        """The preflight of the tokens: per lab step, may it run, with which token, what to add."""
        return access(self)

    def missing_scopes(self, required: Iterable[str] = READ_SCOPES) -> set[str]:
        """Which of `required` the API token lacks (empty set: all there)."""
        return set(required) - self.token_scopes()

    # ---- waiting

    def wait_for_error_logs(self, service: str, since: datetime, timeout: float = 300.0,
                            progress: Progress | None = None, limit: int = 100) -> "pd.DataFrame":
        """Poll error_logs until some at or after `since` show up; LabTimeout after `timeout` s."""
        since = as_datetime(since)

        def check():
            frame = self.error_logs(service, since=since, limit=limit)
            return frame[frame["timestamp"] >= since].reset_index(drop=True)

        return _wait_for(check, timeout, progress,
                         f"error logs of service {service!r}",
                         f"No error logs from service {service!r} reached Dynatrace within {timeout:g} s "
                         "after the change. Check that the flag is on (labkit flags), that traffic "
                         "exercises the cart (labkit shop) and that logs are shipped.")

    def wait_for_problem(self, service: str, since: datetime, timeout: float = 600.0,
                         progress: Progress | None = None) -> "pd.DataFrame":
        """Poll problems until one affecting `service` (its workload's pods or itself) has started
        at/after `since` or is open."""
        since = as_datetime(since)

        def check():
            frame = self.problems(service, since=since - timedelta(minutes=5))
            fresh = (frame["start"] >= since) | (frame["status"].astype("string").str.upper() == "OPEN")
            return frame[fresh.fillna(False)].reset_index(drop=True)

        return _wait_for(check, timeout, progress, f"a problem on service {service!r}",
                         f"No problem on service {service!r} (or its pods) opened within {timeout:g} s. "
                         "The tenant opens it from the first routed error log, so check that the error "
                         "logs arrived tagged with alertmessage and priority (labkit logs) and that the "
                         "tenant has the lab's pipeline and route (labkit check).")


# --------------------------------------------------------------------------- change event steps


_NOT_SPLIT = ("this tenant does not split services by cluster: every seat's {service!r} is one entity, "
              "so this change shows on it for every seat (Davis may list it under another seat's "
              "problem). Turn on the built-in rule 'Split services by k8s cluster and namespace' "
              "(Settings > Services > Service splitting)")


def _affects(problem: dict, service: str, service_ids) -> bool:
    """A pod of the service's workload among the problem's affected entities, or the service's own
    entity (`service_ids()`: read only when a problem names a service)."""
    stubs = [x for x in problem.get("affectedEntities") or [] if isinstance(x, dict)]
    if any(workload_pod(x.get("name"), service) for x in stubs):
        return True
    ids = {(x.get("entityId") or {}).get("id") for x in stubs}
    return any(str(i).startswith("SERVICE-") for i in ids) and bool(ids & service_ids())


def _no_service(name: str) -> NotFound:
    return NotFound(f"Dynatrace knows no service named {name!r} seen in the last 3 days. Check the name "
                    "(the lab's is 'cart') and that the demo sends traces to this tenant.")


def _unless_not_allowed(exc: Forbidden) -> None:
    """Re-raise unless `exc` only says a token may not do this (403): a wrong token (401) is
    never worked around."""
    if getattr(exc, "status", None) != 403:
        raise exc


def _is_error(row: dict) -> bool:
    """An error log: status ERROR, or (no status) a level Dynatrace counts as one."""
    if row.get("status"):
        return str(row["status"]).upper() == "ERROR"
    return str(row.get("loglevel") or "ERROR").upper() in ERROR_LEVELS


# --------------------------------------------------------------------------- waiting


def _wait_for(check: Callable[[], "pd.DataFrame"], timeout: float, progress: Progress | None,
          what: str, timeout_message: str) -> "pd.DataFrame":
    """check() until it returns rows, backing off 0.5 s -> 10 s; LabTimeout after `timeout` s."""
    start = time.monotonic()
    deadline = start + max(0.0, timeout)
    delay = 0.5
    while True:
        frame = check()
        elapsed = time.monotonic() - start
        if len(frame):
            if progress:  # "found a problem on service 'cart'", never "found 1 a problem"
                progress(f"found {what}" + (f" ({len(frame)} in all)" if len(frame) > 1 else ""), 1.0)
            return frame
        if progress:
            progress(f"waiting for {what} ({elapsed:.0f} s of {timeout:g} s)",
                     min(1.0, elapsed / timeout) if timeout else None)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LabTimeout(timeout_message)
        time.sleep(min(delay, remaining))
        delay = min(delay * 1.6, 10.0)
