"""The Ops runbook the problem's description links (the lab's "Redis Troubleshooting" notebook):
where it is, and its two charts drawn from the lab's own data.

Chart 1, the error trend: the cart's failed requests per minute (the runbook's
`timeseries avg(dt.service.request.failure_count)`). Chart 2: configuration changes and problems on
one chart (its `fetch events ... makeTimeseries count(), by: {feature_flag.key, defaultValue}` with
`fetch dt.davis.problems ... matchesPhrase(event.name, "redis")` appended): counts per minute, one
series per flag value and per problem title. plotly is imported when a chart is drawn.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from labkit import cards

_LINK = re.compile(r"\[([^\]]*runbook[^\]]*)\]\((https?://[^)\s]+)\)", re.I)
TREND_COLOR = "#d62728"
CHANGE_COLOR = "#6a3d9a"
PROBLEM_COLOR = "#ff7f0e"


def runbook_link(description) -> str | None:
    """The runbook's URL in a problem description (the cart's supportInfo markdown), if any."""
    m = _LINK.search(str(description or ""))
    return m.group(2) if m else None


def _minute(ts):
    import pandas as pd

    return pd.Timestamp(ts).tz_convert("UTC").floor("min").tz_localize(None)


def _slot_starts(frame):
    """Each slot's start (the data is stamped with the slot's end): the minute it covers."""
    import pandas as pd

    ts = pd.to_datetime(frame["timestamp"], utc=True)
    step = ts.diff().median() if len(ts) > 1 else pd.Timedelta(minutes=1)
    step = step if step == step else pd.Timedelta(minutes=1)
    return (ts - step).dt.tz_localize(None)


def error_trend(failed, service: str = "cart"):
    """Chart 1: failed requests of `service` per minute, drawn at the minute each one covers."""
    import plotly.graph_objects as go

    rows = failed if failed is not None else []
    xs = list(_slot_starts(rows)) if len(rows) else []
    fig = go.Figure(go.Scatter(x=xs, y=list(rows["failed"]) if len(rows) else [], mode="lines+markers",
                               line=dict(color=TREND_COLOR, width=2), name="failed requests",
                               hovertemplate="%{x|%H:%M} UTC: %{y} failed<extra></extra>"))
    fig.update_layout(title=dict(text=f"{service} service failure count (runbook chart 1)"), height=300,
                      xaxis=dict(title=dict(text="minute (UTC)"), type="date"),
                      yaxis=dict(title=dict(text="failed requests"), rangemode="tozero"),
                      margin=dict(t=60, b=50), meta={"labkit": {"points": len(xs)}})
    return fig


def _counts(times_and_names) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for when, name in times_and_names:
        if when is None or when != when:
            continue
        per_minute = out.setdefault(name, {})
        per_minute[_minute(when)] = per_minute.get(_minute(when), 0) + 1
    return out


def changes_and_problems(events, problems):
    """Chart 2: change events per flag value and problems per title, counted per minute, on one chart."""
    import plotly.graph_objects as go

    changes = _counts((r.get("timestamp"), f"{r.get('flag')} = {r.get('new')}")
                      for r in (events.to_dict("records") if events is not None and len(events) else []))
    opened = _counts((r.get("start"), str(r.get("title")))
                     for r in (problems.to_dict("records") if problems is not None and len(problems) else []))
    fig = go.Figure()
    for series, color in ((changes, CHANGE_COLOR), (opened, PROBLEM_COLOR)):
        for name, per_minute in series.items():
            xs = sorted(per_minute)
            fig.add_bar(x=xs, y=[per_minute[x] for x in xs], name=name, marker_color=color,
                        hovertemplate=f"{name}<br>%{{x|%H:%M}} UTC: %{{y}}<extra></extra>")
    fig.update_layout(title=dict(text="configuration changes and problems (runbook chart 2)"), height=320,
                      barmode="group", xaxis=dict(title=dict(text="minute (UTC)"), type="date"),
                      yaxis=dict(title=dict(text="count"), rangemode="tozero", dtick=1),
                      legend=dict(orientation="h", y=-0.25), margin=dict(t=60, b=90),
                      meta={"labkit": {"changes": sorted(changes), "problems": sorted(opened)}})
    return fig


@dataclass
class Runbook:
    """The runbook a problem links, and its two charts over the lab's data."""

    link: str | None
    # "P-01 [1][production][otel-demo-app][teamA] Critical Redis connection error!", or "" when no
    # problem has a description yet
    problem: str
    failed: object
    events: object
    problems: object
    service: str = "cart"

    @property
    def error_trend(self):
        return error_trend(self.failed, self.service)

    @property
    def changes_and_problems(self):
        return changes_and_problems(self.events, self.problems)

    def __repr__(self) -> str:
        if not self.link:
            return "no problem links a runbook yet: wait for the problem (01), then run this again"
        return f"the runbook {self.problem} links: {self.link}"

    def _repr_html_(self) -> str:
        if not self.link:
            return cards.card("runbook", "No runbook link yet", ok=False, note=repr(self))
        return cards.card("runbook", "Ops runbook: Redis Troubleshooting", [
            ("linked by", self.problem), ("open it", cards.anchor("the runbook ↗", self.link))],
            note="Immediate action: raise a Major Incident and contact the people it lists; then its "
                 "two charts, drawn below from the same data: the error trend, and the changes with "
                 "the problems on one chart.")
