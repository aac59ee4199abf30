"""The local tenant's pages behind labkit's links, as an attendee sees them: the flag a change event
names, Dynatrace's status words, and (in Debian's chromium, when there) every page fits 1400 px."""
from __future__ import annotations

import re
import uuid

import httpx
import pytest

import browser as ui
from labkit.dynatrace import Dynatrace
from labkit.settings import Settings
from labkit.sandbox.dynatrace.ui import MAX_COLUMNS, PROBLEM_PATH


@pytest.fixture
def change_and_problem(local_lab):
    """A change of cartFailure off → on, then redis errors that open a problem on cart."""
    dt = Dynatrace(Settings.load(environ=local_lab.env, dotenv=None))
    run_id = uuid.uuid4().hex[:12]
    event = dt.send_change_event("cart", "cartFailure", "on", old="off", run_id=run_id)
    tel = local_lab.telemetry
    for _ in range(2):  # the first routed record opens it; the second refreshes its event
        local_lab.collector.log_cart_redis_error(uuid.uuid4().hex, uuid.uuid4().hex[:16], "pod-test")
    tel.check_problems()
    problem = max((p for p in tel.problems() if p.entity.name.startswith("cart-")), key=lambda p: p.start)
    links = {"problem": f"{local_lab.tenant_server.url}{PROBLEM_PATH}{problem.problem_id}",
             "service": dt.find_service("cart").link, "events": event.link,
             "logs": dt.error_logs("cart", since="now-5m").attrs["link"]}
    yield problem, run_id, links
    dt.close()


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_pages_name_the_flag_and_use_dynatraces_status_words(local_lab, change_and_problem):
    problem, run_id, links = change_and_problem
    page = _text(httpx.get(links["problem"], timeout=10).text)
    assert f"status {'Active' if problem.open else 'Closed'}" in page
    # The change among the root-cause evidence: this test's own change, or, when an earlier test
    # left cart's problem open (its errors extend it), the change that came before that problem.
    evidence = local_lab.telemetry.change_evidence(problem)
    assert evidence
    for e in evidence:
        key, old, new = (e.properties.get(k) for k in ("feature_flag.key", "previousValue",
                                                         "defaultValue"))
        assert (f"{key}: {old} → {new}" if old else f"{key} → {new}") in page
    assert "OPEN" not in page and "CLOSED" not in page
    service = _text(httpx.get(links["service"], timeout=10).text)
    assert "cartFailure: off → on" in service and f"labkit.run_id={run_id}" in service

    events = httpx.post(local_lab.tenant_server.url + "/ui/local-lab/query", json={
        "query": 'fetch events | filter event.type == "CUSTOM_CONFIGURATION"'}, timeout=10).json()
    assert {"feature_flag.key", "defaultValue", "event.status"} <= set(events["columns"])
    assert len(events["columns"]) <= MAX_COLUMNS
    mine = [r for r in events["records"] if r.get("labkit.run_id") == run_id]
    assert [(r["feature_flag.key"], r["defaultValue"], r["event.status"]) for r in mine] == [
        ("cartFailure", "on", "ACTIVE")]  # Grail's words for an event still in its timeout


def test_every_page_fits_a_1400_px_window(local_lab, change_and_problem, tmp_path):
    why = ui.missing()
    if why:
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    _, _, links = change_and_problem
    ui.ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=ui.CHROMIUM, args=ui.CHROMIUM_ARGS,
                                     env={"XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
                                          "XDG_CACHE_HOME": str(tmp_path / "xdg-cache")})
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            for name, url in links.items():
                page.goto(url)
                if name in ("events", "logs"):  # their script runs the query the link carries
                    page.wait_for_selector("#t tr", timeout=10_000)
                page.screenshot(path=str(ui.ARTIFACTS / f"tenant-{name}.png"), full_page=True)
                width = page.evaluate("document.documentElement.scrollWidth")
                assert width <= 1400, f"the {name} page is {width} px wide"
            page.goto(links["events"])  # the change event's row names its flag
            page.wait_for_selector("td:text-is('cartFailure')", timeout=10_000)
        finally:
            browser.close()
