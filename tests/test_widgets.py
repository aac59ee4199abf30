"""Widgets, headless in-process (ipywidgets works without a frontend).

The flag switch and the live chart are exercised over a real Lab on the local lab when its parts
exist; the chart's rendering paths also over a small recorded lab that hands back DataFrames of the
labkit.dynatrace shapes.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from labkit import widgets
from labkit.errors import LabTimeout
from labkit import lab as labmod
from labkit.lab import Lab as _Lab
from labkit.progress import printer
from labkit.timeline import Timeline

LAB_PARTS = ("labkit.sandbox.kube", "labkit.sandbox.dynatrace", "labkit.sandbox.shop",
             "labkit.dynatrace", "labkit.cluster", "labkit.shop")


def _missing_parts() -> list[str]:
    missing = []
    for name in LAB_PARTS:
        try:
            if importlib.util.find_spec(name) is None:
                missing.append(name)
        except ModuleNotFoundError:
            missing.append(name)
    return missing


@pytest.fixture
def real_lab(request):
    missing = _missing_parts()
    if missing:
        pytest.skip("the local lab is not complete yet: " + ", ".join(missing))
    from labkit.lab import Lab
    from labkit.settings import Settings

    local_lab = request.getfixturevalue("local_lab")
    lab = Lab(Settings.load(environ=dict(local_lab.env), dotenv=None))
    lab.timeline.clear()  # a new run per test, as a facilitator's reset starts one
    yield lab
    try:
        if "off" in lab.variants("cartFailure") and lab.served("cartFailure").variant != "off":
            lab.change_flag("off", "cartFailure", send_event=False)
    finally:
        lab.dynatrace.close()


class RecordedLab:
    """Hands back fixed DataFrames in the shapes labkit.dynatrace returns (for the chart paths)."""

    local = True

    def __init__(self):
        now = pd.Timestamp.now(tz="UTC").floor("min")
        self.slots = pd.DataFrame({
            "timestamp": pd.date_range(now - pd.Timedelta(minutes=9), now, freq="1min"),
            "failed": [0] * 5 + [3] * 5, "requests": [30] * 10})
        self.slots["failure_rate"] = self.slots["failed"] / self.slots["requests"]
        self.timeline = Timeline()
        self.timeline.add("flag applied", flag="cartFailure", old="off", new="on",
                          at=(now - pd.Timedelta(minutes=5)).to_pydatetime())
        self.calls = 0
        self.fail_problems = False

    chart = _Lab.chart  # the real Lab's chart over these recorded frames

    def since(self):
        return datetime.now(timezone.utc) - timedelta(minutes=30)

    def failed_requests(self, service="cart", since=None):
        self.calls += 1
        return self.slots

    def change_events(self, service="cart", since=None):
        if not self.timeline.steps:
            return pd.DataFrame(columns=["timestamp", "title", "flag", "old", "new", "run_id",
                                         "event_id", "status"])
        t = self.timeline.steps[0].time
        return pd.DataFrame({"timestamp": pd.to_datetime([t], utc=True), "title": ["feature flag changed"],
                             "flag": ["cartFailure"], "old": ["off"], "new": ["on"], "run_id": ["r"],
                             "event_id": ["e1"], "status": ["OK"]})

    def _judge(self, service, failed, flag="cartFailure"):
        from labkit import verdict  # no spans or logs recorded: the minutes, split by time

        return verdict.compare(failed, self.timeline, flag)

    def problems(self, service="cart", since=None):
        if self.fail_problems:
            raise LabTimeout("Dynatrace did not answer the problems query in 10 s; try again.")
        return pd.DataFrame(columns=["problem_id", "display_id", "title", "status", "severity",
                                     "start", "end", "affected", "root_cause"])


# --- progress ------------------------------------------------------------------------------
def test_progress_view_callback_updates_bar_and_message():
    view = widgets.ProgressView()
    view.callback("Restarting flagd: 1 of 1 pods ready", 0.5)
    assert view.bar.value == 0.5
    assert "Restarting flagd" in view.label.value and view.message.startswith("Restarting")
    view.callback("still waiting", None)  # no fraction: the bar stays where it was
    assert view.bar.value == 0.5 and "still waiting" in view.label.value
    view("<b>escaped</b>", 2.0)
    assert view.bar.value == 1.0 and "&lt;b&gt;" in view.label.value
    view.done("flagd serves cartFailure = on")
    assert view.bar.bar_style == "success" and "flagd serves cartFailure = on" in view.label.value
    view.fail("flagd did not become ready in 180 s")
    assert view.bar.bar_style == "danger" and "did not become ready" in view.label.value
    assert "application/vnd.jupyter.widget-view+json" in view._repr_mimebundle_()


def test_terminal_progress_prints_plain_lines_on_stderr_once_each(capsys):
    report = printer()
    report("Restarting flagd", 0.25)
    report("Restarting flagd", 0.25)  # said again: not printed again
    report("waiting for the problem")
    err = capsys.readouterr().err.splitlines()
    assert err == ["   25% Restarting flagd", "       waiting for the problem"]


def test_progress_outside_a_notebook_prints_titled_lines(capsys):
    report = widgets.progress("Cart traffic")
    report("12 sessions, 1 failed", 0.5)
    assert capsys.readouterr().err.rstrip() == "   50% Cart traffic: 12 sessions, 1 failed"


def test_progress_view_title_and_success_at_the_end():
    view = widgets.ProgressView("Waiting for the problem")
    view("asking Dynatrace", 0.3)
    assert view.label.value.startswith("<b>Waiting for the problem</b>: asking Dynatrace")
    assert view.bar.bar_style == "info"
    view("problem P-1 opened", 1.0)
    assert view.bar.bar_style == "success"


def test_import_is_cheap():
    code = ("import sys, labkit.widgets; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'ipywidgets', 'plotly', 'pandas'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- live chart ----------------------------------------------------------------------------
def test_live_chart_falls_back_to_a_static_figure(monkeypatch):
    monkeypatch.setenv("LABKIT_STATIC_CHARTS", "1")
    lab = RecordedLab()
    chart = widgets.LiveChart(lab, every=0.5)
    assert chart.static and chart.widget is None and not chart.running
    import plotly.graph_objects as go

    assert type(chart.figure) is go.Figure
    assert chart.figure.layout.meta["labkit"]["change_markers"] == 1
    bundle = chart._repr_mimebundle_()
    import json

    assert {"application/vnd.plotly.v1+json", "text/html"} & set(bundle), bundle.keys()
    assert "cartFailure: off → on" in json.dumps(bundle, ensure_ascii=False)  # the change is on it
    assert lab.calls == 1  # drawn once, no thread


def test_static_outside_a_kernel(monkeypatch):
    monkeypatch.delenv("LABKIT_STATIC_CHARTS", raising=False)
    assert widgets.static_charts()  # pytest is not a Jupyter kernel


def test_live_chart_refreshes_and_stops():
    lab = RecordedLab()
    chart = widgets.LiveChart(lab, every=0.5, static=False, max_duration=30)
    try:
        import plotly.graph_objects as go

        # drawn by the notebook's plotly renderer (full cell width), the figure kept as a go.Figure
        assert isinstance(chart.figure, go.Figure) and "labkit-live-figure" in chart.output._dom_classes
        (shown,) = chart.output.outputs
        assert shown["data"]["application/vnd.plotly.v1+json"]["config"] == {"responsive": True}
        assert "width" not in shown["data"]["application/vnd.plotly.v1+json"]["layout"]
        assert "labkit-live-chart" in chart.widget._dom_classes and chart.running
        lab.slots.loc[lab.slots.index[-1], "failed"] = 9
        deadline = datetime.now() + timedelta(seconds=10)
        while chart.updates < 1 and datetime.now() < deadline:
            chart._stop.wait(0.1)
        assert chart.updates >= 1 and list(chart.figure.data[0].y)[-1] == 9
        assert chart.output.outputs[0]["data"]["application/vnd.plotly.v1+json"]["data"][0]["y"][-1] == 9
        texts = [a.text for a in chart.figure.layout.annotations]
        assert "cartFailure: off → on" in texts and any("local lab" in t for t in texts)
    finally:
        chart.stop()
    assert not chart.running
    assert chart.stop_button.description == "Start" and "stopped" in chart.status.value
    # restartable after Stop: the same button starts it again, and it refreshes again
    updates = chart.updates
    chart.stop_button.click()
    try:
        assert chart.running and chart.stop_button.description == "Stop"
        lab.slots.loc[lab.slots.index[-1], "failed"] = 4
        deadline = datetime.now() + timedelta(seconds=10)
        while chart.updates <= updates and datetime.now() < deadline:
            chart._stop.wait(0.1)
        assert chart.updates > updates and list(chart.figure.data[0].y)[-1] == 4
    finally:
        chart.stop_button.click()
    assert not chart.running and chart.stop_button.description == "Start"


def test_live_chart_shows_errors_and_stops_by_itself():
    lab = RecordedLab()
    lab.fail_problems = True
    chart = widgets.LiveChart(lab, every=0.5, static=False, max_duration=0.2)
    chart._thread.join(5)
    assert not chart.running
    assert "did not answer the problems query" in chart.status.value
    assert len(chart.figure.data[0].x) == 10  # bars still drawn despite the problems error


# --- flag switch over a real lab --------------------------------------------------------------
def test_flag_switch_over_the_local_lab(real_lab, lab_on):
    switch = widgets.FlagSwitch(real_lab, "cartFailure")
    assert list(switch.toggle.options) == real_lab.variants("cartFailure")
    assert "labkit-flag-switch" in switch.widget._dom_classes
    assert "labkit-served" in switch.served_label._dom_classes
    assert "labkit-status" in switch.status._dom_classes
    before = real_lab.served("cartFailure").variant
    assert switch.served_text == f"flagd serves: {before}"
    target = lab_on if before != lab_on else "off"

    served = switch.apply(target)
    assert switch.error is None, switch.status.value
    assert served.variant == target
    assert switch.served_text == f"flagd serves: {target}"
    assert switch.progress.bar.value == 1.0 and not switch.apply_button.disabled
    assert switch.toggle.value == target


def test_flag_switch_button_runs_in_background(real_lab, lab_on):
    switch = widgets.FlagSwitch(real_lab, "cartFailure")
    target = "off" if real_lab.served("cartFailure").variant != "off" else lab_on
    switch.toggle.value = target
    switch.apply_button.click()
    assert switch.apply_button.disabled  # while it runs
    switch.wait(60)
    assert not switch.running and not switch.apply_button.disabled
    assert switch.error is None, switch.status.value
    assert switch.served_text == f"flagd serves: {target}"


def test_flag_switch_shows_bad_variant_as_message(real_lab):
    switch = widgets.FlagSwitch(real_lab, "cartFailure")
    assert switch.apply("sometimes") is None
    assert switch.error is not None
    assert "sometimes" in switch.status.value and "Traceback" not in switch.status.value
    assert switch.progress.bar.bar_style == "danger"


def test_flag_switch_unknown_flag_is_shown_not_raised(real_lab):
    switch = widgets.FlagSwitch(real_lab, "cartFailur")
    assert switch.apply_button.disabled
    assert "cartFailur" in switch.status.value


def test_live_chart_starting_empty_shows_data_once_it_arrives():
    lab = RecordedLab()
    full = lab.slots
    lab.slots = full.iloc[0:0]
    lab.timeline = Timeline()  # nothing happened yet either
    chart = widgets.LiveChart(lab, static=False, start=False)
    assert any("no data yet" in a.text for a in chart.figure.layout.annotations)
    assert chart.figure.layout.yaxis.showticklabels is False
    lab.slots = full
    chart.refresh()
    assert not any("no data yet" in a.text for a in chart.figure.layout.annotations)
    assert chart.figure.layout.yaxis.showticklabels is not False
    assert chart.figure.layout.xaxis.range is None and len(chart.figure.data[0].x) == 10


def test_live_chart_over_the_local_lab_marks_the_change(real_lab, lab_on):
    switch = widgets.FlagSwitch(real_lab, "cartFailure")
    before = real_lab.served("cartFailure").variant
    target = lab_on if before != lab_on else "off"
    assert switch.apply(target) is not None, switch.status.value
    real_lab.generate_traffic(seconds=2, rate=20)
    chart = widgets.LiveChart(real_lab, static=True)
    meta = chart.figure.layout.meta["labkit"]
    assert chart.error is None, chart.error
    assert f"cartFailure: {before} → {target}" in meta["change_labels"]
    assert meta["local"] and meta["slots"] > 0 and meta["step_markers"] >= 2
    live = widgets.LiveChart(real_lab, static=False, start=False)
    live.refresh()
    assert live.error is None and "labkit-live-chart" in live.widget._dom_classes
    # named on the chart: as its label, or (several changes close together) in the key under it
    named = " ".join(a.text for a in live.figure.layout.annotations if a.name in ("change", "change-key"))
    assert f"cartFailure: {before} → {target}" in named
    # its rate names what it counts and since when, in the verdict's words; so does the switch's expectation
    from labkit.timeline import FLAG_APPLIED
    from labkit.verdict import clock

    at = clock(real_lab.timeline.last(FLAG_APPLIED, "cartFailure").time)
    since = f"failed since cartFailure: {before} → {target} at {at} UTC, to "
    subtitle = live.figure.layout.title.subtitle.text.replace("<br>", " ")
    assert since in subtitle and subtitle == live.figure.layout.meta["labkit"]["verdict"]
    assert live.figure.data[2].name.startswith(("failure rate of all cart requests since ",
                                                "failure rate of EmptyCart calls since "))
    assert "of EmptyCart calls failed since the change" in switch.cart_text


def test_flag_switch_does_not_send_a_second_event_after_inform_dynatrace(real_lab, lab_on):
    before = real_lab.served("cartFailure").variant
    target = lab_on if before != lab_on else "off"
    real_lab.inform_dynatrace(target, "cartFailure")
    switch = widgets.FlagSwitch(real_lab, "cartFailure")
    assert switch.apply(target) is not None, switch.status.value
    sent = [s for s in real_lab.timeline.steps if s.kind == labmod.EVENT_SENT]
    assert len(sent) == 1
    # a later change without a fresh announcement does send its own event
    assert switch.apply(before) is not None, switch.status.value
    sent = [s for s in real_lab.timeline.steps if s.kind == labmod.EVENT_SENT]
    assert [s.detail for s in sent] == [f"cartFailure: {before} → {target}",
                                        f"cartFailure: {target} → {before}"]


def test_a_change_already_made_sends_nothing_and_records_nothing(real_lab, lab_on):
    """Running 01 again with the flag already on: no "on → on" event, no step, and the switch says so."""
    before = real_lab.served("cartFailure").variant
    target = lab_on if before != lab_on else "off"
    switch = widgets.FlagSwitch(real_lab, "cartFailure")
    assert switch.apply(target) is not None, switch.status.value
    steps = len(real_lab.timeline.steps)
    events = len(real_lab.change_events("cart", since="now-10m"))

    again = real_lab.inform_dynatrace(target, "cartFailure")
    assert repr(again) == f"cartFailure is already {target}, nothing sent" and "nothing sent" in again._repr_html_()
    served = switch.apply(target)
    assert served.variant == target and served.already
    assert switch.status.value.count(f"cartFailure is already {target}, nothing sent") == 1
    assert len(real_lab.timeline.steps) == steps
    assert len(real_lab.change_events("cart", since="now-10m")) == events


def test_announcing_twice_sends_one_event(real_lab, lab_on):
    before = real_lab.served("cartFailure").variant
    target = lab_on if before != lab_on else "off"
    first = real_lab.inform_dynatrace(target, "cartFailure")
    second = real_lab.inform_dynatrace(target, "cartFailure")
    assert first.ok and "already knows" in repr(second) and "nothing sent" in repr(second)
    assert [s.kind for s in real_lab.timeline.steps] == [labmod.EVENT_SENT]


def test_an_interrupt_mid_restart_rereads_the_truth_and_says_it_in_a_sentence(real_lab, lab_on, monkeypatch):
    """Ctrl-C while flagd restarts (the lab page's scale to 0): the switch re-reads what flagd
    serves once it answers again, and a cell's own call stops with one sentence."""
    before = real_lab.served("cartFailure").variant
    target = lab_on if before != lab_on else "off"
    restart = real_lab.cluster.restart_flagd

    def interrupted(*args, progress=None, **kwargs):
        def report(message, fraction=None):
            if "ready" in message:  # past the scale-down: pods are coming back
                raise KeyboardInterrupt
        return restart(*args, progress=report, **kwargs)

    monkeypatch.setattr(real_lab.cluster, "restart_flagd", interrupted)
    switch = widgets.FlagSwitch(real_lab, "cartFailure", restart="scale")
    with pytest.raises(labmod.LabError) as stopped:
        switch.apply(target)
    said = str(stopped.value)
    assert said.startswith(f"Interrupted while changing cartFailure to {target}: flagd serves cartFailure = ")
    assert "Traceback" not in switch.status.value and "Interrupted while changing" in switch.status.value
    truth = real_lab.served("cartFailure").variant
    assert switch.served_text == f"flagd serves: {truth}" and "unknown" not in switch.served_text
    assert not switch.running and not switch.apply_button.disabled
    monkeypatch.setattr(real_lab.cluster, "restart_flagd", restart)
    assert switch.apply(target).variant == target  # Apply again finishes it
