"""Charts: what a person sees on the failures figure."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from labkit import charts, timeline as labmod, verdict
from labkit.timeline import Timeline

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)


def failed_frame(rows, partial_last=False):
    """rows: (minute offset from T0, failed, requests) -> the dynatrace.failed_requests shape: the
    minute T0+m covers [T0+m, T0+m+1); with partial_last the last minute is still running."""
    ts = pd.to_datetime([T0 + timedelta(minutes=m) for m, _, _ in rows], utc=True)
    failed = [f for _, f, _ in rows]
    requests = [r for _, _, r in rows]
    rate = [f / r if r else np.nan for _, f, r in rows]
    partial = [partial_last and i == len(rows) - 1 for i in range(len(rows))]
    return pd.DataFrame({"timestamp": ts, "failed": failed, "requests": requests,
                         "failure_rate": rate, "partial": partial})


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
        "problem_id": ["p-1"], "display_id": ["P-2611001"], "title": ["[1][production][otel-demo-app][teamA] Critical Redis connection error!"],
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
    bars, so_far, rate = fig.data
    assert bars.type == "bar" and len(bars.x) == 20 and list(bars.y)[-1] == 3 and not so_far.x
    # the verdict's rate as it grew from the change: its last point is the subtitle's number
    assert rate.yaxis == "y2" and rate.y[-1] == pytest.approx(100 * 27 / 330, abs=0.01)
    assert rate.text[-1] == "8.2 %" and rate.name == "failure rate of all cart requests since 10:10:00 UTC"
    assert fig.layout.title.text == "cart: failed requests per minute"
    # the subtitle is the verdict's own sentence
    assert fig.layout.title.subtitle.text.replace("<br>", " ") == fig.layout.meta["labkit"]["verdict"]
    # after = from the change at 10:10 on: minutes 10..20, 27 of 330 requests failed
    # each side with its window; on two lines, broken at the rise's arrow
    assert fig.layout.title.subtitle.text == ("failure rate of all cart requests rose: 0.0 % (0 of 150 in "
                                              "10:05:00–10:10:00 UTC)<br>→ 8.2 % (27 of 330 cart requests "
                                              "failed since cartFailure: off → on at 10:10:00 UTC, to 10:21:00)")
    # the line's last point says the same words as the subtitle's after side
    assert rate.hovertext[-1] == ("8.2 % (27 of 330 cart requests failed since cartFailure: off → on at "
                                  "10:10:00 UTC, to 10:21:00)")
    assert rate.hovertext[1].endswith("since cartFailure: off → on at 10:10:00 UTC, to 10:12:00)")
    change = annotations(fig, "change")
    assert [a.text for a in change] == ["cartFailure: off → on"]
    assert shapes(fig, "change")[0].line.dash == "dash"
    # timeline steps: thinner dotted markers, named with their times in one caption under the chart
    step_texts = [a.text for a in annotations(fig, "step")]
    assert step_texts == ["dotted: flag applied 10:10:00 · flagd serves on 10:11:00"]
    assert all(s.line.dash == "dot" and s.line.width < 2 for s in shapes(fig, "step"))
    (rect,) = shapes(fig, "problem")
    assert rect.type == "rect"
    assert "P-2611001 [1][production][otel-demo-app][teamA] Critical Redis connection error!" in annotations(fig, "problem")[0].text
    meta = fig.layout.meta["labkit"]
    assert meta["change_markers"] == 1 and meta["problems"] == 1 and meta["slots"] == 20
    assert meta["change_labels"] == ["cartFailure: off → on"]
    assert not annotations(fig, "local-lab") and not annotations(fig, "no-data")


def test_x_axis_is_utc_even_for_other_timezones():
    failed = failed_frame([(1, 0, 10)])
    failed["timestamp"] = failed["timestamp"].dt.tz_convert("Europe/Vienna")
    fig = charts.failures_figure(failed)
    # the bar stands over the minute it covers: 10:01:00-10:02:00, centred at 10:01:30 UTC
    assert pd.Timestamp(fig.data[0].x[0]) == pd.Timestamp(T0 + timedelta(minutes=1.5)).tz_localize(None)
    assert fig.data[0].hovertext[0].startswith("10:01–10:02 UTC: 0 failed of 10 requests")
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
        assert len(fig.data) == 3  # same traces, so a live chart can fill them in later


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


# --- the running minute and legibility -----------------------------------------------------------
def test_the_running_minute_is_hollow_and_so_far_never_a_drop_to_zero():
    failed = failed_frame([(m, 3, 30) for m in range(1, 10)] + [(10, 0, 2)], partial_last=True)
    fig = charts.failures_figure(failed)
    bars, so_far, rate = fig.data
    assert len(bars.x) == 9 and list(so_far.y) == [0]          # not among the finished minutes
    assert "so far" in so_far.hovertext[0] and so_far.marker.pattern.shape == "/"
    assert not rate.x and not fig.layout.yaxis2.visible        # no change: no verdict, no rate
    (box,) = shapes(fig, "partial")                             # the running minute, dashed
    assert box.line.dash == "dash" and pd.Timestamp(box.x0) == pd.Timestamp(T0 + timedelta(minutes=10)).tz_localize(None)
    assert [a.text for a in annotations(fig, "partial")] == [
        "dashed box, hollow bar: the minute still running, its failures so far"]
    assert fig.layout.meta["labkit"]["partial"] == 1


def _boxes(fig, name, px_per_minute):
    """(left, right, row) in px of each label called `name` (the figure's own estimate of width)."""
    out = []
    lo = pd.Timestamp(fig.layout.xaxis.range[0])
    for a in annotations(fig, name):
        x = (pd.Timestamp(a.x) - lo) / timedelta(minutes=1) * px_per_minute
        w = len(a.text) * charts.CHAR_PX
        left = x - w if a.xanchor == "right" else x
        out.append((left, left + w, a.yshift))
    return out


def _overlaps(boxes):
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]
            if a[2] == b[2] and not (a[1] + 4 < b[0] or b[1] + 4 < a[0])]


