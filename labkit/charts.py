"""Plotly figures of a service's failed requests, with changes marked and problems shaded.

Figures are built from the DataFrames labkit.dynatrace returns (see `failures_figure`) and the run's
labkit.timeline, so they work the same on a tenant and on the local lab. plotly and pandas are
imported inside the functions: `import labkit.charts` stays cheap.
"""
from __future__ import annotations

import html
import sys
from datetime import datetime, timedelta, timezone

from labkit import verdict
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
PLOT_PX = 330          # height of the plot area; the figure grows by what sits above and below it
NOMINAL_PX = 760       # the narrowest plot width a notebook gives it: labels must fit in this
CHAR_PX = 7            # an average character at 12 px
LINE_PX = 15           # one caption line under the chart (11 px text)
CAPTION_CHARS = 125    # a caption line longer than this wraps


def _slot(failed) -> timedelta:
    import pandas as pd

    slot = getattr(failed, "attrs", {}).get("slot") if failed is not None else None
    if slot is None and failed is not None and len(failed) > 1:
        slot = pd.to_datetime(failed["timestamp"], utc=True).diff().median()
    return pd.Timedelta(slot).to_pytimedelta() if slot is not None and slot == slot else timedelta(minutes=1)


def _hover(r, slot: timedelta) -> str:
    start = _utc(r.get("timestamp"))
    so_far = " so far (the minute is still running)" if r.get("partial") else ""
    return (f"{start:%H:%M}–{start + slot:%H:%M} UTC: {int(r.get('failed') or 0)} failed of "
            f"{int(r.get('requests') or 0)} requests{so_far}")


def _traces(go, rows: list[dict], slot: timedelta, rate: tuple[str, list, list]) -> list:
    """Failed requests per minute (bars over the minute they cover; the running minute a hollow
    bar of its failures so far) and the verdict's failure rate (`rate`, from `_rate_points`). Always three traces, so the figure's shape does not depend on the data."""
    done = [r for r in rows if not r.get("partial")]
    running = [r for r in rows if r.get("partial")]
    mid = lambda r: _utc(r.get("timestamp")) + slot / 2  # noqa: E731 - the bar spans its minute
    width = slot.total_seconds() * 1000 * 0.85
    name, points, texts, hovers = rate
    return [
        go.Bar(x=[mid(r) for r in done], y=[int(r.get("failed") or 0) for r in done],
               hovertext=[_hover(r, slot) for r in done], hoverinfo="text", width=width,
               name="failed requests", marker_color=BAR_COLOR),
        go.Bar(x=[mid(r) for r in running], y=[int(r.get("failed") or 0) for r in running],
               hovertext=[_hover(r, slot) for r in running], hoverinfo="text", width=width,
               name="this minute so far", showlegend=bool(running),
               marker=dict(color="rgba(214,39,40,0.12)", line=dict(color=BAR_COLOR, width=1.5),
                           pattern=dict(shape="/", fgcolor=BAR_COLOR, size=6))),
        go.Scatter(x=[t for t, _ in points], y=[y for _, y in points],
                   name=name or "failure rate", showlegend=bool(points), yaxis="y2",
                   mode="lines+markers+text", text=texts, cliponaxis=False,
                   # the newest number to the right, into the minutes still to come: off the bars
                   textposition=["top left"] * (len(texts) - 1) + ["middle right"] if texts else "top left",
                   textfont=dict(color=RATE_COLOR, size=11), line=dict(color=RATE_COLOR, width=2),
                   marker=dict(size=5), connectgaps=False, hoverinfo="text",
                   hovertext=hovers),
    ]


