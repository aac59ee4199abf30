"""The lab's change event: sending it (its body, the tenant's answer, the result labkit shows:
ChangeEvent) and reading change events back (the events API, as frames with links).

The Dynatrace facade (labkit/dynatrace/__init__.py) calls `ChangeEvents`; the event's target
entity is `_entities`'.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import httpx

from labkit import cards
from labkit.dynatrace._client import Client, log
from labkit.dynatrace._entities import Entities
from labkit.dynatrace._frames import change_event_frame
from labkit.dynatrace._http import maybe_recorded_message
from labkit.dynatrace._links import notebook_link
from labkit.dynatrace._query import as_str, dql_from, dql_string, service_selector, time_param
from labkit.dynatrace._scope import Scope
from labkit.errors import BadInput, LabError, Unreachable

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

INGEST_SCOPE = "events.ingest"

EVENT_TYPE = "CUSTOM_CONFIGURATION"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class ChangeEvent:
    """What send_change_event sent and what the tenant said about it."""

    service: str
    flag: str
    old: str | None
    new: str
    run_id: str
    sent_at: datetime
    report_count: int
    statuses: list[str] = field(default_factory=list)
    correlation_ids: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ui: str | None = field(default=None, repr=False, compare=False)  # the tenant's apps host
    cluster: str | None = None  # the seat (k8s.cluster.name) it was sent for, on a shared tenant
    _link: str | None = field(default=None, repr=False, compare=False)

    @property
    def link(self) -> str | None:
        """The event in a Notebook of the tenant; made when first asked, so sending stays as quick as
        a bare POST."""
        if self._link is None and self.ui:
            self._link = notebook_link(self.ui, _run_events_query(self.service, self.run_id,
                                                                  Scope(self.cluster)),
                                       self.sent_at - timedelta(minutes=5), self.sent_at + timedelta(hours=1))
        return self._link

    @link.setter
    def link(self, value: str | None) -> None:
        self._link = value

    @property
    def ok(self) -> bool:
        return self.report_count > 0 and all(s == "OK" for s in self.statuses)

    def summary(self) -> str:
        old = f"{self.old} -> " if self.old is not None else ""
        seat = f" of {self.cluster}" if self.cluster else ""
        text = (f"change event for service {self.service!r}{seat}: {self.flag} {old}{self.new} "
                f"(run {self.run_id}) recorded on {self.report_count} entit"
                f"{'y' if self.report_count == 1 else 'ies'}, status {', '.join(self.statuses) or '-'}")
        return text + "".join(f"; warning: {w}" for w in self.warnings)

    __repr__ = __str__ = summary

    def _repr_html_(self) -> str:
        return cards.change_event(self)


def _run_events_query(service: str, run_id: str, scope: Scope) -> str:
    """DQL for this run's change events on `service` (ingested properties are fields in Grail)."""
    return scope.dql(f"fetch events | filter event.type == {dql_string(EVENT_TYPE)} and "
                     f"dt.entity.service.name == {dql_string(service)} and labkit.run_id == "
                     f"{dql_string(run_id)} | sort timestamp desc")


def _check_change(service: str, flag: str, new, old) -> None:
    """BadInput for an empty flag or value, or a name with a line break or control character."""
    if not isinstance(flag, str) or not flag.strip():
        raise BadInput("The flag name is empty; name the flag, e.g. 'cartFailure'.")
    if new is None or (isinstance(new, str) and not new.strip()):
        raise BadInput(f"The new value of {flag[:60]!r} is empty; name the variant, e.g. 'on'.")
    for label, value in (("flag name", flag), ("service name", service), ("new value", new), ("old value", old)):
        if isinstance(value, str) and _CONTROL.search(value):
            raise BadInput(f"The {label} {value[:60]!r} contains a line break or control character; "
                           "Dynatrace names and flag keys are one line.")


def _change_event_body(title: str, selector: str, flag: str, new, old, run_id: str,
                       scope: Scope = Scope()) -> dict:
    """The lab's CUSTOM_CONFIGURATION payload, every property value a string; on a shared tenant
    it also names the seat (k8s.cluster.name), and the selector is the seat's own entity."""
    properties = {
        "dt.event.is_rootcause_relevant": "true",
        "action": "changed",
        "feature_flag.key": flag,
        "defaultValue": as_str(new),
    }
    if old is not None:
        properties["previousValue"] = as_str(old)
    properties["labkit.run_id"] = run_id
    properties.update(scope.event_properties())
    return {"title": title, "entitySelector": selector, "eventType": EVENT_TYPE,
            "properties": properties}


