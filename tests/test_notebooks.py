"""Every notebook executed headless against the local lab, in workshop order, checked like a person would.

The kernels start in notebooks/ with no PYTHONPATH, as VS Code, a Codespace or a plain `jupyter lab`
start them: labkit is found because it is installed (the `kernel_env` fixture, tests/installed.py).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import nbformat
import pytest

from labkit.workbook import NOTEBOOKS, ORDER, run_notebook
from labkit.tenant import PROBLEM_TITLE

pytestmark = pytest.mark.notebooks


def _cell_text(cell) -> str:
    """Everything a person would see under a cell: text, HTML, and the chart's JSON."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        if out.get("output_type") == "error":
            parts.append("\n".join(out.get("traceback", [])))
        for mime, value in out.get("data", {}).items():
            parts.append(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
    return "\n".join(parts)


def _find(book, source_start: str) -> str:
    for cell in book.cells:
        if cell.cell_type == "code" and cell.source.startswith(source_start):
            return _cell_text(cell)
    raise AssertionError(f"no cell starts with {source_start!r}")


FACILITATOR = "99-facilitator"  # between groups, never in the attendee's ORDER


class _Run(dict):
    """The executed notebooks by name, and the run's timeline (step kinds) after each one."""

    def __init__(self):
        super().__init__()
        self.steps: dict[str, list[str]] = {}


@pytest.fixture(scope="module")
def executed(kernel_env, tmp_path_factory):
    """Run the four notebooks once, in order, on a local lab of their own (as a workshop group
    starts on a fresh one): no other test's traffic or steps are in its data. The facilitator's
    notebook runs after them, kept apart (it is not the attendee's)."""
    from labkit.sandbox import LocalLab, Timings
    from labkit.settings import TIMELINE_FILE
    from labkit.timeline import Timeline

    lab = LocalLab(tmp_path_factory.mktemp("workshop-lab"), Timings.fast()).start()
    out = tmp_path_factory.mktemp("executed")
    env = {**lab.env, **kernel_env, "LABKIT_STATIC_CHARTS": "1"}
    timeline = Path(lab.env["LABKIT_STATE_DIR"]) / TIMELINE_FILE
    books, facilitator = _Run(), {}
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("PYTHONPATH", raising=False)
        try:
            for name in [*ORDER, FACILITATOR]:
                path = run_notebook(NOTEBOOKS / f"{name}.ipynb", out, env, timeout=300)
                (facilitator if name == FACILITATOR else books)[name] = nbformat.read(path, as_version=4)
                books.steps[name] = [s.kind for s in Timeline(timeline).steps]
        finally:
            lab.stop()
    books.facilitator = facilitator[FACILITATOR]
    return books


def _on(book) -> str:
    """The lab page's `on` on this run's release, as 01's `on = lab.on_variant()` cell says it."""
    text = "".join(_outputs(book, "text/plain", "on = lab.on_variant()"))
    found = re.search(r"is the variant (\S+)", text)
    assert found and f"'{found.group(1)}'" not in text, f"not a sentence: {text!r}"
    return found.group(1)


def _outputs(book, mime: str, source_start: str | None = None) -> list[str]:
    """The `mime` parts of the outputs (of the cell starting with source_start, else of all cells)."""
    found = []
    for cell in book.cells:
        if cell.cell_type == "code" and (source_start is None or cell.source.startswith(source_start)):
            found += [o["data"][mime] for o in cell.get("outputs", []) if mime in o.get("data", {})]
    return found


@pytest.mark.parametrize("name", [*ORDER, FACILITATOR])
def test_committed_without_outputs_with_a_python3_kernel(name):
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert book.metadata["kernelspec"]["name"] == "python3", "a front end would ask which kernel"
    for cell in book.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{name}: {cell.source[:60]}"
        assert "print(" not in cell.source, f"{name}: a cell prints by hand: {cell.source[:60]}"


def test_setup_names_the_local_lab_and_the_flag(executed):
    book = executed["00-setup"]
    assert "local lab" in _find(book, "import labkit")
    checks = _find(book, "checks = lab.check()")
    assert "cartFailure" in checks and "NO" not in checks
    assert "off" in _find(book, 'lab.served("cartFailure")')


def test_introduce_change_event_flag_traffic_problem_chart(executed):
    book = executed["01-introduce-change"]
    assert "OK" in _find(book, "event = lab.inform_dynatrace")
    on = _on(book)  # the lab page's `on` on this release
    served = _find(book, "served = switch.apply(on)")
    assert f"flagd serves cartFailure = {on}" in served and "the cart reads cartFailure = " in served, served
    assert "the cart (demo " in _find(book, 'lab.layers("cartFailure")')
    traffic = _find(book, "traffic = lab.generate_traffic")
    assert "failed" in traffic and " 0 failed" not in traffic, traffic
    assert "Can't access cart storage" in _find(book, "logs = lab.wait_for_error_logs")
    assert PROBLEM_TITLE in _find(book, "problems = lab.wait_for_problem")
    problems = "".join(_outputs(book, "text/html", "problems = lab.wait_for_problem"))  # as complete as 02's
    assert re.search(r'<a href="[^"]+/ui/document/[^"]+"[^>]*>Ops runbook</a>', problems), problems[:2000]
    chart = _find(book, "lab.chart()")
    assert f"cartFailure: off → {on}" in chart, "the change marker is missing from the chart"
    assert "rose" in _find(book, "lab.verdict()")


def test_review_problem_shows_logs_trace_and_change(executed):
    book = executed["02-review-problem"]
    assert PROBLEM_TITLE in _find(book, 'problems = lab.problems("cart")')
    assert "Can't access cart storage" in _find(book, 'logs = lab.error_logs("cart")')
    trace = _find(book, "lab.trace_logs(")
    assert "Can't access cart storage" in trace and "INFO" in trace, "the failed trace's logs, in order"
    assert "cartFailure" in _find(book, 'lab.change_events("cart")')
    chart = _outputs(book, "application/vnd.plotly.v1+json", "lab.chart()")[0]
    # 02 runs in a kernel of its own: 01's steps reach its chart through the kept timeline
    assert chart["layout"]["meta"]["labkit"]["step_markers"] >= 3, "01's steps are not on 02's chart"


def test_review_problem_follows_the_page_to_its_end(executed):
    """Clickable problem and event links, the runbook link from the problem's description, the log's
    key phrase and status detail, the trace as a waterfall, the runbook's two charts, no NaT."""
    book = executed["02-review-problem"]
    problems = "".join(_outputs(book, "text/html", 'problems = lab.problems("cart")'))
    assert '<a href="' in problems and "/ui/apps/dynatrace.davis.problems/problem/" in problems
    assert re.search(r'<a href="[^"]+/ui/document/[^"]+"[^>]*>Ops runbook</a>', problems), problems[:2000]
    logs = "".join(_outputs(book, "text/html", 'logs = lab.error_logs("cart")'))
    assert "t able to connect to redis" in logs and "FailedPrecondition" in logs
    for field in ("trace_id: ", "span_id: ", "dt.owner: ", "dt.cost.costcenter: "):  # what the page names
        assert field in logs, field
    events = "".join(_outputs(book, "text/html", 'lab.change_events("cart")'))
    assert '<a href="' in events and "cartFailure" in events
    assert "Ops runbook" in "".join(_outputs(book, "text/html", 'runbook = lab.runbook("cart")'))
    trend = _outputs(book, "application/vnd.plotly.v1+json", "runbook.error_trend")[0]
    assert sum(y for y in trend["data"][0]["y"] if y) >= 1
    both = _outputs(book, "application/vnd.plotly.v1+json", "runbook.changes_and_problems")[0]
    assert both["layout"]["meta"]["labkit"]["problems"] == [PROBLEM_TITLE]
    waterfall = _outputs(book, "application/vnd.plotly.v1+json", "lab.failed_trace(")[0]
    assert waterfall["layout"]["meta"]["labkit"]["failed"][-1] == "cart · oteldemo.CartService/EmptyCart"
    for name, one in executed.items():
        for text in _outputs(one, "text/html"):
            assert "NaT" not in text, f"{name}: NaT shown: {text[:300]}"


def test_roll_back_recovers(executed):
    book = executed["03-roll-back"]
    assert "off" in _find(book, "served = lab.roll_back")
    traffic = _find(book, "traffic = lab.generate_traffic")
    assert " 0 failed" in traffic, traffic
    on = _on(executed["01-introduce-change"])
    assert f"cartFailure: {on} → off" in _find(book, "lab.chart()")


RATE = re.compile(r"(\d+\.\d %|-) \((\d+) of (\d+)([^)]*)\)")  # '16.1 % (5 of 31 ... since ... 09:50:07)'
CLOCK = re.compile(r"\d\d:\d\d:\d\d")


def _rate_texts(book) -> list[str]:
    """Every text with a rate an attendee reads: outputs, and the charts' subtitles and hovers."""
    texts = _outputs(book, "text/plain") + _outputs(book, "text/html")
    for fig in _outputs(book, "application/vnd.plotly.v1+json"):
        texts.append(str(fig["layout"].get("title", {}).get("subtitle", {}).get("text", "")))
        texts += [str(h) for trace in fig["data"] for h in (trace.get("hovertext") or [])]
    return texts


def test_every_rate_names_its_window(executed):
    """01-03: each "x % (n of m ...)" says by its times which window it counts (the verdict's before
    and since the change, the traffic card's own run), so five numbers read as answers to their
    own questions, not as five answers to one."""
    seen = 0
    for name in ("01-introduce-change", "02-review-problem", "03-roll-back"):
        for text in _rate_texts(executed[name]):
            for rate in RATE.finditer(text):
                seen += 1
                assert CLOCK.search(rate.group(4)), f"{name}: a rate without its window: {rate.group(0)}"
    assert seen >= 4  # the traffic card, the verdict's two sides, the chart's subtitle at least


def test_running_03_top_to_bottom_leaves_the_lab_unreset(executed):
    """An attendee running 03 cell by cell rolls back; only the facilitator's notebook resets."""
    after_03 = executed.steps["03-roll-back"]
    assert "rolled back" in after_03 and "lab reset" not in after_03, after_03
    assert after_03[:len(executed.steps["02-review-problem"])] == executed.steps["02-review-problem"]
    assert not any(".reset(" in c.source for c in executed["03-roll-back"].cells if c.cell_type == "code")
    verdict = _find(executed["03-roll-back"], "lab.verdict()")
    assert "was reset" not in verdict and "apply one" not in verdict, verdict


def test_the_facilitators_reset_says_what_it_did_and_the_verdict_after_it(executed):
    book = executed.facilitator
    assert executed.steps[FACILITATOR] == ["lab reset"]  # a new run, begun by the reset
    done = _find(book, "lab.reset()")
    assert "Lab reset" in done and "flagd restarted (rollout, " in done and "left running" not in done
    assert 'class="labkit-card labkit-card-reset' in done
    markdown = "".join(c.source for c in book.cells if c.cell_type == "markdown")
    assert "restarts flagd" in markdown  # what the card says, the markdown says
    verdict = _find(book, "lab.verdict()")
    assert "the lab was reset at " in verdict and "apply one" not in verdict, verdict
    assert "off" in _find(book, 'lab.served("cartFailure")')
    assert not [o for c in book.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]


def test_one_run_id_from_00_on(executed):
    """00 shows the run's id before any step; 01-03 (kernels of their own) show the same one."""
    shown = {name: re.findall(r"run</th><td>([0-9a-f]+)<", _find(book, "import labkit"))
             for name, book in executed.items()}
    assert len(shown["00-setup"]) == 1 and all(ids == shown["00-setup"] for ids in shown.values()), shown


def test_the_log_link_opened_later_still_starts_at_the_change(executed):
    """01's Logs-app link once read `from: now()-34s`: five minutes on it listed nothing."""
    from datetime import datetime, timedelta, timezone

    from labkit.sandbox.dynatrace.dql import parse_dql

    book = executed["01-introduce-change"]
    html = "".join(_outputs(book, "text/html", "logs = lab.wait_for_error_logs"))
    link = re.search(r'href="([^"]+/ui/apps/dynatrace\.logs/intent/view_query#[^"]+)"', html)
    assert link, html[:1000]
    dql = json.loads(unquote(link.group(1).replace("&amp;", "&").split("#", 1)[1]))["dt.query"]
    assert "now()" not in dql, dql
    later = int((datetime.now(timezone.utc) + timedelta(minutes=5)).timestamp() * 1000)
    start = datetime.fromtimestamp(parse_dql(dql).start(later) / 1000, timezone.utc)
    times = re.findall(r"(\d\d:\d\d:\d\d) UTC", html)  # the error logs' times in the card
    first = min(t for t in times)
    assert start.strftime("%H:%M:%S") <= first, (dql, times)


def test_notebooks_have_no_errors(executed):
    for name, book in executed.items():
        for cell in book.cells:
            for out in cell.get("outputs", []):
                assert out.get("output_type") != "error", f"{name}: {_cell_text(cell)[:2000]}"


BARE_REPR = re.compile(r"=datetime\.datetime\(|ChangeEvent\(|Served\(|\b[A-Z]\w*\((?:\w+)=")


def test_no_output_is_a_bare_repr(executed):
    """Terminals, logs, GitHub and nbconvert show text/plain: each result reads as a sentence."""
    for name, book in executed.items():
        for text in _outputs(book, "text/plain"):
            assert not BARE_REPR.search(text), f"{name}: a bare repr in an output: {text[:300]}"


@pytest.mark.parametrize("name, source_start", [
    ("01-introduce-change", "event = lab.inform_dynatrace"), ("01-introduce-change", "served = switch.apply"),
    ("01-introduce-change", "traffic = lab.generate_traffic"), ("01-introduce-change", "lab.verdict()"),
    ("01-introduce-change", "lab.timeline"), ("00-setup", "checks = lab.check()"),
    ("02-review-problem", "lab.trace_logs("), ("03-roll-back", "served = lab.roll_back")])
def test_results_show_as_cards(executed, name, source_start):
    html = "".join(_outputs(executed[name], "text/html", source_start))
    assert 'class="labkit-card' in html, f"{name}: {source_start}: no card in {html[:300]!r}"


def test_the_charts_as_executed_frame_the_change(executed):
    """01's and 03's charts as the attendee gets them: the window starts a few minutes before the
    change (not ten flat minutes), each bar sits in the middle of the minute it counts, and no
    failure rate is drawn before the change."""
    import pandas as pd

    for name in ("01-introduce-change", "03-roll-back"):
        fig = _outputs(executed[name], "application/vnd.plotly.v1+json", "lab.chart()")[0]
        change = min(pd.Timestamp(s["x0"]) for s in fig["layout"]["shapes"] if s.get("name") == "change")
        lo = pd.Timestamp(fig["layout"]["xaxis"]["range"][0])
        assert pd.Timedelta(minutes=1) <= change - lo <= pd.Timedelta(minutes=5), (name, lo, change)
        bars = [pd.Timestamp(x) for d in fig["data"] if d["type"] == "bar" for x in (d.get("x") or [])]
        assert bars and all(x.second == 30 and x.microsecond == 0 for x in bars), (name, bars[:5])
        rates = [pd.Timestamp(x) for d in fig["data"] if d["type"] == "scatter"
                 and str(d.get("name", "")).startswith("failure rate") for x in (d.get("x") or [])]
        assert rates and min(rates) >= change.floor("s"), (name, min(rates), change)
