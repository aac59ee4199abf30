"""Plotly figures of a service's failed requests, with changes marked and problems shaded.

Figures are built from the DataFrames labkit.dynatrace returns (see `failures_figure`) and the run's
labkit.timeline, so they work the same on a tenant and on the local lab. plotly and pandas are
imported inside the functions: `import labkit.charts` stays cheap.
"""
from __future__ import annotations

import html
import math
from datetime import datetime, timedelta, timezone

from labkit.timeline import (EVENT_SENT, FIRST_FAILURE, FLAG_APPLIED, FLAGD_SERVING, ROLLED_BACK,
                             Timeline, _text, change_label)

# Timeline steps drawn as thin dotted markers, with their short labels.
STEP_LABELS = {
    FLAG_APPLIED: "flag applied",
    FLAGD_SERVING: "flagd serves",
    FIRST_FAILURE: "first failure",
    ROLLED_BACK: "rolled back",
}

BAR_COLOR = "#d62728"
RATE_COLOR = "#1f77b4"
CHANGE_COLOR = "#6a3d9a"
STEP_COLOR = "#555555"
PROBLEM_COLOR = "#ff7f0e"
LOCAL_BADGE = "<b>local lab</b>: sandbox data, not a tenant"
NO_DATA = "no data yet: generate some traffic, then refresh"


# --- small helpers -------------------------------------------------------------------------------
def _utc(value) -> datetime | None:
    """A naive UTC datetime for plotly (the x axis is UTC), or None for missing values."""
    import pandas as pd

    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        return None
    if ts is pd.NaT or pd.isna(ts):
        return None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.tz_localize(None).to_pydatetime()


def _rows(frame) -> list[dict]:
    if frame is None or len(frame) == 0:
        return []
    return frame.to_dict("records")


def _steps(timeline: Timeline | None) -> list:
    return list(timeline.steps) if timeline is not None else []


def _step_label(step) -> str:
    if step.kind == FLAGD_SERVING and step.new:
        return f"flagd serves {step.new}"
    return STEP_LABELS.get(step.kind, step.kind)


def _line(name: str, when, color: str, width: int, dash: str) -> dict:
    return dict(type="line", name=name, xref="x", yref="paper", x0=when, x1=when, y0=0, y1=1,
                line=dict(color=color, width=width, dash=dash))


# --- the figure --------------------------------------------------------------------------------
def _rate(row) -> float | None:
    rate = row.get("failure_rate")
    if rate is None or (isinstance(rate, float) and math.isnan(rate)):
        return None
    return round(float(rate) * 100, 2)


def _traces(go, rows: list[dict]) -> list:
    """Failed requests per slot (bars) and the failure rate in % (line, right axis)."""
    xs = [_utc(r.get("timestamp")) for r in rows]
    return [
        go.Bar(x=xs, y=[int(r.get("failed") or 0) for r in rows],
               customdata=[int(r.get("requests") or 0) for r in rows], name="failed requests",
               marker_color=BAR_COLOR,
               hovertemplate="%{x|%H:%M:%S} UTC<br>%{y} failed of %{customdata} requests<extra></extra>"),
        go.Scatter(x=xs, y=[_rate(r) for r in rows], name="failure rate %", yaxis="y2",
                   mode="lines+markers", line=dict(color=RATE_COLOR, width=2), marker=dict(size=4),
                   connectgaps=False,
                   hovertemplate="%{x|%H:%M:%S} UTC<br>%{y:.1f}% failed<extra></extra>"),
    ]


def _changes(events, timeline) -> list[tuple[datetime, str]]:
    """(time, label) of each change: Dynatrace's change events, else the timeline's "event sent"."""
    changes = []
    for r in _rows(events):
        when = _utc(r.get("timestamp"))
        if when is not None:
            label = (change_label(r.get("flag"), r.get("old"), r.get("new"))
                     if _text(r.get("flag"), "") else _text(r.get("title"), "change"))
            changes.append((when, label))
    if not changes:
        changes = [(_utc(s.time), s.detail or "change event") for s in _steps(timeline)
                   if s.kind == EVENT_SENT and _utc(s.time) is not None]
    return sorted(changes, key=lambda c: c[0])


def _change_marks(changes, xs) -> tuple[list, list]:
    """A dashed line and a label per change; labels stay on the chart and stack when close."""
    known = [x for x in xs if x is not None] + [w for w, _ in changes]
    span = (max(known) - min(known)) if known else timedelta(0)
    middle = min(known) + span / 2 if known else None
    shapes, annotations, previous, row = [], [], None, 0
    for when, label in changes:
        side = "right" if middle is not None and when > middle else "left"
        # Changes close together (a flip and its rollback) stack their labels instead of overlapping.
        row = (row + 1) % 3 if previous is not None and when - previous < span / 8 else 0
        previous = when
        shapes.append(_line("change", when, CHANGE_COLOR, 2, "dash"))
        annotations.append(dict(name="change", x=when, xref="x", y=1.0 + 0.07 * row, yref="paper",
                                yanchor="bottom", xanchor=side, text=html.escape(label), showarrow=False,
                                font=dict(color=CHANGE_COLOR, size=12)))
    return shapes, annotations


