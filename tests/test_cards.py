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
    "reset": Reset({"cartFailure": "off"}, "3.0.0"),
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


# --- the lab's tables: problems, change events, logs and flags as cards ---------------------------
REDIS = ("Can't access cart storage. System.ApplicationException: Wasn't able to connect to redis \n"
         "  at cart.cartstore.ValkeyCartStore.EmptyCartAsync(String userId) in "
         "/usr/src/app/src/cartstore/ValkeyCartStore.cs:line 177")


def test_problems_show_open_not_nat_and_a_clickable_link():
    from labkit import tables

    frame = pd.DataFrame({"display_id": ["P-01"], "title": ["[1][production][otel-demo-app][teamA] Critical Redis connection error!"], "status": ["OPEN"],
                          "severity": ["ERROR"], "start": pd.to_datetime([AT], utc=True),
                          "end": pd.to_datetime([None], utc=True), "affected": ["cart"], "root_cause": ["cart"],
                          "link": ["https://abc.apps.dynatrace.com/ui/apps/dynatrace.davis.problems/problem/-1_2V2"],
                          "problem_id": ["-1_2V2"]})
    page = tables.shown_as(tables.Problems, frame)._repr_html_()
    assert "NaT" not in page and ">open<" in page and "14:03:07 UTC" in page
    assert '<a href="https://abc.apps.dynatrace.com/ui/apps/dynatrace.davis.problems/problem/-1_2V2"' in page
    assert ">P-01</a>" in page and "[1][production][otel-demo-app][teamA] Critical Redis connection error!" in page
    with pd.option_context("display.width", 400, "display.max_columns", 20):
        text = repr(tables.shown_as(tables.Problems, frame))  # as text (a terminal, GitHub)
    assert "NaT" not in text and " open " in text and "P-01" in text


def test_change_events_link_each_change():
    from labkit import tables

    frame = pd.DataFrame({"timestamp": pd.to_datetime([AT], utc=True), "title": ["feature flag changed"],
                          "flag": ["cartFailure"], "old": [None], "new": ["on"], "run_id": ["ab12"],
                          "event_id": ["1_2"], "status": ["CLOSED"], "link": ["https://x.apps.dynatrace.com/ui/e"]})
    page = tables.shown_as(tables.ChangeEvents, frame)._repr_html_()
    assert '<a href="https://x.apps.dynatrace.com/ui/e"' in page and "cartFailure → on</a>" in page
    assert "None" not in page and "nan" not in page.lower().replace("nan-", "")


def test_a_log_shows_its_key_phrase_whole_and_its_status_code():
    from labkit import tables

    frame = pd.DataFrame({"timestamp": pd.to_datetime([AT], utc=True), "loglevel": ["ERROR"], "status": ["ERROR"],
                          "content": [REDIS], "trace_id": ["a" * 32], "span_id": ["b" * 16], "service": ["cart"],
                          "statuscode": ["FailedPrecondition"], "detail": [REDIS]})
    page = tables.shown_as(tables.Logs, frame.head())._repr_html_()
    assert "Wasn&#x27;t able to connect to redis" in page or "Wasn't able to connect to redis" in page
    assert "ValkeyCartStore.cs:line 177" in page and "[FailedPrecondition]" in page


def test_at_one_timestamp_the_cause_comes_first():
    from labkit.dynatrace._frames import log_frame
    from labkit.timeline import ERROR_LOGS, FIRST_FAILURE, FLAG_APPLIED, PROBLEM_OPENED

    same = "2026-11-26T14:03:07.000000000Z"
    rows = [{"timestamp": same, "loglevel": "ERROR", "content": REDIS, "span_id": "cart1"},
            {"timestamp": same, "loglevel": "INFO", "content": "EmptyCartAsync called", "span_id": "cart1"},
            {"timestamp": same, "loglevel": "INFO", "content": "order placed", "span_id": "checkout1"}]
    oldest_first = log_frame(rows, newest_first=False)
    assert list(oldest_first["content"]) == ["EmptyCartAsync called", REDIS, "order placed"]
    assert list(log_frame(rows, newest_first=True)["content"]) == ["order placed", REDIS, "EmptyCartAsync called"]
    assert str(oldest_first["timestamp"].dt.tz) == "UTC"
    t = Timeline()
    for kind in (PROBLEM_OPENED, ERROR_LOGS, FIRST_FAILURE, FLAG_APPLIED):  # added effect first
        t.add(kind, at=AT)
    assert [s.kind for s in t.in_order()] == [FLAG_APPLIED, FIRST_FAILURE, ERROR_LOGS, PROBLEM_OPENED]
    page = t._repr_html_()
    assert page.index("flag applied") < page.index("first failure") < page.index("problem opened")


