"""Logs and traces: the service's error logs and one trace's logs (Grail with the platform token,
else the classic log search), waiting for error logs, and what Grail's spans tell (the traces a
service took part in, one trace's spans, which variant the cart itself evaluated)."""
from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Callable

from labkit.dynatrace._client import Client
from labkit.dynatrace._frames import classic_log_row, evaluation_frame, grail_log_row, log_frame, span_frame
from labkit.dynatrace._http import platform_token_message
from labkit.dynatrace._links import logs_link, trace_link
from labkit.dynatrace._query import as_datetime, dql_from, dql_string, time_param
from labkit.dynatrace._wait import wait_for
from labkit.errors import BadInput, Forbidden, LabError, NotFound
from labkit.progress import Progress

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Log levels Dynatrace gives `status == "ERROR"` (fidelity.md): all of them are error logs.
ERROR_LEVELS = frozenset({"SEVERE", "ERROR", "CRITICAL", "ALERT", "FATAL", "EMERGENCY"})
_TRACE_ID = r"[0-9a-fA-F]{16,32}"


class Logs:
    def __init__(self, client: Client):
        self.client = client

    def errors(self, service: str, since="now-1h", limit: int = 100) -> "pd.DataFrame":
        """See Dynatrace.error_logs."""
        limit = max(1, min(int(limit), 10000))
        # status, not loglevel: Dynatrace marks SEVERE, CRITICAL, FATAL, ... as status ERROR too
        query = (f"fetch logs, from: {dql_from(since)} | filter service.name == {dql_string(service)}"
                 f' and status == "ERROR" | sort timestamp desc | limit {limit}')
        classic_query = f'status="ERROR" AND service.name="{service.replace(chr(34), "")}"'
        frame = self._logs(query, classic_query, since=since, limit=limit, newest_first=True,
                           keep=lambda r: r["service"] in (None, service) and _is_error(r))
        frame.attrs["link"] = logs_link(self.client.ui, self.client.scope.dql(query.rsplit(" | limit ", 1)[0]),
                                        since)
        return frame

    def of_trace(self, trace_id: str, since="now-1d", limit: int = 1000) -> "pd.DataFrame":
        """See Dynatrace.logs_for_trace."""
        _check_trace_id(trace_id)
        query = (f"fetch logs, from: {dql_from(since)} | filter trace_id == {dql_string(trace_id)}"
                 f" | sort timestamp asc | limit {int(limit)}")
        classic_query = f'trace_id="{trace_id}"'
        return self._logs(query, classic_query, since=since, limit=limit, newest_first=False,
                          keep=lambda r: r["trace_id"] in (None, trace_id))

    def wait_for_errors(self, service: str, since: datetime, timeout: float = 300.0,
                        progress: Progress | None = None, limit: int = 100) -> "pd.DataFrame":
        """See Dynatrace.wait_for_error_logs."""
        since = as_datetime(since)

        def check():
            frame = self.errors(service, since=since, limit=limit)
            return frame[frame["timestamp"] >= since].reset_index(drop=True)

        return wait_for(check, timeout, progress,
                        f"error logs of service {service!r}",
                        f"No error logs from service {service!r} reached Dynatrace within {timeout:g} s "
                        "after the change. Check that the flag is on (labkit flags), that traffic "
                        "exercises the cart (labkit shop) and that logs are shipped.")

    def _logs(self, query: str, classic_query: str, *, since, limit: int, newest_first: bool,
              keep: Callable[[dict], bool]) -> "pd.DataFrame":
        grail_problem: LabError | None = None
        rows: list[dict] | None = None
        settings = self.client.settings
        if settings.platform_token:
            try:
                rows = [grail_log_row(r) for r in self.client.dql(query, max_records=limit)]
            except NotFound as exc:  # no Grail on this host: maybe classic log storage
                grail_problem = exc
        if rows is None:
            if not settings.api_token:
                raise Forbidden(platform_token_message() + f" (Grail said: {grail_problem})")
            try:
                rows = self._classic_logs(classic_query, since, limit)
            except (Forbidden, NotFound):
                why = f" (Grail said: {grail_problem})" if grail_problem else ""
                raise Forbidden(platform_token_message() + why) from None
        rows = [r for r in rows if keep(r)]
        return log_frame(rows, newest_first)

    def _classic_logs(self, query: str, since, limit: int) -> list[dict]:
        params = {"query": self.client.scope.classic_log_query(query), "from": time_param(since),
                  "limit": min(limit, 1000),
                  "sort": "-timestamp"}
        body = self.client.get_json("/api/v2/logs/search", scope="logs.read", what="to search logs",
                                    params=params)
        return [classic_log_row(r) for r in (body.get("results") or []) if isinstance(r, dict)]

    # ---- traces and spans (Grail)

    def traces_through(self, trace_ids, service: str, since="now-1d") -> set[str]:
        """See Dynatrace.traces_through."""
        ids = [t for t in trace_ids if isinstance(t, str) and re.fullmatch(_TRACE_ID, t)][:20]
        if not ids:
            return set()
        match = " or ".join(f"trace.id == {dql_string(t)}" for t in ids)
        query = (f"fetch spans, from: {dql_from(since)} | filter service.name == {dql_string(service)}"
                 f" and ({match}) | fields trace.id | limit 1000")
        return {str(r.get("trace.id")) for r in self.client.dql(query, max_records=1000)}

    def trace_spans(self, trace_id: str, since="now-1d", limit: int = 1000) -> "pd.DataFrame":
        """See Dynatrace.trace_spans."""
        _check_trace_id(trace_id)
        query = (f"fetch spans, from: {dql_from(since)} | filter trace.id == {dql_string(trace_id)}"
                 f" | sort start_time asc | limit {int(limit)}")
        frame = span_frame(self.client.dql(query, max_records=limit))
        frame.attrs["link"] = trace_link(self.client.ui, trace_id)
        return frame

    def cart_evaluations(self, since="now-30m", flag: str = "cartFailure", service: str = "cart") -> "pd.DataFrame":
        """See Dynatrace.cart_evaluations."""
        event = 'span.events[span_event.name] == "feature_flag.evaluation"'
        query = (f"fetch spans, from: {dql_from(since)} | filter service.name == {dql_string(service)}"
                 ' | filter iAny(span.events[][span_event.name] == "feature_flag.evaluation")'
                 f" | expand span.events | filter {event} and span.events[feature_flag.key] == {dql_string(flag)}"
                 " | fields start_time, variant = span.events[feature_flag.result.variant],"
                 " value = span.events[feature_flag.result.value], reason = span.events[feature_flag.result.reason],"
                 " error = span.events[error.type]"
                 " | summarize calls = count(), first_seen = min(start_time), last_seen = max(start_time),"
                 " by: { variant, value, reason, error } | sort last_seen desc")
        if not self.client.settings.platform_token:
            raise Forbidden("Reading the cart's span events needs a platform token: set DT_PLATFORM_TOKEN to a "
                            "token with storage:spans:read and storage:buckets:read (spans are in Grail only).")
        return evaluation_frame(self.client.dql(query, max_records=100))


def _check_trace_id(trace_id) -> None:
    if not isinstance(trace_id, str) or not re.fullmatch(_TRACE_ID, trace_id):
        raise BadInput(f"{trace_id!r} is not a trace id (32 hex digits, as in a log's trace_id).")


def _is_error(row: dict) -> bool:
    """An error log: status ERROR, or (no status) a level Dynatrace counts as one."""
    if row.get("status"):
        return str(row["status"]).upper() == "ERROR"
    return str(row.get("loglevel") or "ERROR").upper() in ERROR_LEVELS
