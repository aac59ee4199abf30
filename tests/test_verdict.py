"""The before/after verdict: what the failure rate did around the last change of a flag.

Frames follow Dynatrace.failed_requests: a row per minute, stamped by the minute's START."""
from __future__ import annotations

from datetime import timedelta

import pandas as pd

from labkit import timeline as labmod
from labkit.timeline import Timeline
from labkit.verdict import Count, compare, count, pct, rise_text, running, windows
from test_charts import T0, change_timeline, events_frame, failed_frame


def logs_at(*seconds_after_t0):
    """Error logs (one per failed EmptyCart) at T0 + s seconds."""
    return pd.DataFrame({"timestamp": pd.to_datetime([T0 + timedelta(seconds=s) for s in seconds_after_t0],
                                                     utc=True)})


def test_a_rise_is_always_shown_the_same_way():
    assert rise_text(Count(0, 40), Count(5, 51), "EmptyCart calls") == (
        "0.0 % (0 of 40 before it) → 9.8 % (5 of 51 EmptyCart calls failed after the change)")


def test_verdict_rose_and_names_the_rate():
    failed = failed_frame([(m, 0 if m < 10 else 5, 50) for m in range(0, 17)])
    verdict = compare(failed, change_timeline())
    assert verdict.rose
    # each side names its window: the 5 min before the change, and since it up to the newest minute's end
    assert verdict.text == ("failure rate of all cart requests rose: 0.0 % (0 of 250 in 10:05:00–10:10:00 "
                            "UTC) → 10.0 % (35 of 350 cart requests failed since cartFailure: off → on at "
                            "10:10:00 UTC, to 10:17:00)")
    assert verdict.before_requests == 250 and verdict.after_requests == 350
    assert str(verdict) == verdict.text and "rose" in verdict._repr_html_()


def test_no_failures_on_either_side_is_said_with_the_numbers():
    failed = failed_frame([(m, 0, 40) for m in range(0, 17)])
    verdict = compare(failed, change_timeline())
    assert not verdict.rose
    assert verdict.text == ("no cart requests failed before or after cartFailure: off → on: "
                            "0.0 % (0 of 200 in 10:05:00–10:10:00 UTC) → 0.0 % (0 of 280 cart requests "
                            "failed since cartFailure: off → on at 10:10:00 UTC, to 10:17:00)")


def test_verdict_fell_after_rollback():
    tl = change_timeline()
    tl.add(labmod.FLAG_APPLIED, flag="cartFailure", old="on", new="off", at=T0 + timedelta(minutes=20))
    tl.add(labmod.FLAGD_SERVING, flag="cartFailure", new="off", note="False", at=T0 + timedelta(minutes=20.5))
    failed = failed_frame([(m, 4 if 10 <= m < 20 else 0, 40) for m in range(0, 27)])
    verdict = compare(failed, tl)
    assert not verdict.rose
    # each side by its own times: the 5 min before the rollback, since the rollback
    assert verdict.text.startswith("failure rate of all cart requests fell: 10.0 % (20 of 200 in "
                                   "10:15:00–10:20:00 UTC) → 0.0 % (0 of 280 cart requests failed since "
                                   "cartFailure: on → off at 10:20:00 UTC, to 10:27:00)")


def test_verdict_not_enough_traffic_after():
    failed = failed_frame([(m, 0, 40 if m < 10 else 0) for m in range(0, 13)])
    verdict = compare(failed, change_timeline())
    assert verdict.text.startswith("not enough traffic after cartFailure: off → on yet (0 cart requests")
    assert not verdict.rose and verdict.after_requests == 0


def test_verdict_without_a_change():
    verdict = compare(failed_frame([(1, 0, 10)]), Timeline())
    assert "no change of cartFailure" in verdict.text and not verdict.rose


def test_verdict_from_change_events_when_timeline_is_empty():
    failed = failed_frame([(m, 0 if m < 10 else 2, 20) for m in range(0, 15)])
    verdict = compare(failed, None, events=events_frame((10, "off", "on")))
    assert verdict.rose and verdict.text.endswith("since cartFailure: off → on at 10:10:00 UTC, to 10:15:00)")


