"""What is observed of a change: waits for its error logs and its problem, the problems with their
descriptions, logs, a failed trace, the runbook, the change events and the verdict.

The waits record what they saw on the run's timeline (error logs, problem opened), once per cycle.
`Lab`'s observing verbs are a line each over an `Observed`; it takes Dynatrace, the timeline and the
settings it reads (never the Lab itself).
"""
from __future__ import annotations

from datetime import datetime, timedelta

from labkit import cards
from labkit.answers import Trace, TraceLogs
from labkit.errors import LabError
from labkit.progress import Progress
from labkit.settings import Settings
from labkit.timeline import ERROR_LOGS, FLAG_APPLIED, PROBLEM_OPENED, Timeline, now


class Observed:
    """What Dynatrace has seen of this run's changes, as tables and answers."""

    def __init__(self, dynatrace, timeline: Timeline, settings: Settings):
        self.dynatrace = dynatrace
        self.timeline = timeline
        self.settings = settings

    # --- when to look from ----------------------------------------------------------------------
    def since(self) -> datetime:
        """Start of this run's charts: 10 min before its first step, else the last 30 min."""
        if self.timeline.steps:
            return self.timeline.steps[0].time - timedelta(minutes=10)
        return now() - timedelta(minutes=30)

    def since_change(self, otherwise: timedelta) -> datetime:
        """What a wait looks at: from the last flag change of this run, else the last `otherwise`."""
        change = self.timeline.last(FLAG_APPLIED)
        return change.time if change else now() - otherwise

    # --- the waits ------------------------------------------------------------------------------
    def wait_for_error_logs(self, timeout: float, service: str, progress: Progress | None):
        from labkit import tables

        logs = tables.shown_as(tables.Logs, self.dynatrace.wait_for_error_logs(
            service, since=self.since_change(timedelta(minutes=30)), timeout=timeout, progress=progress))
        if not self.timeline.in_cycle(ERROR_LOGS) and len(logs):
            self.timeline.add(ERROR_LOGS, note=f"{len(logs)} error logs", at=logs["timestamp"].min())
        return logs

    def wait_for_problem(self, timeout: float, service: str, progress: Progress | None):
        from labkit import tables
        from labkit.tenant.check import require_problem_possible

        require_problem_possible(self.dynatrace)  # a wait that cannot end says why at once
        found = tables.shown_as(tables.Problems, self.dynatrace.wait_for_problem(
            service, since=self.since_change(timedelta(hours=1)), timeout=timeout, progress=progress))
        if not self.timeline.in_cycle(PROBLEM_OPENED):
            self.record_problem(found)
        return self.described(found)

    def record_problem(self, found) -> None:
        """The cycle's "problem opened" step: a problem no earlier step named. Davis dates a problem
        from the first error log it groups, which can be a stray one from before this change (a quick
        on/off earlier); then the step stands at this cycle's first error log, the date in its note."""
        known = {s.note.split(":")[0] for s in self.timeline.steps if s.kind == PROBLEM_OPENED}
        fresh = found[~found["display_id"].isin(known)]
        if not len(fresh):
            return
        first = fresh.sort_values("start").iloc[0]
        start, at = self.timeline.cycle_start(), first["start"]
        note = f"{first['display_id']}: {first['title']}"
        if start is not None and at < start:
            errors = self.timeline.in_cycle(ERROR_LOGS)
            at = errors.time if errors else now()
            note += f" (Davis dates it from {cards.when(first['start'])}, an error log before this change)"
        self.timeline.add(PROBLEM_OPENED, note=note, at=at)

    # --- problems, logs, traces -----------------------------------------------------------------
    def failed_requests(self, service: str, since: datetime | str | None, resolution: str):
        return self.dynatrace.failed_requests(service, since=since or self.since(), resolution=resolution)

    def problems(self, service: str, since: datetime | str):
        from labkit import tables

        return self.described(tables.shown_as(tables.Problems, self.dynatrace.problems(service, since=since)))

    def described(self, found):
        """The problems with their descriptions (01's table as complete as 02's)."""
        found["description"] = found["problem_id"].map(self._descriptions(found["problem_id"]))
        return found

    def _descriptions(self, problem_ids) -> dict[str, str]:
        """The problems' descriptions (with the runbook link) where Grail can tell; none without a
        platform token or when the query fails (the problems themselves still show)."""
        if not len(problem_ids) or not self.settings.platform_token:
            return {}
        try:
            return self.dynatrace.problem_descriptions(list(problem_ids))
        except LabError:
            return {}

    def error_logs(self, service: str, since, limit: int):
        from labkit import tables

        return tables.shown_as(tables.Logs, self.dynatrace.error_logs(service, since=since, limit=limit))

    def trace_logs(self, trace_id: str | None, service: str, since):
        """All logs of one trace, oldest first; by default the failed trace failed_trace() draws (one
        checkout took part in, else the newest error log's). An empty result says why (no error logs
        yet, or none of that trace) instead of failing."""
        from labkit import tables

        if trace_id is None:
            trace_id = self._failed_trace_id(service, since)
            if trace_id is None:
                why = (f"no error logs of {service!r} {_ago(since)} carry a trace id, so there is no "
                       "failed trace to follow: introduce the change and send traffic first "
                       "(01-introduce-change), then run this again")
                return TraceLogs(None, tables.Logs(columns=["timestamp", "loglevel", "content"]), why)
        logs = self.dynatrace.logs_for_trace(trace_id)
        why = "" if len(logs) else (f"Dynatrace has no logs of trace {trace_id} in the last day; logs "
                                    "arrive a little after the request: run this again in a minute")
        return TraceLogs(trace_id, logs, why, link=self.dynatrace.trace_link(trace_id))

    def _failed_trace_id(self, service: str, since) -> str | None:
        """The trace of one of `service`'s newest error logs: one that checkout took part in (the
        review page's trace: an order placed, then EmptyCart failed), else the newest."""
        errors = self.error_logs(service, since=since, limit=20)
        ids = [str(t) for t in errors["trace_id"].fillna("") if str(t)] if len(errors) else []
        if not ids:
            return None
        try:
            through = self.dynatrace.traces_through(ids, "checkout")
        except LabError:  # no spans to ask: the newest error log's trace
            through = set()
        return next((t for t in ids if t in through), ids[0])

    def failed_trace(self, trace_id: str | None, service: str, since):
        """The spans of one failed trace as a waterfall (checkout → … → EmptyCart); by default the
        trace of `service`'s newest error log. An empty result says why instead of failing."""
        import pandas as pd

        local = self.settings.local
        if trace_id is None:
            trace_id = self._failed_trace_id(service, since)
            if trace_id is None:
                return Trace(None, pd.DataFrame(columns=["start", "failed"]),
                             f"no error logs of {service!r} {_ago(since)} carry a trace id: introduce "
                             "the change and send traffic first (01-introduce-change)", local)
        try:
            spans = self.dynatrace.trace_spans(trace_id)
        except LabError as exc:  # no platform token, or a tenant (or local lab) without spans
            return Trace(trace_id, pd.DataFrame(columns=["start", "failed"]), str(exc), local)
        why = "" if len(spans) else (f"Dynatrace has no spans of trace {trace_id} in the last day yet: "
                                     "spans arrive a little after the request; run this again in a minute")
        return Trace(trace_id, spans, why, local)

    # --- the review -----------------------------------------------------------------------------
    def runbook(self, service: str):
        """The Ops runbook the problem's description links, with its two charts (the error trend of
        the last 30 min; changes and problems of the last day on one chart)."""
        from labkit import runbook

        problems = self.problems(service, since="now-1d")
        linked = [(runbook.runbook_link(r["description"]), r) for _, r in problems.iterrows()]
        link, row = next(((url, r) for url, r in linked if url), (None, None))
        named = f"{row['display_id']} {row['title']}" if row is not None else ""
        return runbook.Runbook(link, named, self.failed_requests(service, "now-30m", "1m"),
                               self.change_events(service, since="now-1d"), problems, service)

    def change_events(self, service: str, since):
        from labkit import tables

        return tables.shown_as(tables.ChangeEvents, self.dynatrace.change_events(service, since=since))

    def judge(self, service: str, failed, flag: str):
        """The verdict over `failed` (the chart's subtitle and lab.verdict() say the same)."""
        from labkit import verdict

        return verdict.judge(self.dynatrace, self.timeline, failed, service, flag)


def _ago(since) -> str:
    """'in the last hour' for 'now-1h', else 'since <time>'."""
    text = str(since)
    words = {"now-1h": "in the last hour", "now-1d": "in the last day", "now-2h": "in the last 2 hours"}
    return words.get(text, f"since {text}")