def _step_marks(steps) -> tuple[list, list]:
    """Thin dotted lines, named in one caption under the chart (steps seconds apart would otherwise
    pile their labels on top of each other)."""
    shapes = [_line("step", _utc(s.time), STEP_COLOR, 1, "dot") for s in steps]
    if not steps:
        return shapes, []
    caption = "dotted: " + " · ".join(f"{_step_label(s)} {_utc(s.time):%H:%M:%S}" for s in steps[-6:])
    return shapes, [dict(name="step", x=0, xref="paper", y=-0.3, yref="paper", xanchor="left",
                         yanchor="top", text=html.escape(caption), showarrow=False, align="left",
                         font=dict(color=STEP_COLOR, size=10))]


def _problem_marks(problems) -> tuple[list, list]:
    """A shaded span per problem, from its start to its end (or now while open)."""
    shapes, annotations = [], []
    for r in _rows(problems):
        start = _utc(r.get("start"))
        if start is None:
            continue
        end = _utc(r.get("end"))
        label = f"{_text(r.get('display_id'), '')} {_text(r.get('title'), 'problem')}".strip()
        label += " (open)" if end is None else ""
        shapes.append(dict(type="rect", name="problem", xref="x", yref="paper", x0=start,
                           x1=end or _utc(datetime.now(timezone.utc)), y0=0, y1=1,
                           fillcolor=PROBLEM_COLOR, opacity=0.15, layer="below", line=dict(width=0)))
        annotations.append(dict(name="problem", x=start, xref="x", y=1.0, yref="paper",
                                yanchor="top", xanchor="left", text=html.escape(label),
                                showarrow=False, font=dict(color="#a0522d", size=11),
                                bgcolor="rgba(255,243,224,0.85)"))
    return shapes, annotations


def _badges(empty: bool, local: bool) -> list[dict]:
    out = []
    if empty:
        out.append(dict(name="no-data", text=NO_DATA, x=0.5, y=0.5, xref="paper", yref="paper",
                        showarrow=False, font=dict(size=16, color="#777")))
    if local:
        out.append(dict(name="local-lab", text=LOCAL_BADGE, x=1.0, y=-0.18, xref="paper",
                        yref="paper", xanchor="right", yanchor="top", showarrow=False,
                        bgcolor="#fff3cd", bordercolor="#d39e00", borderwidth=1,
                        font=dict(size=11, color="#7a5b00")))
    return out


def _layout(service: str, shapes: list, annotations: list, meta: dict) -> dict:
    return dict(
        title=dict(text=f"{service}: failed requests"),
        xaxis=dict(title=dict(text="time (UTC)"), type="date"),
        yaxis=dict(title=dict(text="failed requests"), rangemode="tozero"),
        yaxis2=dict(title=dict(text="failure rate"), overlaying="y", side="right",
                    rangemode="tozero", showgrid=False, tickmode="auto", ticksuffix="%"),
        legend=dict(orientation="h", yanchor="top", y=-0.18, x=0),
        margin=dict(t=90, r=70, b=110), bargap=0.15, shapes=shapes, annotations=annotations,
        meta={"labkit": meta})


def failures_figure(failed, events=None, problems=None, timeline: Timeline | None = None,
                    service: str = "cart", local: bool = False, widget: bool = False):
    """Failed requests of `service` per slot (bars) and the failure rate in % (line, right axis).

    - `failed`: DataFrame timestamp (UTC slot end), failed, requests, failure_rate (0..1, NaN when
      there were no requests);
    - `events`: change events (timestamp, flag, old, new, ...): a dashed marker each, labelled
      "cartFailure: off → on";
    - `problems`: (display_id, title, start, end NaT while open): a shaded span each;
    - `timeline`: a labkit.timeline.Timeline: thin dotted markers for flag applied, flagd serving the
      new value, first failure, rolled back. When `events` is empty the timeline's "event sent" steps
      stand in as change markers.
    - `local`: adds a "local lab" badge so no one mistakes sandbox data for a tenant.

    Returns a go.Figure (a go.FigureWidget when widget=True). layout.meta["labkit"] counts what was
    drawn (change_markers, step_markers, problems, slots, empty, local) for tests and tools.
    """
    import plotly.graph_objects as go

    rows = _rows(failed)
    changes = _changes(events, timeline)
    steps = [s for s in _steps(timeline) if s.kind in STEP_LABELS and _utc(s.time) is not None]
    marks = [_change_marks(changes, [_utc(r.get("timestamp")) for r in rows]), _step_marks(steps),
             _problem_marks(problems)]
    shapes = [s for part, _ in marks for s in part]
    annotations = [a for _, part in marks for a in part] + _badges(not rows, local)
    meta = {"service": service, "local": bool(local), "slots": len(rows), "empty": not rows,
            "change_markers": len(changes), "change_labels": [label for _, label in changes],
            "step_markers": len(steps), "problems": len(marks[2][0])}
    fig = go.Figure(_traces(go, rows))
    fig.update_layout(**_layout(service, shapes, annotations, meta))
    if not rows and not shapes:
        now = _utc(datetime.now(timezone.utc))
        fig.update_xaxes(range=[now - timedelta(minutes=30), now])
        fig.update_yaxes(range=[0, 1], showticklabels=False)
    return go.FigureWidget(fig) if widget else fig