def test_verdict_judges_the_asked_flag_not_a_later_change_of_another():
    tl = change_timeline()
    tl.add(labmod.FLAG_APPLIED, flag="adFailure", old="off", new="on", at=T0 + timedelta(minutes=14))
    failed = failed_frame([(m, 0 if m < 10 else 5, 50) for m in range(0, 17)])
    verdict = compare(failed, tl, flag="cartFailure")
    assert verdict.change == "cartFailure: off → on" and verdict.rose


def test_running_is_the_verdicts_after_window_as_it_grew_minute_by_minute():
    """The chart's rate line: [change, t) at each closed minute's end, the last point the verdict's
    own after count, so the line ends on the subtitle's number."""
    failed = failed_frame([(m, 0 if m < 10 else 5, 50) for m in range(0, 17)])
    tl = change_timeline(10.5, 11.0)
    verdict = compare(failed, tl)
    change = verdict.windows.change_at
    points = running(verdict.counted, change, None, now=T0.replace(tzinfo=None) + timedelta(minutes=17))
    assert [t for t, _ in points][:2] == [change.ceil("min"), change.ceil("min") + timedelta(minutes=1)]
    assert points[0][1] == count(failed, change, change.ceil("min"))  # the half minute of the change
    assert points[-1][1] == Count(verdict.after_failed, verdict.after_requests)
    assert pct(points[-1][1].rate) in verdict.text
    assert [c.total for _, c in points] == sorted(c.total for _, c in points)  # it only grows
    assert running(failed, change, change) == []  # an empty window draws nothing


def test_imports_no_plotting():
    import subprocess
    import sys

    code = "import sys, labkit.verdict; print(sorted(m for m in sys.modules if m.startswith(('plotly', 'labkit.charts', 'labkit.lab'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_before_does_not_reach_back_into_an_earlier_state_of_the_flag():
    # on at 2, served off again at 6 (a rollback: minutes 2..5 failed), on again at 9
    tl = Timeline()
    tl.add(labmod.FLAGD_SERVING, flag="cartFailure", new="on", at=T0 + timedelta(minutes=2))
    tl.add(labmod.FLAGD_SERVING, flag="cartFailure", new="off", at=T0 + timedelta(minutes=6))
    tl.add(labmod.FLAG_APPLIED, flag="cartFailure", old="off", new="on", at=T0 + timedelta(minutes=9))
    tl.add(labmod.FLAGD_SERVING, flag="cartFailure", new="on", at=T0 + timedelta(minutes=9.5))
    failed = failed_frame([(m, 4 if 2 <= m < 6 or m >= 9 else 0, 40) for m in range(0, 18)])
    verdict = compare(failed, tl)
    assert verdict.before_failed == 0 and verdict.before_requests == 120  # minutes 6..8, not 4..8
    assert verdict.rose and "rose: 0.0 % (0 of 120 in 10:06:00–10:09:00 UTC) → 10.0 %" in verdict.text


# --- the reported bug: failures in the minute of the change vanished -----------------------------
def burst_in_the_minute_of_the_change(next_minute_requests: int):
    """Change at 10:10:40 (served 10:10:45); 10:10 had 4 calm requests before it and 6 after,
    5 of which failed at 10:10:50..54; the next minute 10:11 has `next_minute_requests` calm ones."""
    tl = change_timeline(applied_min=10 + 40 / 60, serving_min=10.75)
    rows = [(m, 0, 10) for m in range(6, 10)] + [(10, 5, 10)]
    rows += [(11, 0, next_minute_requests)] if next_minute_requests else []
    logs = logs_at(*(600 + s for s in (50, 51, 52, 53, 54)))
    return failed_frame(rows), tl, logs


