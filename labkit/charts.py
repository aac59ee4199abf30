"""Plotly figures of a service's failed requests, with changes marked and problems shaded.

Figures are built from the DataFrames labkit.dynatrace returns (see `failures_figure`), so they
work the same on a tenant and on the local lab. plotly and pandas are imported inside the functions:
`import labkit.charts` stays cheap.

`compare()` turns the same data into a plain verdict: the failure rate in a window before the change
against the rate after flagd served the new value.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

# The timeline's step names (labkit.lab imports only the standard library at module level).
from labkit.lab import EVENT_SENT, FIRST_FAILURE, FLAG_APPLIED, FLAGD_SERVING, ROLLED_BACK  # noqa: E402

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


def _text(value, missing: str = "?") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    text = str(value)
    return text if text and text.lower() not in ("nan", "none", "nat") else missing


def change_label(flag, old, new) -> str:
    """'cartFailure: off → on', the way a change is named on charts and in verdicts."""
    if _text(old, "") == "":
        return f"{_text(flag)} → {_text(new)}"
    return f"{_text(flag)}: {_text(old)} → {_text(new)}"


def _steps(timeline) -> list:
    return list(getattr(timeline, "steps", None) or []) if timeline is not None else []


def _step_label(step) -> str:
    label = STEP_LABELS.get(step.step, step.step)
    if step.step == FLAGD_SERVING and " = " in (step.detail or ""):
        variant = step.detail.split(" = ", 1)[1].split(" ", 1)[0]
        label = f"flagd serves {variant}"
    return label


# --- the figure --------------------------------------------------------------------------------
def failures_figure(failed, events=None, problems=None, timeline=None, service: str = "cart",
                    local: bool = False, widget: bool = False):
    """Failed requests of `service` per slot (bars) and the failure rate in % (line, right axis).

    - `failed`: DataFrame timestamp (UTC slot end), failed, requests, failure_rate (0..1, NaN when
      there were no requests);
    - `events`: change events (timestamp, flag, old, new, ...): a dashed marker each, labelled
      "cartFailure: off → on";
    - `problems`: (display_id, title, start, end NaT while open): a shaded span each;
    - `timeline`: a labkit.lab.Timeline: thin dotted markers for flag applied, flagd serving the new
      value, first failure, rolled back. When `events` is empty the timeline's "event sent" steps
      stand in as change markers.
    - `local`: adds a "local lab" badge so no one mistakes sandbox data for a tenant.

    Returns a go.Figure (a go.FigureWidget when widget=True). layout.meta["labkit"] counts what was
    drawn (change_markers, step_markers, problems, slots, empty, local) for tests and tools.
    """
    import plotly.graph_objects as go

    rows = _rows(failed)
    xs = [_utc(r.get("timestamp")) for r in rows]
    failed_counts = [int(r.get("failed") or 0) for r in rows]
    requests = [int(r.get("requests") or 0) for r in rows]
    rates = []
    for r in rows:
        rate = r.get("failure_rate")
        rates.append(None if rate is None or (isinstance(rate, float) and math.isnan(rate))
                     else round(float(rate) * 100, 2))

    fig = go.Figure()
    fig.add_trace(go.Bar(
        x=xs, y=failed_counts, customdata=requests, name="failed requests", marker_color=BAR_COLOR,
        hovertemplate="%{x|%H:%M:%S} UTC<br>%{y} failed of %{customdata} requests<extra></extra>"))
    fig.add_trace(go.Scatter(
        x=xs, y=rates, name="failure rate %", yaxis="y2", mode="lines+markers",
        line=dict(color=RATE_COLOR, width=2), marker=dict(size=4), connectgaps=False,
        hovertemplate="%{x|%H:%M:%S} UTC<br>%{y:.1f}% failed<extra></extra>"))

    shapes: list[dict] = []
    annotations: list[dict] = []

    # Change markers: Dynatrace's change events, else the timeline's "event sent" steps.
    changes = []
    for r in _rows(events):
        when = _utc(r.get("timestamp"))
        if when is None:
            continue
        label = (change_label(r.get("flag"), r.get("old"), r.get("new"))
                 if _text(r.get("flag"), "") else _text(r.get("title"), "change"))
        changes.append((when, label))
    if not changes:
        for step in _steps(timeline):
            if step.step == EVENT_SENT and _utc(step.time) is not None:
                changes.append((_utc(step.time), step.detail or "change event"))
    known = [x for x in xs if x is not None] + [w for w, _ in changes]
    span = (max(known) - min(known)) if known else timedelta(0)
    middle = min(known) + span / 2 if known else None
    previous, row = None, 0
    for when, label in sorted(changes, key=lambda c: c[0]):
        side = "right" if middle is not None and when > middle else "left"  # keep the label on the chart
        # Changes close together (a flip and its rollback) stack their labels instead of overlapping.
        row = (row + 1) % 3 if previous is not None and when - previous < span / 8 else 0
        previous = when
        shapes.append(dict(type="line", name="change", xref="x", yref="paper", x0=when, x1=when,
                           y0=0, y1=1, line=dict(color=CHANGE_COLOR, width=2, dash="dash")))
        annotations.append(dict(name="change", x=when, xref="x", y=1.0 + 0.07 * row, yref="paper",
                                yanchor="bottom", xanchor=side, text=html.escape(label), showarrow=False,
                                font=dict(color=CHANGE_COLOR, size=12)))

    # Timeline steps: thin dotted lines, named in one caption under the chart (steps seconds apart
    # would otherwise pile their labels on top of each other).
    steps = [s for s in _steps(timeline) if s.step in STEP_LABELS and _utc(s.time) is not None]
    for step in steps:
        when = _utc(step.time)
        shapes.append(dict(type="line", name="step", xref="x", yref="paper", x0=when, x1=when,
                           y0=0, y1=1, line=dict(color=STEP_COLOR, width=1, dash="dot")))
    if steps:
        caption = "dotted: " + " · ".join(f"{_step_label(st)} {_utc(st.time):%H:%M:%S}" for st in steps[-6:])
        annotations.append(dict(name="step", x=0, xref="paper", y=-0.3, yref="paper", xanchor="left",
                                yanchor="top", text=html.escape(caption), showarrow=False, align="left",
                                font=dict(color=STEP_COLOR, size=10)))

    # Problems: shaded spans from start to end (or now while open).
    n_problems = 0
    for r in _rows(problems):
        start = _utc(r.get("start"))
        if start is None:
            continue
        end = _utc(r.get("end"))
        is_open = end is None
        end = end or _utc(datetime.now(timezone.utc))
        label = f"{_text(r.get('display_id'), '')} {_text(r.get('title'), 'problem')}".strip()
        if is_open:
            label += " (open)"
        shapes.append(dict(type="rect", name="problem", xref="x", yref="paper", x0=start, x1=end,
                           y0=0, y1=1, fillcolor=PROBLEM_COLOR, opacity=0.15, layer="below",
                           line=dict(width=0)))
        annotations.append(dict(name="problem", x=start, xref="x", y=1.0, yref="paper",
                                yanchor="top", xanchor="left", text=html.escape(label),
                                showarrow=False, font=dict(color="#a0522d", size=11),
                                bgcolor="rgba(255,243,224,0.85)"))
        n_problems += 1

    empty = not rows
    if empty:
        annotations.append(dict(name="no-data", text=NO_DATA, x=0.5, y=0.5, xref="paper",
                                yref="paper", showarrow=False, font=dict(size=16, color="#777")))
    if local:
        annotations.append(dict(name="local-lab", text=LOCAL_BADGE, x=1.0, y=-0.18, xref="paper",
                                yref="paper", xanchor="right", yanchor="top", showarrow=False,
                                bgcolor="#fff3cd", bordercolor="#d39e00", borderwidth=1,
                                font=dict(size=11, color="#7a5b00")))

    fig.update_layout(
        title=dict(text=f"{service}: failed requests"),
        xaxis=dict(title=dict(text="time (UTC)"), type="date"),
        yaxis=dict(title=dict(text="failed requests"), rangemode="tozero"),
        yaxis2=dict(title=dict(text="failure rate"), overlaying="y", side="right",
                    rangemode="tozero", showgrid=False, tickmode="auto", ticksuffix="%"),
        legend=dict(orientation="h", yanchor="top", y=-0.18, x=0),
        margin=dict(t=90, r=70, b=110),
        bargap=0.15,
        shapes=shapes,
        annotations=annotations,
        meta={"labkit": {"service": service, "local": bool(local), "slots": len(rows),
                         "empty": empty, "change_markers": len(changes),
                         "change_labels": [label for _, label in changes],
                         "step_markers": len(steps), "problems": n_problems}},
    )
    if empty and not shapes:
        now = _utc(datetime.now(timezone.utc))
        fig.update_xaxes(range=[now - timedelta(minutes=30), now])
        fig.update_yaxes(range=[0, 1], showticklabels=False)
    if widget:
        return go.FigureWidget(fig)
    return fig


# --- before / after ----------------------------------------------------------------------------
@dataclass
class Verdict:
    """The failure rate before the change against after flagd served the new value."""

    before_rate: float
    after_rate: float
    before_requests: int
    after_requests: int
    text: str
    rose: bool
    change: str = ""
    before_failed: int = 0
    after_failed: int = 0

    def __str__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        color = "#b00020" if self.rose else "#1b5e20"
        detail = ""
        if self.before_requests or self.after_requests:
            detail = (f"<br><small>before: {self.before_failed} failed of {self.before_requests} "
                      f"requests; after: {self.after_failed} failed of {self.after_requests}</small>")
        return (f'<div class="labkit-verdict" style="color:{color}"><b>{html.escape(self.text)}</b>'
                f"{detail}</div>")


def _pct(rate: float) -> str:
    return f"{rate * 100:.1f}%"


def _change_step(steps, flag: str):
    """The last "flag applied" (else "event sent") step for this flag: the change to judge."""
    for name in (FLAG_APPLIED, EVENT_SENT):
        for step in reversed(steps):
            if step.step == name and (step.detail or "").startswith(f"{flag}:"):
                return step
    for name in (FLAG_APPLIED, EVENT_SENT):
        for step in reversed(steps):
            if step.step == name and ":" not in (step.detail or ""):
                return step
    return None


def compare(failed, timeline, flag: str = "cartFailure", window: timedelta = timedelta(minutes=5),
            events=None, min_requests: int = 5) -> Verdict:
    """Judge the last change of `flag`: failure rate in `window` before it against after it.

    Before: slots ending in (change - window, change], where the change is the timeline's
    FLAG_APPLIED step (else its EVENT_SENT step, else the last change event of that flag in
    `events`). After: slots ending after flagd served the new value (FLAGD_SERVING), up to `window`
    later. With fewer than `min_requests` requests after, it says to generate traffic.
    """
    import pandas as pd

    steps = _steps(timeline)
    change_at, label = None, flag
    step = _change_step(steps, flag)
    if step is not None:
        change_at, label = _utc(step.time), step.detail or flag
    elif events is not None and len(events):
        mine = events[events["flag"] == flag] if "flag" in events else events
        if len(mine):
            last = mine.sort_values("timestamp").iloc[-1]
            change_at = _utc(last["timestamp"])
            label = change_label(flag, last.get("old"), last.get("new"))
    nan = float("nan")
    if change_at is None:
        return Verdict(nan, nan, 0, 0, f"no change of {flag} in this run yet: apply one with the "
                       "flag switch or lab.change_flag()", False)

    served_at = change_at
    for s in steps:
        if s.step == FLAGD_SERVING and _utc(s.time) is not None and _utc(s.time) >= change_at:
            served_at = _utc(s.time)
            break

    frame = failed if failed is not None else pd.DataFrame(columns=["timestamp", "failed", "requests"])
    if len(frame):
        ts = pd.to_datetime(frame["timestamp"], utc=True).dt.tz_localize(None)
    else:
        ts = pd.Series([], dtype="datetime64[ns]")
    change_ts, served_ts = pd.Timestamp(change_at), pd.Timestamp(served_at)
    before = frame[((ts > change_ts - window) & (ts <= change_ts)).to_numpy()] if len(frame) else frame
    # Timestamps are slot ends. A slot that started before flagd served the new value mixes traffic
    # from both sides of the change, so "after" means whole slots, unless there are none yet.
    slot = ts.diff().median() if len(ts) > 1 else pd.Timedelta(minutes=1)
    slot = slot if slot == slot else pd.Timedelta(minutes=1)  # NaT when the diffs are undefined
    after = frame[((ts - slot >= served_ts) & (ts <= served_ts + window)).to_numpy()] if len(frame) else frame
    mixed = ""
    if int(after["requests"].fillna(0).sum() if len(after) else 0) < min_requests and len(frame):
        after = frame[((ts > served_ts) & (ts <= served_ts + window)).to_numpy()]
        mixed = " (includes the minute of the change)"

    def totals(part) -> tuple[int, int]:
        if not len(part):
            return 0, 0
        return int(part["failed"].fillna(0).sum()), int(part["requests"].fillna(0).sum())

    b_failed, b_req = totals(before)
    a_failed, a_req = totals(after)
    b_rate = b_failed / b_req if b_req else nan
    a_rate = a_failed / a_req if a_req else nan
    after_what = f"after {label}{mixed}"

    if a_req < min_requests:
        text, rose = "not enough traffic after the change yet: run generate_traffic()", False
    elif not b_req:
        text = (f"failure rate is {_pct(a_rate)} {after_what} "
                f"(no traffic in the {_minutes(window)} before it to compare with)")
        rose = False
    elif a_rate - b_rate > 0.005:
        text, rose = f"failure rate rose from {_pct(b_rate)} to {_pct(a_rate)} {after_what}", True
    elif b_rate - a_rate > 0.005:
        text, rose = f"failure rate fell from {_pct(b_rate)} to {_pct(a_rate)} {after_what}", False
    elif _pct(b_rate) == _pct(a_rate):
        text, rose = f"failure rate stayed at {_pct(a_rate)} {after_what}", False
    else:
        text, rose = (f"failure rate stayed about the same ({_pct(b_rate)} before, {_pct(a_rate)} "
                      f"after) {after_what}"), False
    return Verdict(b_rate, a_rate, b_req, a_req, text, rose, label, b_failed, a_failed)


def _minutes(window: timedelta) -> str:
    minutes = window.total_seconds() / 60
    return f"{minutes:g} min"
