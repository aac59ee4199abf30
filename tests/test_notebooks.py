"""Every notebook executed headless against the local lab, in workshop order, checked like a person would."""
from __future__ import annotations

import json

import pytest

from labkit.workbook import NOTEBOOKS, ORDER, run_notebook

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


@pytest.fixture(scope="module")
def executed(local_lab, tmp_path_factory):
    """Run the four notebooks once, in order, on a lab whose cartFailure starts at off."""
    import nbformat

    from labkit.cluster import Cluster
    from labkit.settings import Settings

    cluster = Cluster(Settings.load(environ=local_lab.env, dotenv=None))
    if cluster.flag_file().flag("cartFailure").default_variant != "off":
        cluster.set_default_variant("cartFailure", "off")
        cluster.restart_flagd(timeout=30)
    out = tmp_path_factory.mktemp("executed")
    env = {**local_lab.env, "LABKIT_STATIC_CHARTS": "1"}
    books = {}
    for name in ORDER:
        path = run_notebook(NOTEBOOKS / f"{name}.ipynb", out, env, timeout=300)
        books[name] = nbformat.read(path, as_version=4)
    return books


def test_setup_names_the_local_lab_and_the_flag(executed):
    book = executed["00-setup"]
    assert "local lab" in _find(book, "import labkit")
    checks = _find(book, "checks = lab.check()")
    assert "cartFailure" in checks and "NO" not in checks
    assert "off" in _find(book, 'lab.served("cartFailure")')


def test_introduce_change_event_flag_traffic_problem_chart(executed):
    book = executed["01-introduce-change"]
    assert "OK" in _find(book, "event = lab.inform_dynatrace")
    served = _find(book, 'served = switch.apply("on")')
    assert "'on'" in served or "variant='on'" in served, served
    traffic = _find(book, "traffic = lab.generate_traffic")
    assert "failed" in traffic and " 0 failed" not in traffic, traffic
    assert "Can't access cart storage" in _find(book, "logs = lab.wait_for_error_logs")
    assert "Redis connection errors" in _find(book, "problems = lab.wait_for_problem")
    chart = _find(book, "lab.chart()")
    assert "cartFailure: off → on" in chart, "the change marker is missing from the chart"
    assert "rose" in _find(book, "lab.verdict()")


def test_review_problem_shows_logs_trace_and_change(executed):
    book = executed["02-review-problem"]
    assert "Redis connection errors" in _find(book, 'problems = lab.problems("cart")')
    assert "Can't access cart storage" in _find(book, 'logs = lab.error_logs("cart")')
    trace = _find(book, "trace_id = ")
    assert "Can't access cart storage" in trace and "INFO" in trace, "the failed trace's logs, in order"
    assert "cartFailure" in _find(book, 'lab.change_events("cart")')


def test_roll_back_recovers(executed):
    book = executed["03-roll-back"]
    assert "off" in _find(book, "served = lab.roll_back")
    traffic = _find(book, "traffic = lab.generate_traffic")
    assert " 0 failed" in traffic, traffic
    assert "cartFailure: on → off" in _find(book, "lab.chart()")


def test_notebooks_have_no_errors(executed):
    for name, book in executed.items():
        for cell in book.cells:
            for out in cell.get("outputs", []):
                assert out.get("output_type") != "error", f"{name}: {_cell_text(cell)[:2000]}"