def test_failures_in_the_minute_of_the_change_count_after_it_also_once_the_next_minute_has_traffic():
    for next_minute in (0, 5, 30):
        failed, tl, logs = burst_in_the_minute_of_the_change(next_minute)
        verdict = compare(failed, tl, logs=logs)
        # the 5 failures happened after the change: never "stayed", never lost to the next minute
        assert verdict.after_failed == 5 and verdict.before_failed == 0, next_minute
        assert verdict.rose and "stayed" not in verdict.text and "no traffic" not in verdict.text
        # 10:10's 5 other requests split by time: 40 s before (3), 20 s after (2)
        assert verdict.after_requests == 5 + 2 + next_minute
        assert verdict.before_requests == 40 + 3  # the window starts 10:05:40: 10:06..10:09 whole
        assert "the minute 10:10 is split at the change (40 s before, 20 s after)" in verdict.how


def test_without_logs_the_minute_of_the_change_is_split_by_time():
    failed, tl, _ = burst_in_the_minute_of_the_change(5)
    verdict = compare(failed, tl)
    assert verdict.after_failed == 2 and verdict.before_failed == 3  # 5 x 20/60 s, 5 x 40/60 s
    assert verdict.after_requests == 3 + 5 and verdict.before_requests == 40 + 7


def test_per_call_records_are_counted_by_their_own_times():
    # spans of EmptyCart: exact times, no minute to split
    calls = pd.DataFrame({"timestamp": pd.to_datetime(
        [T0 + timedelta(seconds=s) for s in (580, 590, 630, 645, 650, 651, 652, 700)], utc=True),
        "failed": [False, False, False, False, True, True, True, False]})
    tl = change_timeline(applied_min=10 + 40 / 60, serving_min=10.75)
    verdict = compare(calls, tl, unit="EmptyCart calls", min_requests=1)
    assert (verdict.before_failed, verdict.before_requests) == (0, 3)
    assert (verdict.after_failed, verdict.after_requests) == (3, 5)
    # calls: "to" is the newest call counted
    assert verdict.text == ("failure rate of EmptyCart calls rose: 0.0 % (0 of 3 in 10:05:40–10:10:40 UTC) → "
                            "60.0 % (3 of 5 EmptyCart calls failed since cartFailure: off → on at 10:10:40 "
                            "UTC, to 10:11:40)")


def test_no_traffic_before_is_said_only_when_there_was_none():
    failed = failed_frame([(m, 0 if m < 10 else 2, 0 if m < 10 else 20) for m in range(0, 15)])
    verdict = compare(failed, change_timeline())
    assert verdict.text.startswith("failure rate of all cart requests is 10.0 % (10 of 100 cart requests "
                                   "failed since cartFailure: off → on at 10:10:00 UTC, to 10:15:00); no cart "
                                   "requests in the 5 min")
    failed = failed_frame([(m, 0 if m < 10 else 2, 1 if m == 7 else 0 if m < 10 else 20) for m in range(0, 15)])
    assert "no cart requests in" not in compare(failed, change_timeline()).text


def test_windows_and_count_are_the_one_definition():
    w = windows(change_timeline(applied_min=10.5, serving_min=11))
    assert w.before == (pd.Timestamp(T0).tz_localize(None) + timedelta(minutes=5.5),
                        pd.Timestamp(T0).tz_localize(None) + timedelta(minutes=10.5))
    assert w.after[1] is None  # up to the newest data
    failed = failed_frame([(m, 1, 10) for m in range(0, 15)])
    assert count(failed, *w.after) == Count(5, 45)  # 10:10 half (0.5 + 4.5) + 4 whole minutes


