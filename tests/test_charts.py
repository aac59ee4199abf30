"""Charts: what a person sees on the failures figure."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from labkit import charts, timeline as labmod
from labkit.timeline import Timeline

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)


def failed_frame(rows):
    """rows: (minute offset from T0, failed, requests) -> the dynatrace.failed_requests shape."""
    ts = pd.to_datetime([T0 + timedelta(minutes=m) for m, _, _ in rows], utc=True)
    failed = [f for _, f, _ in rows]
    requests = [r for _, _, r in rows]
    rate = [f / r if r else np.nan for _, f, r in rows]
    return pd.DataFrame({"timestamp": ts, "failed": failed, "requests": requests,
                         "failure_rate": rate})


def events_frame(*changes):
    """changes: (minute, old, new)."""
    return pd.DataFrame({
        "timestamp": pd.to_datetime([T0 + timedelta(minutes=m) for m, _, _ in changes], utc=True),
        "title": ["feature flag changed"] * len(changes), "flag": ["cartFailure"] * len(changes),
        "old": [o for _, o, _ in changes], "new": [n for _, _, n in changes],
        "run_id": ["abc"] * len(changes), "event_id": [f"e{i}" for i in range(len(changes))],
        "status": ["OK"] * len(changes)})


def problems_frame(start_min, end_min=None):
    end = pd.NaT if end_min is None else T0 + timedelta(minutes=end_min)
    return pd.DataFrame({
        "problem_id": ["p-1"], "display_id": ["P-2611001"], "title": ["Redis connection errors"],
        "status": ["OPEN" if end_min is None else "CLOSED"], "severity": ["ERROR"],
        "start": pd.to_datetime([T0 + timedelta(minutes=start_min)], utc=True),
        "end": pd.to_datetime([end], utc=True), "affected": ["cart"], "root_cause": ["cart"]})


def change_timeline(applied_min=10.0, serving_min=11.0, old="off", new="on"):
    tl = Timeline()
    change = dict(flag="cartFailure", old=old, new=new)
    tl.add(labmod.EVENT_SENT, **change, at=T0 + timedelta(minutes=applied_min - 0.1))
    tl.add(labmod.FLAG_APPLIED, **change, at=T0 + timedelta(minutes=applied_min))
    tl.add(labmod.FLAGD_RESTARTED, note="scale, 2.0 s", at=T0 + timedelta(minutes=applied_min + 0.5))
    tl.add(labmod.FLAGD_SERVING, flag="cartFailure", new=new, note="True",
           at=T0 + timedelta(minutes=serving_min))
    return tl


def annotations(fig, name):
    return [a for a in fig.layout.annotations if a.name == name]


def shapes(fig, name):
    return [s for s in fig.layout.shapes if s.name == name]


# --- the figure ------------------------------------------------------------------------------
def test_figure_shows_bars_rate_change_marker_steps_and_problem():
    failed = failed_frame([(m, 0 if m <= 11 else 3, 30) for m in range(1, 21)])
    fig = charts.failures_figure(failed, events=events_frame((10, "off", "on")),
                                 problems=problems_frame(14, 19), timeline=change_timeline())
    bars, rate = fig.data
    assert bars.type == "bar" and len(bars.x) == 20 and list(bars.y)[-1] == 3
    assert rate.yaxis == "y2" and rate.y[-1] == pytest.approx(10.0)
    assert fig.layout.title.text == "cart: failed requests"
    change = annotations(fig, "change")
    assert [a.text for a in change] == ["cartFailure: off → on"]
    assert shapes(fig, "change")[0].line.dash == "dash"
    # timeline steps: thinner dotted markers, named with their times in one caption under the chart
    step_texts = [a.text for a in annotations(fig, "step")]
    assert step_texts == ["dotted: flag applied 10:10:00 · flagd serves on 10:11:00"]
    assert all(s.line.dash == "dot" and s.line.width < 2 for s in shapes(fig, "step"))
    (rect,) = shapes(fig, "problem")
    assert rect.type == "rect"
    assert "P-2611001 Redis connection errors" in annotations(fig, "problem")[0].text
    meta = fig.layout.meta["labkit"]
    assert meta["change_markers"] == 1 and meta["problems"] == 1 and meta["slots"] == 20
    assert meta["change_labels"] == ["cartFailure: off → on"]
    assert not annotations(fig, "local-lab") and not annotations(fig, "no-data")


def test_x_axis_is_utc_even_for_other_timezones():
    failed = failed_frame([(1, 0, 10)])
    failed["timestamp"] = failed["timestamp"].dt.tz_convert("Europe/Vienna")
    fig = charts.failures_figure(failed)
    assert pd.Timestamp(fig.data[0].x[0]) == pd.Timestamp(T0 + timedelta(minutes=1)).tz_localize(None)
    assert "UTC" in fig.layout.xaxis.title.text


def test_open_problem_is_shaded_until_now_and_says_open():
    fig = charts.failures_figure(failed_frame([(1, 0, 10)]), problems=problems_frame(0))
    (rect,) = shapes(fig, "problem")
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    assert abs(pd.Timestamp(rect.x1) - now) < timedelta(minutes=1)
    assert annotations(fig, "problem")[0].text.endswith("(open)")


def test_local_lab_badge():
    fig = charts.failures_figure(failed_frame([(1, 0, 10)]), local=True)
    (badge,) = annotations(fig, "local-lab")
    assert "local lab" in badge.text
    assert fig.layout.meta["labkit"]["local"] is True


def test_empty_data_says_no_data_yet():
    for empty in (None, failed_frame([]).iloc[0:0]):
        fig = charts.failures_figure(empty, events=None, problems=None, timeline=None)
        (note,) = annotations(fig, "no-data")
        assert "no data yet" in note.text
        assert fig.layout.meta["labkit"]["empty"] is True
        assert len(fig.data) == 2  # same traces, so a live chart can fill them in later


def test_timeline_event_stands_in_when_dynatrace_has_no_change_events_yet():
    fig = charts.failures_figure(failed_frame([(1, 0, 10)]), events=events_frame().iloc[0:0],
                                 timeline=change_timeline())
    assert [a.text for a in annotations(fig, "change")] == ["cartFailure: off → on"]


def test_rollback_draws_two_change_markers_and_rolled_back_step():
    tl = change_timeline()
    tl.add(labmod.ROLLED_BACK, flag="cartFailure", new="off", at=T0 + timedelta(minutes=30))
    fig = charts.failures_figure(failed_frame([(1, 0, 10)]),
                                 events=events_frame((10, "off", "on"), (29, "on", "off")), timeline=tl)
    assert fig.layout.meta["labkit"]["change_markers"] == 2
    assert "cartFailure: on → off" in [a.text for a in annotations(fig, "change")]
    assert "rolled back 10:30:00" in annotations(fig, "step")[0].text


def test_widget_figure_is_a_figure_widget():
    fig = charts.failures_figure(failed_frame([(1, 0, 10)]), widget=True)
    import plotly.graph_objects as go

    assert isinstance(fig, go.FigureWidget)


def test_import_is_cheap():
    code = "import sys, labkit.charts; print(any(m.startswith(('plotly', 'pandas')) for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
