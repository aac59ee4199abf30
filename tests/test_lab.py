"""labkit.connect(): which lab it finds, and that every notebook's kernel ends up on the same one."""
from __future__ import annotations

import pytest

import labkit
from labkit.errors import Unreachable
from labkit.sandbox import Timings
from labkit.tenant import PROBLEM_TITLE, RUNBOOK_NAME


@pytest.fixture
def nothing_configured(monkeypatch, tmp_path):
    for key in ("DT_URL", "DT_API_TOKEN", "DT_PLATFORM_TOKEN", "KUBECONFIG", "FRONTEND_URL",
                "LABKIT_LOCAL_LAB", "LABKIT_STATE_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here
    return tmp_path / "state"


def test_connect_starts_the_local_lab_once_and_others_attach(nothing_configured):
    first = labkit.connect(state_dir=nothing_configured, timings=Timings.fast())
    try:
        assert first.local and "local lab" in first.where()
        assert (nothing_configured / "lab.env").is_file()
        second = labkit.connect(state_dir=nothing_configured)  # another kernel, same laptop
        assert second.settings.dt_url == first.settings.dt_url
        assert second.served("cartFailure").variant == first.served("cartFailure").variant
        second.close()
    finally:
        first.close()
    assert not (nothing_configured / "lab.env").exists()  # stopped with the kernel that started it


def test_connect_without_starting_says_how(nothing_configured):
    with pytest.raises(Unreachable, match="python -m labkit sandbox"):
        labkit.connect(state_dir=nothing_configured, start_local=False)


def test_connect_uses_a_configured_lab(lab_env):
    lab = labkit.connect()
    try:
        assert lab.settings.dt_url == lab_env["DT_URL"] and lab._local_lab is None
    finally:
        lab.close()


def test_the_run_survives_a_new_kernel_and_a_reset_clears_it(lab_env, lab_on):
    first = labkit.connect()  # 01's kernel
    first.timeline.clear()
    try:
        first.make_change(lab_on)
        first.restart_flagd()
        first.prove_served(lab_on)
        second = labkit.connect()  # 02's kernel (or 01's after a restart)
        kinds = [s.kind for s in second.timeline.steps]
        assert kinds == ["flag applied", "flagd restarted", "flagd serving the new value"]
        assert second.timeline.run_id == first.timeline.run_id
        assert second.since() < first.timeline.steps[0].time
        served = second.roll_back()  # 03 knows what the flag was before 01 changed it
        assert served.variant == "off" and first.timeline.last("rolled back").new == "off"
        second.reset()
        assert [s.kind for s in first.timeline.steps] == ["lab reset"]  # the new run's first step
        assert first.timeline.run_id == second.timeline.run_id
        kept = (lab_env["LABKIT_STATE_DIR"] + "/timeline.jsonl")
        assert lab_env["DT_API_TOKEN"] not in open(kept).read()
    finally:
        if first.served("cartFailure").variant != "off":
            first.change_flag("off", send_event=False)
        first.close()


def test_trace_logs_explain_an_empty_result_instead_of_failing(lab_env):
    lab = labkit.connect()
    try:
        none = lab.trace_logs(service="no-such-service")
        assert len(none) == 0 and none.trace_id is None
        assert "no error logs of 'no-such-service'" in repr(none) and "01-introduce-change" in none.why
        assert "labkit-card" in none._repr_html_()
        unknown = lab.trace_logs("0" * 32)
        assert len(unknown) == 0 and "no logs of trace " + "0" * 32 in unknown.why
    finally:
        lab.close()


def test_the_twin_of_a_rollback_done_by_the_switch_records_nothing(lab_env, lab_on):
    """03: Apply with off on the switch rolls back (one "rolled back" step); roll_back() after it
    finds nothing to do and records no second rollback."""
    lab = labkit.connect()
    lab.timeline.clear()
    try:
        lab.change_flag(lab_on, send_event=False)
        lab.change_flag("off", send_event=False)  # the switch in 03
        rolled = [s for s in lab.timeline.steps if s.kind == "rolled back"]
        assert [s.new for s in rolled] == ["off"]
        steps = len(lab.timeline.steps)
        served = lab.roll_back()  # the unattended twin
        assert served.variant == "off" and "already off, nothing sent" in repr(served)
        assert len(lab.timeline.steps) == steps
    finally:
        lab.close()


def _until_no_open_problem(lab, timeout=60):
    import time

    deadline = time.monotonic() + timeout
    while len(lab.dynatrace.problems("cart", status="open")):
        assert time.monotonic() < deadline, "Davis left the cart's problem open with the flag off"
        time.sleep(0.5)


def test_every_cycle_gets_its_own_first_failure_error_logs_and_problem(lab_env, lab_on):
    lab = labkit.connect()
    lab.timeline.clear()
    try:
        for cycle in (1, 2):
            lab.change_flag(lab_on, send_event=False)
            lab.generate_traffic(seconds=30, rate=40, until_failures=6)
            lab.wait_for_error_logs(timeout=30)
            lab.wait_for_problem(timeout=60)
            lab.change_flag("off", send_event=False)
            _until_no_open_problem(lab)  # Davis closes it once the errors stop
        kinds = [s.kind for s in lab.timeline.steps]
        for kind in ("first failure seen by the shop", "error logs seen", "problem opened", "rolled back"):
            assert kinds.count(kind) == 2, (kind, kinds)
        changes = [s.time for s in lab.timeline.steps if s.kind == "flag applied" and s.new == lab_on]
        second = [s for s in lab.timeline.steps if s.kind == "first failure seen by the shop"][1]
        assert second.time >= changes[1]
    finally:
        if lab.served("cartFailure").variant != "off":
            lab.change_flag("off", send_event=False)
        lab.close()


def test_a_problem_dated_from_a_stray_error_before_the_change_is_still_this_cycles(lab_env, lab_on,
                                                                                 local_lab):
    """A quick on/off earlier left one error log; Davis groups it with this change's errors and dates
    the problem from it. The timeline still has this cycle's "problem opened", after the change."""
    lab = labkit.connect()
    lab.timeline.clear()
    try:
        _until_no_open_problem(lab)
        stray = local_lab.collector.log_cart_redis_error("1" * 32, "2" * 16, pod="cart-stray")
        lab.change_flag(lab_on, send_event=False)
        lab.generate_traffic(seconds=30, rate=40, until_failures=2)
        lab.wait_for_problem(timeout=60)
        step = lab.timeline.last("problem opened")
        assert step is not None and step.time >= lab.timeline.last("flag applied").time
        assert "an error log before this change" in step.note, step.note
        assert lab.dynatrace.problems("cart", status="open")["start"].min().timestamp() * 1000 \
            == pytest.approx(stray["_ms"], abs=1)
    finally:
        lab.change_flag("off", send_event=False)
        lab.close()


def test_the_problem_links_the_runbook_from_the_carts_support_info(lab_env, lab_on):
    """02 to the end of the review page: the cart pod's annotations (the lab's values), the problem's
    description with the runbook link, and the runbook page running its queries."""
    import re

    import httpx
    from kubernetes import client, config

    lab = labkit.connect()
    lab.timeline.clear()
    try:
        config.load_kube_config(config_file=lab_env["KUBECONFIG"])
        deployment = client.AppsV1Api().read_namespaced_deployment("cart", "default")
        notes = deployment.spec.template.metadata.annotations
        assert {k: notes[k] for k in ("ownedBy", "product", "costCentre", "deployment.release_stage")} == {
            "ownedBy": "teamA", "product": "otel-demo-app", "costCentre": "centre1",
            "deployment.release_stage": "production"}
        assert "[Ops runbook](" in notes["supportInfo"] and "PLACEHOLDER" not in notes["supportInfo"]

        lab.change_flag(lab_on, send_event=True)
        lab.generate_traffic(seconds=30, rate=40, until_failures=5)
        lab.wait_for_problem(timeout=60)
        page = lab.problems()._repr_html_()
        runbook = re.search(r'<a href="([^"]+/ui/document/[^"]+)"[^>]*>Ops runbook</a>', page)
        assert runbook, page
        problem_page = httpx.get(lab.problems().iloc[0]["link"], timeout=10).text
        assert "<h2>Description</h2>" in problem_page and f"<a href='{runbook.group(1)}'>Ops runbook</a>" in problem_page
        shown = httpx.get(runbook.group(1), timeout=10)  # the notebook the local tenant holds
        assert shown.status_code == 200 and "Contact List" in shown.text and RUNBOOK_NAME in shown.text
        assert "Cart Service Failure Rate" in shown.text and "Fetch logs" in shown.text
        assert "Wasn&#x27;t able to connect to redis" in shown.text  # its logs query, run now
        log = lab.error_logs().iloc[0]
        assert log["statuscode"] == "FailedPrecondition" and "Wasn't able to connect to redis" in log["content"]

        book = lab.runbook()
        assert book.link == runbook.group(1) and PROBLEM_TITLE in book.problem
        assert 'href="' + runbook.group(1) + '"' in book._repr_html_()
        assert sum(book.error_trend.data[0].y) >= 5
        drawn = book.changes_and_problems.layout.meta["labkit"]
        assert f"cartFailure = {lab_on}" in drawn["changes"] and drawn["problems"] == [PROBLEM_TITLE]
    finally:
        if lab.served("cartFailure").variant != "off":
            lab.change_flag("off", send_event=False)
        lab.close()


def test_the_failed_trace_is_a_waterfall_or_says_why(lab_env, lab_on):
    lab = labkit.connect()
    lab.timeline.clear()
    try:
        none = lab.failed_trace(service="no-such-service")
        assert none.trace_id is None and "01-introduce-change" in repr(none)
        assert "labkit-card" in none._repr_mimebundle_()["text/html"]
        lab.change_flag(lab_on, send_event=False)
        lab.generate_traffic(seconds=30, rate=40, until_failures=3)
        lab.wait_for_error_logs(timeout=30)
        logs = lab.trace_logs()
        assert "/ui/intent/dynatrace.distributedtracing/view-trace#" in logs.link
        assert 'href="' + logs.link.replace('"', "&quot;") + '"' in logs._repr_html_()
        import httpx

        opened = httpx.get(logs.link, timeout=10)
        assert opened.status_code == 200 and "Distributed traces app" in opened.text
        for n in range(100):  # the load generator's checkouts: EmptyCart fails inside PlaceOrder
            httpx.post(lab_env["FRONTEND_URL"] + "/api/checkout", json={"userId": f"buyer-{n}",
                                                                      "userCurrency": "USD"}, timeout=10)
        trace = lab.failed_trace()  # prefers a trace checkout took part in, as the review page shows
        drawn = trace.figure.layout.meta["labkit"]
        labels = drawn["labels"]
        order = labels.index("checkout · oteldemo.CheckoutService/PlaceOrder")
        empty = labels.index("cart · oteldemo.CartService/EmptyCart")
        assert order < empty and any(label.startswith("currency ·") for label in labels[order:empty])
        assert drawn["failed"][-1] == "cart · oteldemo.CartService/EmptyCart"
        assert "application/vnd.plotly.v1+json" in trace._repr_mimebundle_()
        assert "EmptyCart" in repr(trace) and "/view-trace#" in trace.link
    finally:
        if lab.served("cartFailure").variant != "off":
            lab.change_flag("off", send_event=False)
        lab.close()
