"""Every result a cell shows reads as a card (HTML) and as one sentence (text), never as a repr."""
from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime, timezone

import pandas as pd
import pytest

from labkit import cards
from labkit.cluster import RestartResult, Served
from labkit.dynatrace import ChangeEvent, Entity
from labkit.lab import Check, Preflight, Reset, TraceLogs
from labkit.shop import ShopResult
from labkit.timeline import EVENT_SENT, FLAGD_SERVING, Timeline
from labkit.verdict import Verdict

AT = datetime(2026, 11, 26, 14, 3, 7, tzinfo=timezone.utc)
BARE = re.compile(r"=datetime\.datetime\(|\b[A-Z]\w*\((?:\w+)=")


def _event(**changes):
    fields = dict(service="cart", flag="cartFailure", old="off", new="on", run_id="ab12", sent_at=AT,
                  report_count=1, statuses=["OK"])
    return ChangeEvent(**{**fields, **changes})


def _timeline():
    t = Timeline()
    t.add(EVENT_SENT, flag="cartFailure", old="off", new="on", at=AT)
    t.add(FLAGD_SERVING, flag="cartFailure", new="on", note="true", at=AT)
    return t


RESULTS = {
    "change event": _event(),
    "served": Served("cartFailure", True, "on", "STATIC"),
    "restart": RestartResult("scale", 1, 3.21, ["flagd-7c9-x1"]),
    "traffic": ShopResult(url="http://x", sessions=3, operations=9, seconds=1.5, failure_count=1,
                          by_operation={"empty": 3}, failures_by_operation={"empty": 1}),
    "verdict": Verdict(0.0, 0.1, 50, 60, "failure rate rose from 0.0% to 10.0% after cartFailure: off → on",
                       True, before_failed=0, after_failed=6),
    "preflight": Preflight([Check("lab", True, "local lab"), Check("token scopes", False, "missing x")]),
    "timeline": _timeline(),
    "reset": Reset(["cartFailure"]),
    "trace logs": TraceLogs(None, pd.DataFrame(columns=["timestamp", "loglevel", "content"]),
                            "no error logs of 'cart' in the last hour"),
    "entity": Entity("SERVICE-1", "cart", last_seen=AT),
}


@pytest.mark.parametrize("name", RESULTS)
def test_text_is_one_readable_line(name):
    text = repr(RESULTS[name])
    assert "\n" not in text and not BARE.search(text), text


@pytest.mark.parametrize("name", [n for n in RESULTS if hasattr(RESULTS[n], "_repr_html_")])
def test_html_is_a_card(name):
    page = RESULTS[name]._repr_html_()
    assert 'class="labkit-card' in page and not BARE.search(page), page
    assert "datetime" not in page and "<script" not in page


def test_cards_say_what_changed_where_it_landed_and_the_status():
    page = _event()._repr_html_()
    assert "cartFailure off → on" in page and "service cart (1 entity)" in page and "OK" in page
    assert "14:03:07 UTC" in page
    served = RESULTS["served"]._repr_html_()
    assert "flagd serves cartFailure = on" in served and "STATIC" in served and "true" in served
    assert repr(RESULTS["served"]) == "flagd serves cartFailure = on (true), reason STATIC"


def test_values_are_escaped():
    page = _event(flag="<img src=x onerror=alert(1)>", warnings=["a & b"])._repr_html_()
    assert "<img" not in page and "&lt;img" in page and "a &amp; b" in page


def test_link_rendered_only_when_there_is_an_http_one():
    assert "<a " not in _event()._repr_html_()
    event = _event()
    event.link = "https://abc.apps.dynatrace.com/ui/events?id=1&x=<2>"
    page = event._repr_html_()
    assert 'href="https://abc.apps.dynatrace.com/ui/events?id=1&amp;x=&lt;2&gt;"' in page
    event.link = "javascript:alert(1)"
    assert "<a " not in event._repr_html_()


def test_empty_trace_logs_say_why():
    page = RESULTS["trace logs"]._repr_html_()
    assert "No logs of a failed trace" in page and "no error logs of 'cart'" in page


def test_cards_import_no_pandas_or_plotly():
    code = "import sys, labkit.cards; print(sorted(m for m in ('pandas', 'plotly') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_when_reads_utc():
    assert cards.when(AT) == "14:03:07 UTC" and cards.when(None) == "-"
