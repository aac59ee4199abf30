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

    ts = pd.Timestamp(ts)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).floor("min").tz_localize(None)


MINUTE = 60_000  # ms: a bar is as wide as the minute it counts (85 % of it, gaps between)


def _axis(xs, changes=(), newest=None) -> dict:
    """The x axis both charts share with the main chart: its window (a few minutes before the first
    change to the newest minute) where there is a change, ticks on whole minutes."""
    from datetime import timedelta

    from labkit import charts

    newest = newest or (max(xs) + timedelta(minutes=1) if len(xs) else None)
    window = charts.story_window(sorted(c.to_pydatetime() for c in changes), newest)
    lo, hi = window or ((min(xs), newest) if len(xs) else (None, None))
    axis = dict(title=dict(text="minute (UTC); each minute's value spans that minute"), type="date")
    return axis | (dict(range=[lo, hi], **charts.minute_ticks(lo, hi)) if lo is not None else {})


def error_trend(failed, service: str = "cart", events=None):
    """Chart 1: failed requests of `service` per minute, each drawn across the minute it counts
    (the frame's timestamp is that minute's start: labkit.dynatrace stamps minutes so), as a step
    line with a marker in the minute's middle: the minute the main chart's bar covers."""
    import pandas as pd
    from labkit.charts import graph_objects

    go = graph_objects()

    rows = failed if failed is not None and len(failed) else None
    starts = list(pd.to_datetime(rows["timestamp"], utc=True).dt.tz_localize(None)) if rows is not None else []
    ys = [int(v) for v in rows["failed"].fillna(0)] if rows is not None else []
    mids = [s + pd.Timedelta(seconds=30) for s in starts]
    fig = go.Figure(go.Scatter(
        x=mids, y=ys, mode="lines+markers", line=dict(color=TREND_COLOR, width=2, shape="hvh"),
        name="failed requests", hovertext=[f"{s:%H:%M}–{s + pd.Timedelta(minutes=1):%H:%M} UTC: {y} failed"
                                           for s, y in zip(starts, ys)], hoverinfo="text"))
    fig.update_layout(title=dict(text=f"{service} service failure count (runbook chart 1)"), height=300,
                      xaxis=_axis(starts, _times(events, "timestamp")),
                      yaxis=dict(title=dict(text="failed requests"), rangemode="tozero"),
                      margin=dict(t=60, b=50),
                      meta={"labkit": {"points": len(mids), "minutes": [f"{s:%H:%M}" for s in starts]}})
    return fig


def _times(frame, column) -> list:
    import pandas as pd

    if frame is None or not len(frame):
        return []
    return [t for t in pd.to_datetime(frame[column], utc=True).dt.tz_localize(None) if t == t]


def _newest(failed):
    """The end of the newest minute in `failed` (where chart 1 ends), or None."""
    import pandas as pd

    times = _times(failed, "timestamp")
    return max(times) + pd.Timedelta(minutes=1) if times else None


def _counts(times_and_names) -> dict[str, dict]:
    """{name: {minute: [times]}}: what happened in each minute, with its own times."""
    import pandas as pd

    out: dict[str, dict] = {}
    for when, name in times_and_names:
        if when is None or when != when:
            continue
        when = pd.Timestamp(when)
        when = (when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")).tz_localize(None)
        out.setdefault(name, {}).setdefault(_minute(when), []).append(when)
    return out


def changes_and_problems(events, problems, failed=None):
    """Chart 2: change events per flag value and problems per title, counted per minute (the
    runbook's makeTimeseries count()), each bar across the minute it counts and labelled with the
    times inside it: a change at 09:49:51 shows in 09:49's bar, saying 09:49:51. With `failed`
    (chart 1's minutes) its x axis is chart 1's."""
    import pandas as pd
    from labkit.charts import graph_objects

    go = graph_objects()

    changes = _counts((r.get("timestamp"), f"{r.get('flag')} = {r.get('new')}")
                      for r in (events.to_dict("records") if events is not None and len(events) else []))
    opened = _counts((r.get("start"), str(r.get("title")))
                     for r in (problems.to_dict("records") if problems is not None and len(problems) else []))
    fig = go.Figure()
    minutes = []
    for series, color, what in ((changes, CHANGE_COLOR, "changed"), (opened, PROBLEM_COLOR, "opened")):
        for name, per_minute in series.items():
            xs = sorted(per_minute)
            minutes += xs
            fig.add_bar(x=[x + pd.Timedelta(seconds=30) for x in xs], y=[len(per_minute[x]) for x in xs],
                        width=MINUTE * 0.85, name=name, marker_color=color, textposition="outside",
                        text=[", ".join(f"{t:%H:%M:%S}" for t in per_minute[x]) for x in xs],
                        hovertext=[f"{name}: {what} at " + ", ".join(f"{t:%H:%M:%S}" for t in per_minute[x])
                                   + " UTC" for x in xs], hoverinfo="text")
    fig.update_layout(title=dict(text="configuration changes and problems (runbook chart 2)"), height=320,
                      barmode="overlay", xaxis=_axis(sorted(minutes), _times(events, "timestamp"), _newest(failed)),
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
        return error_trend(self.failed, self.service, self.events)

    @property
    def changes_and_problems(self):
        return changes_and_problems(self.events, self.problems, self.failed)

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