def _rate_points(judged, changes, newest: datetime | None) -> tuple[str, list, list, list]:
    """The verdict's own failure rate as it grew in its windows: from the change, one point at each
    closed minute's end (the minutes counted so far), the last one at the newest data, labelled
    with the number the subtitle prints. Nothing before the run's first change: the "before"
    window is drawn only where it follows an earlier change (03: the rate since the failures went
    on, up to the rollback), with a gap between the windows. Returns (name, points, texts, hovers),
    a point (time, % or None)."""
    if judged is None or judged.windows is None or judged.counted is None or newest is None:
        return "", [], [], []
    w = judged.windows
    first = min((when for when, _ in changes), default=_utc(w.change_at))
    parts = []  # (points, the window in words up to t): the verdict's own words for each side
    if _utc(w.before[0]) >= first - timedelta(seconds=1):
        parts.append((verdict.running(judged.counted, w.before[0], w.before[1], logs=judged.logs),
                      lambda t: f"in {verdict.span_text(w.before[0], t)}"))
    parts.append((verdict.running(judged.counted, w.after[0], None, logs=judged.logs, now=newest),
                  lambda t: verdict.since_text(w, t)))
    points, texts, hovers = [], [], []
    for part, when in (p for p in parts if p[0]):
        if points:  # a new window counts anew: no line from one to the other
            points.append((_utc(part[0][0]), None))
            texts.append("")
            hovers.append("")
        for i, (t, c) in enumerate(part):
            points.append((_utc(t), None if not c.total else round(c.rate * 100, 2)))
            texts.append(verdict.pct(c.rate) if i == len(part) - 1 else "")
            hovers.append(verdict.share_text(c, judged.unit, when(c.upto if c.upto is not None else t)))
    return f"{judged.rate_name} since {verdict.clock(w.change_at)} UTC", points, texts, hovers


def _running_marks(rows: list[dict], slot: timedelta) -> list[dict]:
    """A dashed outline over the minute still running, so it reads as unfinished at any count."""
    return [dict(type="rect", name="partial", xref="x", yref="paper", x0=_utc(r.get("timestamp")),
                 x1=_utc(r.get("timestamp")) + slot, y0=0, y1=1, fillcolor="rgba(0,0,0,0)",
                 line=dict(color=STEP_COLOR, width=1, dash="dash"), layer="below")
            for r in rows if r.get("partial")]


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


LEAD = timedelta(minutes=3)     # the chart starts this long before the run's first change
ROOM = timedelta(minutes=3)     # and ends no earlier than this long after its last change
LONGEST = timedelta(minutes=30)  # a longer story starts before the last change instead


def story_window(changes: list[datetime], newest: datetime | None) -> tuple[datetime, datetime] | None:
    """The x range that frames the story: from LEAD before the run's first change (before its last
    one where that would span more than LONGEST) to the newest data, and at least ROOM after the
    last change, so a change just made (03's rollback) and the minutes after it are not squeezed
    against the right edge. Whole minutes, so bars and ticks line up. None without a change."""
    import pandas as pd

    if not changes:
        return None
    newest = max([newest or changes[-1], changes[-1] + ROOM])
    end = pd.Timestamp(newest).ceil("min").to_pydatetime()
    start = pd.Timestamp(min(changes) - LEAD).floor("min").to_pydatetime()
    if end - start > LONGEST:
        start = pd.Timestamp(max(changes) - LEAD).floor("min").to_pydatetime()
    return start, end


def minute_ticks(lo: datetime, hi: datetime) -> dict:
    """x axis ticks on whole minutes (every 1, 2, 5 or 10 as the span needs), labelled HH:MM."""
    minutes = (hi - lo) / timedelta(minutes=1)
    every = next((m for m in (1, 2, 5, 10) if minutes / m <= 16), 30)
    return dict(tick0=lo, dtick=every * 60_000, tickformat="%H:%M")


def _px(when: datetime, lo: datetime, span: timedelta) -> float:
    return (when - lo) / span * NOMINAL_PX if span else 0.0


def _place(xs_px: list[float], widths: list[float]) -> list[tuple[int, str]]:
    """(row, xanchor) per label so that labels in one row never overlap: a label reads rightwards
    from its marker, or leftwards where it would run off the plot's right edge."""
    taken: list[list[tuple[float, float]]] = []
    out = []
    for x, w in zip(xs_px, widths):
        side = "right" if x + w > NOMINAL_PX else "left"
        span = (x - w, x) if side == "right" else (x, x + w)
        row = next((i for i, spans in enumerate(taken)
                    if all(span[1] + 8 < a or b + 8 < span[0] for a, b in spans)), len(taken))
        if row == len(taken):
            taken.append([])
        taken[row].append(span)
        out.append((row, side))
    return out


