"""The Dynatrace API for the lab: change events, failed requests, problems, logs, entities, scopes.

A `Dynatrace` object speaks the lab's words; each verb is a few lines over the module of its subject,
as dynatrace-oss/api-client-python's `Dynatrace` composes one service per API over one HTTP client:
`_entities` (a service's entity, seat-aware and cached: found in one place), `_events` (the change
event, sent and read back), `_problems`, `_failures` (request metrics and calls), `_logs` (error
logs, a trace's logs and spans, the cart's own evaluations), `_settings` and `_documents`, and
`_access` (the preflight of both tokens). Underneath, `_client` is what they share: `_http`, the one
request path (which token a call takes, retries, scrubbing, labkit errors), `_scope`, which keeps a
seat on a shared tenant to its own data (Settings.cluster_name), and DQL through `_grail`;
`_query` spells selectors, DQL and timeframes, `_frames` turns answers into DataFrames and `_links`
points into the tenant's own screens.

Results carry links: `Entity.link`, `ChangeEvent.link`, a `link` column on problems and change
events, and `frame.attrs["link"]` on the error-log and change-event frames.

pandas is imported inside the functions that build DataFrames, so importing this package is cheap.
"""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Iterable

import httpx

from labkit.dynatrace._access import Access, access
from labkit.dynatrace._client import Client
from labkit.dynatrace._documents import Documents
from labkit.dynatrace._entities import Entities, Entity
from labkit.dynatrace._events import EVENT_TYPE, INGEST_SCOPE, ChangeEvent, ChangeEvents
from labkit.dynatrace._failures import ONEAGENT_KEYS, UNIFIED_KEYS, Failures
from labkit.dynatrace._http import GRAIL_LOG_SCOPES, PLATFORM_SCOPES, Http
from labkit.dynatrace._http import parse_retry_after as _parse_retry_after  # noqa: F401 (tests use it)
from labkit.dynatrace._links import trace_link
from labkit.dynatrace._logs import ERROR_LEVELS, Logs
from labkit.dynatrace._problems import Problems
from labkit.dynatrace._query import quote_selector_value, service_selector
from labkit.dynatrace._scope import Scope
from labkit.dynatrace._settings import SettingsObjects
from labkit.errors import LabError
from labkit.progress import Progress
from labkit.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["Dynatrace", "ChangeEvent", "Entity", "Access", "Scope", "READ_SCOPES", "INGEST_SCOPE", "GRAIL_LOG_SCOPES",
           "PLATFORM_SCOPES", "ERROR_LEVELS",
           "EVENT_TYPE", "UNIFIED_KEYS", "ONEAGENT_KEYS", "service_selector", "quote_selector_value"]