def _ingest_result(resp: httpx.Response, what: str, selector: str, event: ChangeEvent) -> ChangeEvent:
    """`event` with the tenant's answer filled in; LabError when an entity's status is not OK."""
    try:
        result = resp.json()
    except (ValueError, UnicodeDecodeError):
        raise Unreachable(maybe_recorded_message(
            what, f"HTTP {resp.status_code} with a body that is not JSON")) from None
    if not isinstance(result, dict):
        raise Unreachable(maybe_recorded_message(what, "an answer that is not a JSON object"))
    results = [r for r in (result.get("eventIngestResults") or []) if isinstance(r, dict)]
    event.statuses = [str(r.get("status", "")) for r in results]
    event.correlation_ids = [str(r["correlationId"]) for r in results if r.get("correlationId")]
    try:
        event.report_count = int(result.get("reportCount", len(results)))
    except (TypeError, ValueError):
        event.report_count = len(results)
    bad = [s for s in event.statuses if s != "OK"]
    if bad:
        raise LabError(
            f"Dynatrace accepted the request but did not record {what} on every entity: status "
            f"{', '.join(bad)} (HTTP {resp.status_code}). Check the service in Dynatrace; "
            f"the lab's selector is {selector}.")
    return event


class ChangeEvents:
    """The change events of this lab: sent to the service's entity, read back by service or id."""

    def __init__(self, client: Client, entities: Entities):
        self.client = client
        self.entities = entities

    def send(self, service: str, flag: str, new, old=None, run_id: str | None = None,
             title: str = "feature flag changed") -> ChangeEvent:
        """See Dynatrace.send_change_event."""
        _check_change(service, flag, new, old)
        selector, warnings = self.entities.event_target(service)
        run_id = run_id or uuid.uuid4().hex[:12]
        scope = self.client.scope
        body = _change_event_body(title, selector, flag, new, old, run_id, scope)
        sent_at = datetime.now(timezone.utc)
        what = f"the change event for {flag} on service {service!r}"
        resp = self.client.http.request("classic", "POST", "/api/v2/events/ingest", body=body,
                                        scope=INGEST_SCOPE, what=what, idempotent=False, event=True)
        event = _ingest_result(resp, what, selector, ChangeEvent(
            service=service, flag=flag, old=None if old is None else as_str(old), new=as_str(new),
            run_id=run_id, sent_at=sent_at, report_count=0, warnings=warnings, ui=self.client.ui,
            cluster=scope.cluster))
        if event.report_count == 0:
            self.entities.forget(service)
            note = "".join(f" ({w})" for w in warnings)
            raise LabError(
                f"No entity matched {selector}: {what} was not recorded{note}. The service was not "
                f"seen in the last 24 hours, or its name differs (Dynatrace shows it under Services). "
                "Send some traffic (labkit shop) and try again.")
        for w in warnings:
            log.warning("%s", w)
        return event

    def of_service(self, service: str, since="now-2h") -> "pd.DataFrame":
        """See Dynatrace.change_events."""
        params = {"eventSelector": f'eventType("{EVENT_TYPE}")',
                  "entitySelector": service_selector(service),
                  "from": time_param(since), "pageSize": 1000}
        events = self.client.paged("/api/v2/events", "events", scope="events.read",
                                   what=f"to read change events of service {service!r}", params=params)
        events = [e for e in events if self.client.scope.owns_event(e)]
        return self._with_links(change_event_frame(events), service, since)

    def one(self, event_id: str) -> "pd.DataFrame":
        """See Dynatrace.change_event."""
        if not isinstance(event_id, str) or not re.fullmatch(r"-?[0-9]+_[0-9]+", event_id):
            raise BadInput(f"{event_id!r} is not an event id (like -4321987654321098765_1754552700000).")
        body = self.client.get_json(f"/api/v2/events/{event_id}", scope="events.read",
                                    what=f"to read the event {event_id}")
        return self._with_links(change_event_frame([body]), None, None)

    def _with_links(self, frame: "pd.DataFrame", service: str | None, since) -> "pd.DataFrame":
        ui = self.client.ui
        frame["link"] = [notebook_link(ui, f"fetch events | filter event.id == {dql_string(str(i))}")
                         for i in frame["event_id"]]
        if service is not None:
            query = (f"fetch events, from: {dql_from(since)} | filter event.type == "
                     f"{dql_string(EVENT_TYPE)} and dt.entity.service.name == {dql_string(service)}"
                     " | sort timestamp desc")
            frame.attrs["link"] = notebook_link(ui, self.client.scope.dql(query))
        return frame