def _change_marks(changes, lo: datetime, span: timedelta) -> tuple[list, list, list[str], int]:
    """A dashed line per change, labelled above the plot. Full labels when each fits on one row
    (at most two rows); else short tags C1, C2, ... and their key in the caption under the chart.
    Returns (shapes, annotations, caption lines, rows used above the plot)."""
    if not changes:
        return [], [], [], 0
    xs = [_px(w, lo, span) for w, _ in changes]
    full = [len(label) * CHAR_PX for _, label in changes]
    places = _place(xs, full)
    crowded = max(row for row, _ in places) > 1
    texts = [f"C{i}" for i in range(1, len(changes) + 1)] if crowded else [label for _, label in changes]
    if crowded:
        places = _place(xs, [len(t) * CHAR_PX for t in texts])
    shapes = [_line("change", when, CHANGE_COLOR, 2, "dash") for when, _ in changes]
    annotations = [dict(name="change", x=when, xref="x", y=1.0, yref="paper", yanchor="bottom",
                        xanchor=side, yshift=4 + 17 * row, text=html.escape(text), showarrow=False,
                        font=dict(color=CHANGE_COLOR, size=12))
                   for (when, _), text, (row, side) in zip(changes, texts, places)]
    key = [] if not crowded else _wrap("changes (dashed): " + " · ".join(
        f"{tag} {when:%H:%M:%S} {label}" for tag, (when, label) in zip(texts, changes)))
    return shapes, annotations, key, max(row for row, _ in places) + 1


def _step_marks(steps) -> tuple[list, list[str]]:
    """Thin dotted lines, named in the caption under the chart (steps seconds apart would otherwise
    pile their labels on top of each other)."""
    shapes = [_line("step", _utc(s.time), STEP_COLOR, 1, "dot") for s in steps]
    if not steps:
        return shapes, []
    return shapes, _wrap("dotted: " + " · ".join(f"{_step_label(s)} {_utc(s.time):%H:%M:%S}"
                                                 for s in steps[-6:]))


def _problem_marks(problems, lo: datetime, span: timedelta, row0: int) -> tuple[list, list, list[str], int]:
    """A shaded span per problem, from its start to its end (or now while open), tagged above the
    plot (from label row `row0`, over the change labels' rows: never on the bars): the whole title
    where it fits, else its id, with the titles in the caption. Returns the rows it used too."""
    shapes, found = [], []
    for r in _rows(problems):
        start = _utc(r.get("start"))
        if start is None:
            continue
        end = _utc(r.get("end"))
        did = _text(r.get("display_id"), "")
        label = f"{did} {_text(r.get('title'), 'problem')}".strip() + (" (open)" if end is None else "")
        tag = (did or "problem") + (" (open)" if end is None else "")
        shapes.append(dict(type="rect", name="problem", xref="x", yref="paper", x0=start,
                           x1=end or _utc(datetime.now(timezone.utc)), y0=0, y1=1,
                           fillcolor=PROBLEM_COLOR, opacity=0.15, layer="below", line=dict(width=0)))
        found.append((start, end, label, tag))
    found.sort(key=lambda f: f[0])
    xs = [_px(s, lo, span) if lo is not None else 0.0 for s, *_ in found]
    crowded = max((row for row, _ in _place(xs, [len(f[2]) * CHAR_PX for f in found])), default=0) > 0
    texts = [tag if crowded else label for _, _, label, tag in found]
    places = _place(xs, [len(t) * CHAR_PX for t in texts])
    annotations = [dict(name="problem", x=start, xref="x", y=1.0, yref="paper", yanchor="bottom",
                        xanchor=side, yshift=4 + 17 * (row0 + row), text=html.escape(text),
                        showarrow=False, font=dict(color="#a0522d", size=11),
                        bgcolor="rgba(255,243,224,0.85)")
                   for (start, *_), text, (row, side) in zip(found, texts, places)]
    key = [] if not crowded else _wrap("problems (shaded): " + " · ".join(
        f"{label} from {start:%H:%M}" + (f" to {end:%H:%M}" if end else "") for start, end, label, _ in found))
    return shapes, annotations, key, (max(row for row, _ in places) + 1) if places else 0


def _wrap(text: str) -> list[str]:
    """A caption as lines of at most CAPTION_CHARS, broken at ' · '."""
    lines, line = [], ""
    for part in text.split(" · "):
        if line and len(line) + 3 + len(part) > CAPTION_CHARS:
            lines.append(line)
            line = "   " + part
        else:
            line = f"{line} · {part}" if line else part
    return lines + [line] if line else lines


