"""The before/after verdict: what the failure rate did around the last change of a flag."""
from __future__ import annotations

from datetime import timedelta

from labkit import timeline as labmod
from labkit.timeline import Timeline
from labkit.verdict import compare
from test_charts import T0, change_timeline, events_frame, failed_frame


def test_verdict_rose():
    failed = failed_frame([(m, 0 if m <= 11 else 5, 50) for m in range(1, 18)])
    verdict = compare(failed, change_timeline())
    assert verdict.rose
    assert verdict.text == "failure rate rose from 0.0% to 10.0% after cartFailure: off → on"
    assert verdict.before_requests == 250 and verdict.after_requests == 250
    assert str(verdict) == verdict.text and "rose" in verdict._repr_html_()


def test_verdict_stayed():
    failed = failed_frame([(m, 0, 40) for m in range(1, 18)])
    verdict = compare(failed, change_timeline())
    assert not verdict.rose
    assert verdict.text == "failure rate stayed at 0.0% after cartFailure: off → on"


def test_verdict_fell_after_rollback():
    tl = change_timeline()
    tl.add(labmod.FLAG_APPLIED, flag="cartFailure", old="on", new="off", at=T0 + timedelta(minutes=20))
    tl.add(labmod.FLAGD_SERVING, flag="cartFailure", new="off", note="False", at=T0 + timedelta(minutes=21))
    failed = failed_frame([(m, 4 if 11 < m <= 21 else 0, 40) for m in range(1, 28)])
    verdict = compare(failed, tl)
    assert not verdict.rose
    assert verdict.text == "failure rate fell from 10.0% to 0.0% after cartFailure: on → off"


def test_verdict_not_enough_traffic_after():
    failed = failed_frame([(m, 0, 40 if m <= 11 else 0) for m in range(1, 14)])
    verdict = compare(failed, change_timeline())
    assert verdict.text == "not enough traffic after the change yet: run generate_traffic()"
    assert not verdict.rose and verdict.after_requests == 0


def test_verdict_without_a_change():
    verdict = compare(failed_frame([(1, 0, 10)]), Timeline())
    assert "no change of cartFailure" in verdict.text and not verdict.rose


def test_verdict_from_change_events_when_timeline_is_empty():
    failed = failed_frame([(m, 0 if m <= 10 else 2, 20) for m in range(1, 16)])
    verdict = compare(failed, None, events=events_frame((10, "off", "on")))
    assert verdict.rose and verdict.text.endswith("after cartFailure: off → on")


def test_verdict_judges_the_asked_flag_not_a_later_change_of_another():
    tl = change_timeline()
    tl.add(labmod.FLAG_APPLIED, flag="adFailure", old="off", new="on", at=T0 + timedelta(minutes=14))
    failed = failed_frame([(m, 0 if m <= 11 else 5, 50) for m in range(1, 18)])
    verdict = compare(failed, tl, flag="cartFailure")
    assert verdict.change == "cartFailure: off → on" and verdict.rose


def test_imports_no_plotting():
    import subprocess
    import sys

    code = "import sys, labkit.verdict; print(sorted(m for m in sys.modules if m.startswith(('plotly', 'labkit.charts', 'labkit.lab'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_before_does_not_reach_back_into_an_earlier_state_of_the_flag():
    # on at 2, served off again at 6 (a rollback: 2..6 failed), on again at 12: "before" is 7..12 only
    tl = Timeline()
    tl.add(labmod.FLAGD_SERVING, flag="cartFailure", new="on", at=T0 + timedelta(minutes=2))
    tl.add(labmod.FLAGD_SERVING, flag="cartFailure", new="off", at=T0 + timedelta(minutes=6))
    tl.add(labmod.FLAG_APPLIED, flag="cartFailure", old="off", new="on", at=T0 + timedelta(minutes=12))
    tl.add(labmod.FLAGD_SERVING, flag="cartFailure", new="on", at=T0 + timedelta(minutes=12.5))
    failed = failed_frame([(m, 4 if 2 < m <= 6 or m > 13 else 0, 40) for m in range(1, 19)])
    verdict = compare(failed, tl)
    assert verdict.before_failed == 0 and verdict.before_requests == 200  # minutes 8..12
    assert verdict.rose and verdict.text.startswith("failure rate rose from 0.0% to 10.0%")