def test_flags_show_as_a_card_with_each_default():
    from labkit import tables

    flags = tables.Flags([{"flag": "cartFailure", "variants": "on=True, off=False", "default": "off",
                           "description": "Fail cart service"}], columns=["flag", "variants", "default", "description"])
    page = flags._repr_html_()
    assert 'class="labkit-card labkit-card-flags"' in page and "cartFailure" in page and "on=True, off=False" in page
    assert isinstance(flags[flags["default"] == "off"], tables.Flags)  # a filtered table stays a card


def test_prose_shows_code_as_code_and_every_url_as_a_link():
    """A card never shows a literal backtick or a bare URL (00's service row, the preflight's `on`)."""
    checks = Preflight([Check("service 'cart'", True, "seen as SERVICE-1: https://t.example/ui/apps/"
                              "dynatrace.services/explorer?detailsId=SERVICE-1&sidebarOpen=false"),
                        Check("cartFailure types", True, "the lab page's `on` is `10%`")])
    page = checks._repr_html_()
    assert "`" not in page and "<code>on</code>" in page and "<code>10%</code>" in page
    assert re.search(r'<a href="https://t\.example/ui/apps/dynatrace\.services/explorer\?detailsId=SERVICE-1'
                     r'&amp;sidebarOpen=false"[^>]*>https://t\.example', page), page
    note = cards.card("x", "t", [("a", "see https://t.example/x.")], note="run `labkit check` <b>")
    assert 'href="https://t.example/x"' in note and "</a>." in note  # the full stop is not the URL's
    assert "<code>labkit check</code>" in note and "&lt;b&gt;" in note  # still escaped


def test_a_log_shows_the_fields_the_review_page_names_and_wraps_the_trace_id():
    row = {"timestamp": pd.Timestamp(AT), "loglevel": "ERROR", "service": "cart", "content": "boom",
           "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7",
           "dt.owner": "teamA", "dt.cost.product": None, "dt.cost.costcenter": "ops-42"}
    page = cards.error_logs(pd.DataFrame([row]))
    for shown in ("trace_id: 4bf92f3577b34da6a3ce929d0e0e4736", "span_id: 00f067aa0ba902b7",
                  "dt.owner: teamA", "dt.cost.costcenter: ops-42"):
        assert shown in page, shown
    assert "dt.cost.product" not in page  # the lab's collector maps none: only what is there
    assert "overflow-wrap:anywhere" in page  # a 32-hex trace id wraps inside the card


def test_the_reset_card_says_flagd_restarted_and_the_new_run():
    done = Reset({}, "3.0.0", "rollout, 2.1 s", "9f8e7d6c")
    assert "left running" not in repr(done) and "flagd restarted (rollout, 2.1 s)" in repr(done)
    page = done._repr_html_()
    assert "every flag was already there" in page and "rollout, 2.1 s" in page and "9f8e7d6c" in page


def test_the_on_variant_reads_as_a_sentence_and_passes_on_as_the_variant():
    from IPython.lib.pretty import pretty

    from labkit.answers import OnVariant

    on = OnVariant("10%", "3.0.0", "0.1")
    assert on == "10%" and f"{on!r}" == "'10%'"  # a str wherever a variant goes
    assert pretty(on) == "On demo 3.0.0 the lab page's `on` is the variant 10% (cartFailure = 0.1)."
    assert "<code>on</code>" in on._repr_html_() and "'10%'" not in on._repr_html_()