def _caption(named_lines: list[tuple[str, list[str]]], top_px: int) -> list[dict]:
    """Caption lines under the plot area (below the axis and the legend), one annotation a block."""
    out, shift = [], top_px
    for name, lines in named_lines:
        if not lines:
            continue
        out.append(dict(name=name, x=0, xref="paper", y=0, yref="paper", xanchor="left",
                        yanchor="top", yshift=-shift, text="<br>".join(html.escape(x) for x in lines),
                        showarrow=False, align="left", font=dict(color=STEP_COLOR, size=11)))
        shift += LINE_PX * len(lines)
    return out


def _badges(empty: bool, local: bool, top_px: int) -> list[dict]:
    """"no data yet" in the middle; the "local lab" badge on its own line under the legend and the
    captions (`top_px` below the plot), so it covers neither."""
    out = []
    if empty:
        out.append(dict(name="no-data", text=NO_DATA, x=0.5, y=0.5, xref="paper", yref="paper",
                        showarrow=False, font=dict(size=16, color="#777")))
    if local:
        out.append(dict(name="local-lab", text=LOCAL_BADGE, x=0, y=0, xref="paper", yshift=-top_px,
                        yref="paper", xanchor="left", yanchor="top", showarrow=False,
                        bgcolor="#fff3cd", bordercolor="#d39e00", borderwidth=1,
                        font=dict(size=11, color="#7a5b00")))
    return out


BADGE_PX = 22  # the local lab badge's line


def _subtitle(text: str) -> str:
    """The verdict as the subtitle, on two lines when too long for one (it names both windows, so
    it often is): `.replace("<br>", " ")` gives the verdict's text back."""
    if len(text) <= CAPTION_CHARS:
        return html.escape(text)
    # the rise's arrow (not the one in a change's label), else the last space that fits
    at = text.find(") → ") + 1 or text.rfind(" ", 0, CAPTION_CHARS) + 1 or len(text)
    return html.escape(text[:at].rstrip()) + "<br>" + html.escape(text[at:].lstrip())


def _layout(service: str, subtitle: str, rate_name: str, shapes: list, annotations: list, meta: dict,
            rows_above: int, lines_below: int) -> dict:
    top = (78 if subtitle else 56) + 17 * (rows_above + ("<br>" in _subtitle(subtitle)))
    bottom = 84 + LINE_PX * lines_below + (BADGE_PX if meta.get("local") else 0)
    return dict(
        title=dict(text=f"{service}: failed requests per minute", y=1.0, yanchor="top", yref="container",
                   pad=dict(t=10), subtitle=dict(text=_subtitle(subtitle))),
        xaxis=dict(title=dict(text="time (UTC); each bar spans the minute it counts", standoff=6),
                   type="date"),
        yaxis=dict(title=dict(text="failed requests"), rangemode="tozero"),
        yaxis2=dict(title=dict(text=rate_name or "failure rate"), overlaying="y", side="right",
                    rangemode="tozero", showgrid=False, tickmode="auto", ticksuffix="%",
                    visible=bool(rate_name)),
        legend=dict(orientation="h", yanchor="top", y=-52 / PLOT_PX, x=0),
        height=top + PLOT_PX + bottom, margin=dict(t=top, r=70, b=bottom), bargap=0.15,
        shapes=shapes, annotations=annotations, meta={"labkit": meta})


def graph_objects():
    """plotly.graph_objects, without the second a kernel would lose showing its first figure.

    plotly's display imports nbformat, whose jsonschema imports rfc3987_syntax when it is installed
    (Jupyter's jsonschema[format-nongpl] installs it), which builds ~35 Lark parsers at import: 1.1 s
    of CPU in every kernel (python-jsonschema/jsonschema#1428). It only checks the "iri" formats, which
    no notebook schema uses; without it jsonschema leaves them unchecked. In a room of 40 seats on 2
    cores, 20 kernels paid it at once and the chart cell took 24 s."""
    sys.modules.setdefault("rfc3987_syntax", None)  # `import rfc3987_syntax` -> ImportError, skipped
    import plotly.graph_objects as go

    return go


