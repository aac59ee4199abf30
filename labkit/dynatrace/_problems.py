"""Problems: the ones affecting the lab's service (its workload's pods, where the lab's pipeline
opens it, or the service itself), this seat's only on a shared tenant; their descriptions from
Grail; and waiting for one to open."""
from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from labkit.dynatrace._client import Client
from labkit.dynatrace._entities import Entities, unless_not_allowed
from labkit.dynatrace._frames import problem_frame, workload_pod
from labkit.dynatrace._links import problem_link
from labkit.dynatrace._query import as_datetime, dql_from, dql_string, time_param
from labkit.dynatrace._wait import wait_for
from labkit.errors import BadInput, Forbidden
from labkit.progress import Progress

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


class Problems:
    def __init__(self, client: Client, entities: Entities):
        self.client = client
        self.entities = entities

    def read(self, service: str | None = None, since="now-1d", status: str | None = None) -> "pd.DataFrame":
        """See Dynatrace.problems."""
        criteria = []
        if status is not None:
            status = str(status).lower()
            if status not in ("open", "closed"):
                raise BadInput(f"status must be 'open' or 'closed' (or None for both); got {status!r}.")
            criteria.append(f'status("{status}")')
        params = {"problemSelector": ",".join(criteria) or None, "from": time_param(since),
                  "pageSize": 500}
        what = "to read problems" + (f" of service {service!r}" if service else "")
        items = self.client.paged("/api/v2/problems", "problems", scope="problems.read", what=what,
                                  params=params)
        if service is not None:
            ids = functools.cache(lambda: {e.id for e in (
                self.entities.named(service) if self.client.scope else [self.entities.require(service)])})
            items = [p for p in items if _affects(p, service, ids)]
        frame = problem_frame(self._seat_problems(items, service))
        # the link beside what a person reads; the internal id stays the last column
        frame.insert(len(frame.columns) - 1, "link",
                     [problem_link(self.client.ui, p) for p in frame["problem_id"]])
        return frame

    def descriptions(self, problem_ids) -> dict[str, str]:
        """See Dynatrace.problem_descriptions."""
        ids = [str(i) for i in problem_ids if isinstance(i, str) and i]
        if not ids:
            return {}
        match = " or ".join(f"event.id == {dql_string(i)}" for i in ids[:50])
        records = self.client.dql(f"fetch dt.davis.problems, from: {dql_from('now-7d')} | filter {match}"
                                  " | fields event.id, event.description", max_records=200)
        return {str(r.get("event.id")): str(r.get("event.description") or "") for r in records}

    def wait(self, service: str, since: datetime, timeout: float = 600.0,
             progress: Progress | None = None) -> "pd.DataFrame":
        """See Dynatrace.wait_for_problem."""
        since = as_datetime(since)

        def check():
            frame = self.read(service, since=since - timedelta(minutes=5))
            fresh = (frame["start"] >= since) | (frame["status"].astype("string").str.upper() == "OPEN")
            return frame[fresh.fillna(False)].reset_index(drop=True)

        return wait_for(check, timeout, progress, f"a problem on service {service!r} or its pods",
                        f"No problem on service {service!r} (or its pods) opened within {timeout:g} s. "
                        "The tenant opens it from the first routed error log, so check that the error "
                        "logs arrived tagged with alertmessage and priority (labkit logs) and that the "
                        "tenant has the lab's pipeline and route (labkit check).")

    def _seat_problems(self, items: list[dict], service: str | None) -> list[dict]:
        """The problems of this seat: its k8s.cluster.name on the problem, or (a problem without
        that field) its own entity among the affected ones; without a seat, all of them."""
        scope = self.client.scope
        if not scope:
            return items
        mine, seat = [], None
        for p in items:
            owned = scope.owns_problem(p)
            if owned is None and service is not None:
                try:
                    seat = seat or self.entities.seat(service)
                except Forbidden as exc:  # no Grail: a problem without a cluster is nobody's
                    unless_not_allowed(exc)
                affected = [(x.get("entityId") or {}).get("id") for x in p.get("affectedEntities") or []
                            if isinstance(x, dict)]
                owned = seat is not None and seat.id in affected
            if owned:
                mine.append(p)
        return mine


def _affects(problem: dict, service: str, service_ids) -> bool:
    """A pod of the service's workload among the problem's affected entities, or the service's own
    entity (`service_ids()`: read only when a problem names a service)."""
    stubs = [x for x in problem.get("affectedEntities") or [] if isinstance(x, dict)]
    if any(workload_pod(x.get("name"), service) for x in stubs):
        return True
    ids = {(x.get("entityId") or {}).get("id") for x in stubs}
    return any(str(i).startswith("SERVICE-") for i in ids) and bool(ids & service_ids())