#: Api-Token scopes labkit's reads need (FACTS.md, reference §11).
READ_SCOPES = frozenset({"events.read", "metrics.read", "problems.read", "entities.read"})


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
        self.scope = Scope(settings.cluster_name)  # this lab's seat on a shared tenant, if any
        self.ui = settings.platform_url or settings.dt_url  # where the tenant's screens are
        client = Client(self._http, settings, self.scope, self.ui)
        self.entities = Entities(client)  # the services, seat-aware, cached
        self.settings_objects = SettingsObjects(self._http)  # Settings 2.0 (`settings` is the lab's)
        self.documents = Documents(self._http)  # the Documents API (platform token only)
        self._client = client
        self._events = ChangeEvents(client, self.entities)
        self._problems = Problems(client, self.entities)
        self._failures = Failures(client, self.entities)
        self._logs = Logs(client)

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

    # ---- entities

    def find_service(self, name: str) -> Entity | None:
        """The SERVICE entity named `name` (case-insensitive, as Dynatrace matches), seen in 3 days;
        on a shared tenant this seat's own when Grail may be asked (each seat's cart is an entity
        of its own, all named cart), else the one seen last."""
        return self.entities.find(name)

    # ---- change events

    def send_change_event(self, service: str, flag: str, new, old=None, run_id: str | None = None,
                          title: str = "feature flag changed") -> ChangeEvent:
        """Tell Dynatrace a flag changes on `service`: the lab's CUSTOM_CONFIGURATION event.

        The body is the lab's payload (runtime_change.py) with all property values as strings, plus
        `previousValue` and `labkit.run_id`. Warnings (unknown service, not seen in 24 h, could not
        check) go to `.warnings`. Raises LabError when an entity result is not OK or when no entity
        matched; never resends after the tenant may have processed the POST.
        """
        return self._events.send(service, flag, new, old=old, run_id=run_id, title=title)

    def change_events(self, service: str, since="now-2h") -> "pd.DataFrame":
        """CUSTOM_CONFIGURATION events on `service` since `since`, oldest first."""
        return self._events.of_service(service, since=since)

    def change_event(self, event_id: str) -> "pd.DataFrame":
        """One event by its id (GET /api/v2/events/{eventId}), as a one-row change-event frame."""
        return self._events.one(event_id)

    # ---- failures

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
        return self._failures.per_slot(service, since=since, resolution=resolution, until=until)

    def calls(self, service: str, operation: str, since="now-1h", limit: int = 100_000) -> "pd.DataFrame":
        """The server calls of `operation` (e.g. EmptyCart) on `service`, each at its own time, from
        Grail's spans (platform token with storage:spans:read), oldest first. Columns: timestamp
        (the span's start, UTC), failed (request.is_failed). The demo names the span
        oteldemo.CartService/EmptyCart, so the name is matched at its end."""
        return self._failures.calls(service, operation, since=since, limit=limit)

    # ---- problems

    def problems(self, service: str | None = None, since="now-1d", status: str | None = None) -> "pd.DataFrame":
        """Problems (optionally those affecting `service`; status 'open' or 'closed'), newest first.

        A problem affects `service` when an affected entity is a pod of its workload (by name:
        `cart-<hash>-<hash>`; the lab's pipeline opens its problem on the cart's pod) or the service
        itself. Columns: display_id, title, status (OPEN/CLOSED), severity, start, end (NaT while
        open), affected (names joined by ', '), pod (the pod it affects, or None), root_cause (name
        or None), link, problem_id (for API calls).
        """
        return self._problems.read(service, since=since, status=status)

    def problem_descriptions(self, problem_ids) -> dict[str, str]:
        """Each problem's description (markdown; the lab's carries the affected pod's supportInfo
        with the runbook link), from Grail's dt.davis.problems: {problem id: description}."""
        return self._problems.descriptions(problem_ids)

    def wait_for_problem(self, service: str, since: datetime, timeout: float = 600.0,
                         progress: Progress | None = None) -> "pd.DataFrame":
        """Poll problems until one affecting `service` (its workload's pods or itself) has started
        at/after `since` or is open."""
        return self._problems.wait(service, since, timeout=timeout, progress=progress)

    # ---- logs and traces

    def dql(self, query: str, *, timeout: float = 60.0, progress: Progress | None = None,
            max_records: int | None = None) -> list[dict]:
        """Run a DQL query on Grail (platform token) and return its records; on a shared tenant
        only this seat's (the query gets the seat's k8s.cluster.name filter)."""
        return self._client.dql(query, timeout=timeout, progress=progress, max_records=max_records)

    def error_logs(self, service: str, since="now-1h", limit: int = 100) -> "pd.DataFrame":
        """ERROR logs of `service`, newest first: Grail DQL with the platform token, else the
        classic log search with the API token, else Forbidden naming the token needed.

        Columns: timestamp (UTC), loglevel, status, content, trace_id, span_id, service, statuscode, detail,
        dt.owner, dt.cost.product, dt.cost.costcenter (the pod's owner and cost, as the collector tags them).
        """
        return self._logs.errors(service, since=since, limit=limit)

    def logs_for_trace(self, trace_id: str, since="now-1d", limit: int = 1000) -> "pd.DataFrame":
        """All logs carrying `trace_id`, oldest first (the story of one failed request)."""
        return self._logs.of_trace(trace_id, since=since, limit=limit)

    def wait_for_error_logs(self, service: str, since: datetime, timeout: float = 300.0,
                            progress: Progress | None = None, limit: int = 100) -> "pd.DataFrame":
        """Poll error_logs until some at or after `since` show up; LabTimeout after `timeout` s."""
        return self._logs.wait_for_errors(service, since, timeout=timeout, progress=progress, limit=limit)

    def cart_evaluations(self, since="now-30m", flag: str = "cartFailure", service: str = "cart") -> "pd.DataFrame":
        """Which variant the cart itself evaluated, from the `feature_flag.evaluation` span events its
        OpenFeature hook writes on its spans (Grail, platform token): per answer (variant, value, reason,
        error type) the calls and when first and last seen, newest first. flagd-consumers.md §2.4 A."""
        return self._logs.cart_evaluations(since=since, flag=flag, service=service)

    def trace_link(self, trace_id: str) -> str:
        """The trace in the tenant's Distributed traces app."""
        return trace_link(self.ui, trace_id)

    def traces_through(self, trace_ids, service: str, since="now-1d") -> set[str]:
        """Which of `trace_ids` `service` took part in (a span of it in the trace)."""
        return self._logs.traces_through(trace_ids, service, since=since)

    def trace_spans(self, trace_id: str, since="now-1d", limit: int = 1000) -> "pd.DataFrame":
        """The spans of one trace (Grail `fetch spans`; a platform token), by start time."""
        return self._logs.trace_spans(trace_id, since=since, limit=limit)

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
