"""Links into the tenant's own screens: a problem, a service, the Logs app, a query in a Notebook.

All on the apps host (fidelity.md): the Problems app `/ui/apps/dynatrace.davis.problems/problem/{id}`
(the problem's internal id, not its P- display id), the Services app
`/ui/apps/dynatrace.services/explorer?detailsId={SERVICE-...}`, the Logs app
`/ui/apps/dynatrace.logs/?gtf=...#<state>` with the DQL in its fragment, and a Notebook opened on a
query through the `view-query` intent. A link never carries a token.
"""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from urllib.parse import quote

from labkit.dynatrace._query import as_datetime


def problem_link(base: str, problem_id: str) -> str:
    return f"{base}/ui/apps/dynatrace.davis.problems/problem/{quote(str(problem_id), safe='')}"


def service_link(base: str, entity_id: str) -> str:
    return f"{base}/ui/apps/dynatrace.services/explorer?detailsId={quote(str(entity_id), safe='')}"


def _relative(since) -> str:
    """The Logs app's global timeframe, e.g. -90m, from since."""
    minutes = max(1, math.ceil((datetime.now(timezone.utc) - as_datetime(since)).total_seconds() / 60))
    return f"-{minutes // 60}h" if minutes % 60 == 0 else f"-{minutes}m"


def logs_link(base: str, query: str, since) -> str:
    """The Logs app showing `query` (its DQL) over the timeframe since `since`."""
    state = {"version": "0", "data": {"queryConfig": {
        "query": query, "timeframe": {"from": f"now(){_relative(since)}", "to": "now()"},
        "showDqlEditor": True}}}
    return (f"{base}/ui/apps/dynatrace.logs/?gtf={_relative(since)}&gf=all&advancedQueryMode=true"
            f"#{quote(json.dumps(state, separators=(',', ':')), safe='')}")


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
