"""A DQL query on Grail: execute, poll until it ends (bounded), cancel when the time is up.

A result the tenant no longer keeps (a poll's 410, or state RESULT_GONE) is fetched by running the
query once more; FAILED and CANCELLED say what they mean for the user.
"""
from __future__ import annotations

import itertools
import logging
import time
from typing import Any

import httpx

from labkit.dynatrace._http import Http, ResultGone, error_envelope, json_object, req
from labkit.errors import LabError, LabTimeout, Unreachable
from labkit.progress import Progress

_EXECUTE = "/platform/storage/query/v1/query:execute"
_POLL = "/platform/storage/query/v1/query:poll"
_CANCEL = "/platform/storage/query/v1/query:cancel"
_WHAT = "a Grail query"

log = logging.getLogger(__name__)


def grail_scope(query: str) -> str:
    """The platform-token scopes a query needs, for the Forbidden message."""
    q = query.lstrip().lower()
    if q.startswith("fetch logs"):
        return "storage:logs:read and storage:buckets:read"
    if q.startswith("timeseries"):  # the metric table is bucketed too (dynatrace-answers.md §1)
        return "storage:metrics:read and storage:buckets:read"
    if q.startswith("fetch spans"):
        return "storage:spans:read and storage:buckets:read"
    if q.startswith("fetch events") or q.startswith("fetch dt.davis"):
        return "storage:events:read and storage:buckets:read"
    if q.startswith("fetch dt.entity"):
        return "storage:entities:read"
    return "storage:buckets:read"


def run_dql(http: Http, query: str, *, timeout: float, progress: Progress | None,
            max_records: int | None) -> list[dict]:
    """The records of `query`; LabError when it fails, LabTimeout (cancelled) after `timeout` s.
    A result gone before it was read is run for once more."""
    try:
        return _run(http, query, timeout=timeout, progress=progress, max_records=max_records)
    except ResultGone:
        log.info("the Grail result was gone before labkit read it; running the query again")
    try:
        return _run(http, query, timeout=timeout, progress=progress, max_records=max_records)
    except ResultGone:
        raise LabError(
            "The Grail query's result expired before labkit could read it, twice (410 / "
            "RESULT_GONE). The tenant keeps a result only about a minute after it finishes: run "
            "the step again; if it keeps happening, the tenant or the network is slow.") from None


def _run(http: Http, query: str, *, timeout: float, progress: Progress | None,
         max_records: int | None) -> list[dict]:
    body: dict[str, Any] = {"query": query, "requestTimeoutMilliseconds": 2000}
    if max_records:
        body["maxResultRecords"] = int(max_records)
    scope = grail_scope(query)
    resp = http.request("grail", "POST", _EXECUTE, body=body, scope=scope, what=_WHAT)
    state = json_object(resp, _WHAT)
    deadline = time.monotonic() + timeout
    token = None
    for poll in itertools.count(1):
        st = str(state.get("state", "")).upper()
        records = _records(http, state, st)
        if records is not None:
            if progress:
                progress("query finished", 1.0)
            return records
        token = state.get("requestToken") or token  # poll answers do not repeat it
        if st not in ("RUNNING", "NOT_STARTED") or not token:
            raise Unreachable(f"The tenant answered something unexpected for {req(_WHAT)} "
                              f"(state {st or 'missing'}). Try again.")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _cancel(http, token)
            raise LabTimeout(f"The Grail query did not finish within {timeout:g} s (last state "
                             f"{st}). Narrow the timeframe or try again.")
        if progress:
            prog = state.get("progress")
            progress(f"query {st.lower()}", (float(prog) / 100) if isinstance(prog, (int, float)) else None)
        state = _poll(http, token, poll, remaining, scope)


def _records(http: Http, state: dict, st: str) -> list[dict] | None:
    """The records of a finished query, None while it runs; LabError when it ended badly."""
    if st == "SUCCEEDED" or (not st and "result" in state):
        result = state.get("result") or {}
        records = result.get("records") if isinstance(result, dict) else None
        return [r for r in (records or []) if isinstance(r, dict)]
    message, _ = error_envelope(state)
    said = f": {http.scrub(message)}" if message else ""
    if st == "RESULT_GONE":
        raise ResultGone(f"The Grail query ended RESULT_GONE{said}.")
    if st == "FAILED":
        raise LabError(f"The Grail query FAILED on the tenant{said}. The query itself was refused "
                       "or could not run (too much data, a field or bucket it may not read): check "
                       "it, or narrow its timeframe.")
    if st == "CANCELLED":
        raise LabError(f"The Grail query was CANCELLED on the tenant{said}. Grail cancels a query "
                       "that runs too long or is not polled in time, or someone cancelled it: run "
                       "it again, or narrow its timeframe.")
    return None


def _poll(http: Http, token: str, poll: int, remaining: float, scope: str) -> dict:
    """The query's state after poll number `poll` (the server holds each up to 2 s)."""
    if poll > 1:  # the server holds each poll up to request-timeout; pause a little anyway
        time.sleep(min(0.05 * poll, 0.5, max(remaining, 0)))
    wait_ms = int(min(2000, max(remaining, 0.05) * 1000))
    resp = http.request("grail", "GET", _POLL,
                        params={"request-token": token, "request-timeout-milliseconds": wait_ms},
                        scope=scope, what=_WHAT, timeout=http.timeout + wait_ms / 1000)
    return json_object(resp, _WHAT)


def _cancel(http: Http, token: str) -> None:
    """Best effort: a query given up on should not keep running on the tenant."""
    try:
        http.client("grail").post(_CANCEL, params={"request-token": token}, timeout=2.0)
    except httpx.HTTPError:
        pass