def failures_figure(failed, events=None, problems=None, timeline: Timeline | None = None,
                    service: str = "cart", local: bool = False, widget: bool = False, logs=None,
                    flag: str = "cartFailure", judged=None):
    """Failed requests of `service` per minute (bars) and the verdict's failure rate (line, right
    axis), on a window that frames the run's changes (`story_window`).

    - `failed`: DataFrame timestamp (UTC slot start: the minute it covers), failed, requests,
      failure_rate (0..1, NaN when there were no requests), partial (the running minute: a
      dashed box and a hollow bar of its failures so far, no rate point, so never a drop);
    - `events`: change events (timestamp, flag, old, new, ...): a dashed marker each, labelled
      "cartFailure: off → on";
    - `problems`: (display_id, title, start, end NaT while open): a shaded span each;
    - `timeline`: a labkit.timeline.Timeline: thin dotted markers for flag applied, flagd serving the
      new value, first failure, rolled back. When `events` is empty the timeline's "event sent" steps
      stand in as change markers.
    - `local`: adds a "local lab" badge so no one mistakes sandbox data for a tenant.
    - `judged`: the verdict to show under the title (lab.verdict()'s, so both say the same) and
      whose rate the line draws, with its words (EmptyCart calls where it counted spans): from the
      change on, one point per closed minute, ending on the subtitle's number; without it the
      verdict of `failed` for the last change of `flag` (`logs`, error logs, place the failures of
      the minute of the change). No change: no verdict, no rate line.

    Labels never overlap and never lie on the data: change labels take rows above the plot (short
    tags C1.. with a key under the chart when they would not fit), problem titles the rows over
    them, and the steps, keys and the local lab badge sit under the axis and the legend.

    Returns a go.Figure (a go.FigureWidget when widget=True). layout.meta["labkit"] counts what was
    drawn (change_markers, step_markers, problems, slots, partial, empty, local, verdict).
    """
    go = graph_objects()

    rows = _rows(failed)
    slot = _slot(failed)
    changes = _changes(events, timeline)
    steps = [s for s in _steps(timeline) if s.kind in STEP_LABELS and _utc(s.time) is not None]
    known = ([_utc(r.get("timestamp")) for r in rows] + [_utc(r.get("timestamp")) + slot for r in rows[-1:]]
             + [w for w, _ in changes] + [_utc(s.time) for s in steps]
             + [t for r in _rows(problems) for t in (_utc(r.get("start")),) if t is not None])
    newest = max(known) if known else None
    if rows and rows[-1].get("partial"):  # the running minute counts up to now, not to its end
        newest = min(newest, _utc(datetime.now(timezone.utc)))
    story = story_window([w for w, _ in changes], newest)
    lo, span = (story[0], story[1] - story[0]) if story else (
        (min(known), max(known) - min(known)) if known else (None, timedelta(0)))
    change_shapes, change_notes, change_key, change_rows = _change_marks(changes, lo, span)
    step_shapes, step_key = _step_marks(steps)
    problem_shapes, problem_notes, problem_key, problem_rows = _problem_marks(problems, lo, span, change_rows)
    partial = (["dashed box, hollow bar: the minute still running, its failures so far"]
               if any(r.get("partial") for r in rows) else [])
    named = [("change-key", change_key), ("problem-key", problem_key), ("step", step_key),
             ("partial", partial)]
    below = sum(len(lines) for _, lines in named)
    shapes = change_shapes + step_shapes + problem_shapes + _running_marks(rows, slot)
    annotations = (change_notes + problem_notes + _caption(named, 80)
                   + _badges(not rows, local, 80 + LINE_PX * below + 4))
    if judged is None and verdict.windows(timeline, flag, events) is not None:
        judged = verdict.compare(failed, timeline, flag=flag, events=events, logs=logs)
    rate = _rate_points(judged, changes, newest)
    meta = {"service": service, "local": bool(local), "slots": len(rows), "empty": not rows,
            "partial": sum(bool(r.get("partial")) for r in rows),
            "change_markers": len(changes), "change_labels": [label for _, label in changes],
            "step_markers": len(steps), "problems": len(problem_shapes),
            "verdict": judged.text if judged is not None and judged.change else ""}
    fig = go.Figure(_traces(go, rows, slot, rate))
    fig.update_layout(**_layout(service, meta["verdict"], rate[0], shapes, annotations, meta,
                                change_rows + problem_rows, below))
    if story:
        fig.update_xaxes(range=list(story), **minute_ticks(*story))
    if not rows and not shapes:
        now = _utc(datetime.now(timezone.utc))
        fig.update_xaxes(range=[now - timedelta(minutes=30), now])
        fig.update_yaxes(range=[0, 1], showticklabels=False)
    return go.FigureWidget(fig) if widget else fig