def test_three_close_changes_and_two_problems_stay_legible():
    """A flip, its rollback and a flip again minutes apart, two problems: no label lies on another;
    crowded labels become tags with their key under the chart; nothing under the chart overlaps."""
    failed = failed_frame([(m, 3 if 10 <= m < 14 or m >= 16 else 0, 30) for m in range(0, 31)])
    events = events_frame((9.8, "off", "on"), (11.0, "on", "off"), (12.2, "off", "on"))
    tl = change_timeline(12.2, 12.6)
    problems = pd.concat([problems_frame(11, 15), problems_frame(17)], ignore_index=True)
    problems.loc[1, "display_id"] = "P-2611002"
    fig = charts.failures_figure(failed, events=events, problems=problems, timeline=tl, local=True)
    lo, hi = (pd.Timestamp(x) for x in fig.layout.xaxis.range)
    per_minute = charts.NOMINAL_PX / ((hi - lo) / timedelta(minutes=1))
    for name in ("change", "problem"):
        assert not _overlaps(_boxes(fig, name, per_minute)), name
    # three full labels within 3 minutes do not fit in two rows: tags, and their key under the chart
    assert [a.text for a in annotations(fig, "change")] == ["C1", "C2", "C3"]
    (key,) = annotations(fig, "change-key")
    assert "C2 10:11:00 cartFailure: on → off" in key.text
    assert [a.text.split(" ")[0] for a in annotations(fig, "problem")] == ["P-2611001", "P-2611002"]
    # under the plot: legend row (with the badge at the right), then caption blocks one under another
    below = sorted((-a.yshift, a.name, a.text.count("<br>") + 1) for a in fig.layout.annotations
                   if a.yref == "paper" and a.y == 0)
    for (top, name, lines), (next_top, _, _) in zip(below, below[1:]):
        assert next_top >= top + (lines if name != "local-lab" else 1) * charts.LINE_PX - 1, below
    # all of it inside the figure: the bottom margin holds the last caption line
    last_top, _, lines = below[-1]
    assert last_top + lines * charts.LINE_PX <= fig.layout.margin.b
    assert fig.layout.margin.t >= 78 + 17 * (max(a.yshift for a in annotations(fig, "change")) // 17)


# --- the story at a glance (issue 26) ----------------------------------------------------------
def _story(partial=False):
    """A change at 10:19:51, failures from 10:20 on, an open problem at 10:20:23."""
    rows = [(m, 0, 6) for m in range(0, 20)] + [(20, 5, 9), (21, 2, 8), (22, 3, 7), (23, 1, 8)]
    failed = failed_frame(rows, partial_last=partial)
    events = events_frame((19 + 51 / 60, "off", "10%"))
    tl = change_timeline(19 + 51 / 60, 20 + 7 / 60, new="10%")
    problems = problems_frame(20 + 23 / 60)
    problems["display_id"] = "P-01"
    return failed, events, problems, tl


def _naive(t):
    return pd.Timestamp(t).tz_localize(None) if pd.Timestamp(t).tzinfo else pd.Timestamp(t)


def test_the_window_frames_the_change_not_the_flat_minutes_before_it():
    failed, events, problems, tl = _story()
    fig = charts.failures_figure(failed, events=events, problems=problems, timeline=tl, local=True)
    change = _naive(events["timestamp"][0])
    lo, hi = (pd.Timestamp(x) for x in fig.layout.xaxis.range)
    assert timedelta(minutes=2) <= change - lo <= timedelta(minutes=5)    # starts just before it
    assert hi >= _naive(failed["timestamp"].iloc[-1]) + timedelta(minutes=1)  # up to the newest minute
    assert (hi - change) / (hi - lo) > 0.5           # the change and after it: most of the width
    assert fig.layout.xaxis.dtick == 60_000 and fig.layout.xaxis.tickformat == "%H:%M"
    assert pd.Timestamp(fig.layout.xaxis.tick0).second == 0  # ticks on whole minutes


def test_bars_sit_in_the_minute_they_count():
    failed, events, problems, tl = _story()
    bars = charts.failures_figure(failed, events=events, timeline=tl).data[0]
    for x, minute, y in zip(bars.x, failed["timestamp"], failed["failed"]):
        assert pd.Timestamp(x).floor("min") == _naive(minute) and pd.Timestamp(x).second == 30
    assert bars.width == pytest.approx(0.85 * 60_000)


def test_one_failure_rate_the_verdicts_drawn_from_the_change_on():
    failed, events, problems, tl = _story()
    fig = charts.failures_figure(failed, events=events, problems=problems, timeline=tl)
    judged = verdict.compare(failed, tl, events=events)
    rate = fig.data[2]
    change = _naive(events["timestamp"][0])
    assert all(pd.Timestamp(x) >= change for x in rate.x)  # nothing drawn before the change
    # one point at each closed minute's end from the change on, the last at the newest data
    assert [pd.Timestamp(x) for x in rate.x] == [change.ceil("min") + timedelta(minutes=i) for i in range(5)]
    # the subtitle's words and number
    subtitle = fig.layout.title.subtitle.text.replace("<br>", " ")
    assert subtitle == judged.text and judged.rate_name in subtitle
    assert rate.name.startswith(judged.rate_name) and fig.layout.yaxis2.title.text == rate.name
    assert rate.text[-1] == verdict.pct(judged.after_rate) and f"→ {rate.text[-1]}" in subtitle
    assert [t for t in rate.text if t] == [rate.text[-1]]


def test_the_rate_of_emptycart_calls_when_the_verdict_counts_calls():
    failed, events, problems, tl = _story()
    change = _naive(events["timestamp"][0])
    stamps = [change + timedelta(seconds=s) for s in range(-200, 240, 20)]
    calls = pd.DataFrame({"timestamp": pd.to_datetime(stamps).tz_localize("UTC"),
                          "failed": [s > change and i % 3 == 0 for i, s in enumerate(stamps)]})
    judged = verdict.compare(calls, tl, events=events, unit="EmptyCart calls")
    fig = charts.failures_figure(failed, events=events, timeline=tl, judged=judged)
    rate = fig.data[2]
    assert rate.name.startswith("failure rate of EmptyCart calls since ")
    assert rate.text[-1] == verdict.pct(judged.after_rate) and rate.text[-1] in fig.layout.title.subtitle.text
    assert "EmptyCart calls" in rate.hovertext[-1]


def test_labels_above_the_plot_and_the_badge_under_everything():
    failed, events, problems, tl = _story()
    fig = charts.failures_figure(failed, events=events, problems=problems, timeline=tl, local=True)
    for a in annotations(fig, "change") + annotations(fig, "problem"):
        assert a.yref == "paper" and a.y == 1.0 and a.yanchor == "bottom" and a.yshift > 0  # over no bar
    (problem,) = annotations(fig, "problem")
    assert problem.text == "P-01 [1][production][otel-demo-app][teamA] Critical Redis connection error! (open)"
    assert problem.yshift > max(a.yshift for a in annotations(fig, "change"))  # its own row
    (badge,) = annotations(fig, "local-lab")
    legend_px = -fig.layout.legend.y * charts.PLOT_PX
    captions = [a for a in fig.layout.annotations if a.yref == "paper" and a.y == 0 and a.name != "local-lab"]
    lowest = max(-a.yshift + (a.text.count("<br>") + 1) * charts.LINE_PX for a in captions)
    assert -badge.yshift >= max(lowest, legend_px + 20)  # under the legend and the captions
    assert -badge.yshift + charts.BADGE_PX <= fig.layout.margin.b  # inside the figure
    assert fig.layout.margin.t >= 78 + 17 * (problem.yshift // 17)


def test_after_a_rollback_the_minutes_after_it_have_room_and_both_windows_show():
    failed, events, problems, tl = _story()
    back = T0 + timedelta(minutes=23, seconds=20)
    tl.add(labmod.FLAG_APPLIED, flag="cartFailure", old="10%", new="off", at=back)
    tl.add(labmod.ROLLED_BACK, flag="cartFailure", new="off", at=back + timedelta(seconds=1))
    events = pd.concat([events, events_frame((23 + 20 / 60, "10%", "off"))], ignore_index=True)
    fig = charts.failures_figure(failed, events=events, problems=problems, timeline=tl)
    lo, hi = (pd.Timestamp(x) for x in fig.layout.xaxis.range)
    assert hi - _naive(back) >= charts.ROOM               # not against the right edge
    assert _naive(events["timestamp"][0]) - lo <= timedelta(minutes=5)
    judged = verdict.compare(failed, tl, events=events)
    rate = fig.data[2]
    # the window before the rollback (after the first change) ends on the subtitle's first number,
    # a gap, then the window after it on its second
    assert [t for t in rate.text if t] == [verdict.pct(judged.before_rate), verdict.pct(judged.after_rate)]
    assert None in list(rate.y)
    assert all(pd.Timestamp(x) >= _naive(events["timestamp"][0]) for x in rate.x)


def test_the_runbook_charts_agree_with_the_main_chart_minute_by_minute():
    from labkit import runbook

    failed, events, problems, tl = _story()
    main = charts.failures_figure(failed, events=events, problems=problems, timeline=tl).data[0]
    book = runbook.Runbook("https://x/ui/document/r", "P-01", failed, events, problems)
    trend = book.error_trend
    line = trend.data[0]
    worst = lambda xs, ys: pd.Timestamp(xs[list(ys).index(max(ys))]).floor("min")  # noqa: E731
    assert worst(line.x, line.y) == worst(main.x, main.y) == _naive(T0 + timedelta(minutes=20))
    assert [pd.Timestamp(x).floor("min") for x in line.x] == [pd.Timestamp(x).floor("min") for x in main.x]
    assert line.line.shape == "hvh"  # each value spans its own minute
    both = book.changes_and_problems
    assert trend.layout.xaxis.range == both.layout.xaxis.range
    assert both.layout.xaxis.dtick == 60_000 and trend.layout.xaxis.dtick == 60_000
    change, problem = both.data
    assert pd.Timestamp(change.x[0]).floor("min") == _naive(T0 + timedelta(minutes=19))
    assert change.text[0] == "10:19:51" and problem.text[0] == "10:20:23"  # at their own times
    assert pd.Timestamp(problem.x[0]).floor("min") == _naive(T0 + timedelta(minutes=20))


def test_a_kernels_first_figure_shows_without_compiling_rfc3987_syntaxs_grammars():
    # plotly's display imports nbformat -> jsonschema -> rfc3987_syntax (1.1 s of Lark parsers per kernel)
    code = """
import sys
from labkit import charts
go = charts.graph_objects()
import nbformat, plotly.io as pio
bundle = pio.renderers._build_mime_bundle(go.Figure(go.Bar(y=[1])).to_dict(), renderers_string="plotly_mimetype")
assert "application/vnd.plotly.v1+json" in bundle, bundle.keys()
nbformat.validate(nbformat.v4.new_notebook())  # notebooks still validate
print(sys.modules.get("rfc3987_syntax", "absent"))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() in ("None", "absent"), done.stdout