# --- every view agrees, over the local tenant's real API ---------------------------------------
def test_verdict_chart_failures_and_error_logs_agree_after_a_burst(tenant_sandbox, tmp_path, monkeypatch,
                                                                    capsys):
    """A change at hh:mm:40, a burst of 5 failing EmptyCart calls 10 s later, then calm traffic in
    the next minute: the verdict, the chart's subtitle, `labkit failures`, `labkit logs` and the
    error logs all count the same 5 failures after the change."""
    from labkit import charts, cli, verdict
    from labkit.dynatrace import Dynatrace
    from labkit.settings import Settings, TIMELINE_FILE

    box = tenant_sandbox()
    tel = box.telemetry
    now = pd.Timestamp.now(tz="UTC")
    base = now.floor("min") - timedelta(minutes=3)
    at = lambda seconds: int((base + timedelta(seconds=seconds)).timestamp() * 1000)  # noqa: E731
    tl = Timeline(tmp_path / TIMELINE_FILE)
    tl.add(labmod.EVENT_SENT, flag="cartFailure", old="off", new="on", at=base + timedelta(seconds=39))
    tl.add(labmod.FLAG_APPLIED, flag="cartFailure", old="off", new="on", at=base + timedelta(seconds=40))
    tl.add(labmod.FLAGD_SERVING, flag="cartFailure", new="on", at=base + timedelta(seconds=45))
    for s in range(-60, 40, 10):  # calm EmptyCart calls before the change
        _served(tel, "EmptyCart", False, at(s))
    clock = tel.clock
    for s in (50, 51, 52, 53, 54):  # the burst: failed EmptyCart spans and their redis error logs
        tel.clock = lambda s=s: at(s)
        rec = _served(tel, "EmptyCart", True, at(s))
        box.collector.log_cart_redis_error(rec.trace_id, rec.span_id, "pod-1")
    tel.clock = clock
    _served(tel, "EmptyCart", False, at(55))
    for s in range(65, 70):  # the next minute: calm traffic
        _served(tel, "GetCart", False, at(s))

    monkeypatch.chdir(tmp_path)
    env = {"DT_URL": box.tenant_server.url, "DT_API_TOKEN": box.api_token,
           "DT_PLATFORM_TOKEN": box.platform_token, "LABKIT_LOCAL_LAB": "1",
           "LABKIT_STATE_DIR": str(tmp_path)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    with Dynatrace(Settings.load(dotenv=None)) as dt:
        frame = dt.failed_requests("cart", since=(base - timedelta(minutes=6)).to_pydatetime())
        logs = dt.error_logs("cart", since=(base - timedelta(minutes=6)).to_pydatetime())
        judged = verdict.judge(dt, tl, frame)  # what lab.verdict(), lab.chart() and the CLI call
        fig = charts.failures_figure(frame, timeline=tl, judged=judged)  # as lab.chart() draws it

    minute = frame[frame["timestamp"] == base]
    assert int(minute["failed"].iloc[0]) == 5  # the burst shows in the minute it happened
    assert judged.after_failed == 5 and judged.before_failed == 0 and judged.rose
    assert int((logs["timestamp"] >= base + timedelta(seconds=40)).sum()) == 5
    assert int(frame.loc[frame["timestamp"] >= base, "failed"].sum()) == 5
    assert fig.layout.title.subtitle.text.replace("<br>", " ") == judged.text
    bars = dict(zip(fig.data[0].x, fig.data[0].y))  # the chart's bar over the minute of the burst
    assert bars[(base + timedelta(seconds=30)).tz_localize(None).to_pydatetime()] == 5
    assert judged.unit == "EmptyCart calls"  # the local tenant has spans: each call at its own time
    assert (f"(5 of {judged.after_requests} {judged.unit} failed since cartFailure: off → on at "
            f"{base + timedelta(seconds=40):%H:%M:%S} UTC, to {base + timedelta(seconds=55):%H:%M:%S})") in judged.text

    assert cli.main(["failures", "cart", "--since", "10m"]) == 0
    printed = capsys.readouterr().out
    assert f"verdict: {judged.text}" in printed
    row = next(line for line in printed.splitlines() if line.startswith(f"{base:%Y-%m-%d %H:%M}"))
    assert row.split()[3] == "5"  # MINUTE (2 words), REQUESTS, FAILED
    assert cli.main(["failures", "cart", "--since", "10m", "--limit", "3"]) == 0
    printed = capsys.readouterr().out
    assert "3 of 11 minutes (the newest), --limit to see more" in printed  # 10 whole + the running one
    assert cli.main(["logs", "cart", "--since", "10m", "--limit", "3"]) == 0
    printed = capsys.readouterr().out
    assert "3 of 5 error logs in the last 10m (the newest), --limit to see more" in printed
    assert "5 of them since cartFailure: off → on at" in printed


# --- the terminal's progress line ---------------------------------------------------------------
class _Term:
    def __init__(self, tty):
        self.text, self._tty = "", tty

    def isatty(self):
        return self._tty

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_progress_is_one_line_on_a_terminal_and_a_few_plain_lines_elsewhere():
    from labkit.progress import printer, settle

    tty, pipe = _Term(True), _Term(False)
    for stream in (tty, pipe):
        with printer(stream=stream) as progress:
            for i in range(120):  # what a one-minute shop reports
                progress(f"{i} sessions, {i * 3} operations, 0 failed", i / 120)
    assert "\n" not in tty.text and tty.text.endswith("\r\x1b[K")  # rewritten in place, cleared
    assert tty.text.count("\r") == 121
    assert 5 <= pipe.text.count("\n") <= 13 and "\r" not in pipe.text
    # a line still being rewritten is ended before anything else is printed
    tty2 = _Term(True)
    printer(stream=tty2)("waiting for flagd", 0.5)
    settle()
    assert tty2.text.endswith("waiting for flagd\x1b[K\n")


def test_the_verdict_uses_the_calls_own_times_where_the_tenant_has_spans():
    """Grail's spans of EmptyCart (start_time in ns, as Grail gives it) are counted call by call."""
    from labkit.dynatrace._frames import call_frame
    from labkit.errors import Forbidden
    from labkit.verdict import judge

    ns = lambda s: int((pd.Timestamp(T0) + timedelta(seconds=s)).value)  # noqa: E731
    spans = [{"start_time": ns(s), "request.is_failed": f}
             for s, f in ((590, False), (630, False), (650, True), (651, True), (652, False))]
    spans.append({"start_time": (pd.Timestamp(T0) + timedelta(seconds=655)).isoformat(), "request.is_failed": True})

    class Tenant:  # the two reads judge() makes, answering as a tenant with and without spans
        def __init__(self, calls):
            self._calls, self.asked = calls, []

        def calls(self, service, operation, since):
            self.asked.append((service, operation, since))
            if self._calls is None:
                raise Forbidden("no storage:spans:read")
            return self._calls

        def error_logs(self, service, since, limit):
            return logs_at(650, 651, 655)

    tl = change_timeline(applied_min=10 + 40 / 60, serving_min=10.75)
    with_spans = Tenant(call_frame(spans))
    verdict = judge(with_spans, tl, failed_frame([(10, 3, 6)]))
    assert verdict.unit == "EmptyCart calls" and (verdict.after_failed, verdict.after_requests) == (3, 4)
    assert "failure rate of EmptyCart calls rose: 0.0 % (0 of 2 in 10:05:40–10:10:40 UTC) → 75.0 % (3 of 4 EmptyCart calls" in verdict.text
    assert with_spans.asked[0][:2] == ("cart", "EmptyCart")
    without = judge(Tenant(None), tl, failed_frame([(10, 3, 6)]))
    assert without.unit == "cart requests" and without.after_failed == 3  # placed by the logs


def _served(tel, method: str, failed: bool, ms: int):
    """One cart server span (a request) as the local lab's shop writes it."""
    from labkit.sandbox.dynatrace.telemetry import Span

    span = Span(ms * 1_000_000, ms * 1_000_000 + 5_000_000, "cart", f"oteldemo.CartService/{method}",
                "server", tel.new_trace()[0], tel.new_span_id(), failed=failed,
                status="error" if failed else "unset", attributes={"rpc.method": method})
    tel.add_spans([span])
    return span


def test_a_verdict_after_a_reset_says_the_lab_was_reset():
    """After 99-facilitator's reset the run has no change: the verdict says why, not "apply one"."""
    from labkit.timeline import LAB_RESET

    tl = Timeline()
    tl.add(LAB_RESET, note="every flag at demo 3.0.0's defaults (cartFailure = off)")
    verdict = compare(failed_frame([(1, 0, 10)]), tl)
    assert verdict.text.startswith("the lab was reset at ") and "cartFailure = off" in verdict.text
    assert "apply one" not in verdict.text and not verdict.rose
