"""Links into the tenant's own screens: a problem, a service, the Logs app, a query in a Notebook.

All on the apps host (fidelity.md): the Problems app `/ui/apps/dynatrace.davis.problems/problem/{id}`
(the problem's internal id, not its P- display id), the Services app
`/ui/apps/dynatrace.services/explorer?detailsId={SERVICE-...}&sidebarOpen=false`, the Logs app and
a Notebook opened on a query through their intents (`view_query`, `view-query`; the DQL in the
fragment, spaces as %20), the Distributed traces app on one trace (`view-trace`); the formats are
dynatrace-answers.md §6's. A link never carries a token.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from urllib.parse import quote

from labkit.dynatrace._query import _REL, as_datetime

_FROM = re.compile(r"from: ?now\(\)-\d+s\b")  # the seconds dql_from() makes of a time


def problem_link(base: str, problem_id: str) -> str:
    return f"{base}/ui/apps/dynatrace.davis.problems/problem/{quote(str(problem_id), safe='')}"


def service_link(base: str, entity_id: str) -> str:
    return (f"{base}/ui/apps/dynatrace.services/explorer?detailsId={quote(str(entity_id), safe='')}"
            "&sidebarOpen=false")


def logs_link(base: str, query: str, since=None) -> str:
    """The Logs app showing `query` (its DQL, whose `from:` carries the timeframe) through its
    view_query intent: the app's own state in the fragment is internal and versioned, the intent is
    not (dynatrace-answers.md §6).

    A `since` that is a time (the change's) goes into the link as that time, an absolute
    `from:"2026-12-07T09:49:51.000Z"` (DQL's ISO 8601 form): the query's own `now()-34s` is right
    when it runs, but a link opened five minutes later would start after the change's errors.
    A relative `since` ('now-1h') stays relative: that is what was asked for."""
    if since is not None and not (isinstance(since, str) and _REL.match(since.strip())):
        query = _FROM.sub(f'from: "{_iso(as_datetime(since))}"', query, count=1)
    payload = json.dumps({"dt.query": query}, separators=(",", ":"))
    return f"{base}/ui/apps/dynatrace.logs/intent/view_query#{quote(payload, safe='')}"


def notebook_link(base: str, query: str, start: datetime | None = None,
                  end: datetime | None = None) -> str:
    """A Notebook opened on `query` (the view-query intent), optionally over [start, end]."""
    payload: dict = {"dt.query": query}
    if start is not None:
        end = end or datetime.now(timezone.utc)
        payload["dt.timeframe"] = {"from": _iso(start), "to": _iso(end)}
    return (f"{base}/ui/intent/dynatrace.notebooks/view-query"
            f"#{quote(json.dumps(payload, separators=(',', ':')), safe='')}")


def _iso(when: datetime) -> str:
    return as_datetime(when).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def trace_link(base: str, trace_id: str) -> str:
    """The Distributed traces app on one trace (its view-trace intent; spaces as %20, never +)."""
    payload = json.dumps({"trace_id": str(trace_id)}, separators=(",", ":"))
    return f"{base}/ui/intent/dynatrace.distributedtracing/view-trace#{quote(payload, safe='')}"
