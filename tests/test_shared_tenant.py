"""Seats on one tenant: two local labs (seat-1, seat-2) send to ONE local Dynatrace tenant; seat-1's
change and failures are seat-1's only: seat-2's failures, verdict, problems, events and logs stay clean."""
from __future__ import annotations

import pytest

from labkit import releases
from labkit.dynatrace import Dynatrace, Scope
from labkit.errors import BadInput
from labkit.lab import Lab
from labkit.sandbox import LocalLab, Timings, start_shared_tenant
from labkit.sandbox.dynatrace import service_id
from labkit.settings import Settings

FLAG = "cartFailure"


def _settings(env: dict, **overrides) -> Settings:
    return Settings.load(environ={**env, **overrides}, dotenv=None)


def _on_variant(lab: Lab) -> str:
    """The flag's `on` as this lab's flag file has it: an always-failing variant where the file
    has one (a rate release's 100%), else the release's lab `on`, else the boolean `on`."""
    variants = lab.variants(FLAG)
    for choice in ("100%", releases.get().lab_on_variant, "on"):
        if choice in variants:
            return choice
    raise AssertionError(f"no on-variant among {variants}")


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    timings = Timings.fast()
    timings.shopper_rate = 0  # only the attendees' own traffic reaches the tenant
    shared = start_shared_tenant(tmp_path_factory.mktemp("room"), ["seat-1", "seat-2"], timings)
    labs = {name: Lab(_settings(shared.env(name))) for name in ("seat-1", "seat-2")}
    yield shared, labs
    for lab in labs.values():
        lab.close()
    shared.stop()


@pytest.fixture(scope="module")
def seat1_changed(room):
    """seat-1 flips cartFailure on and empties carts until some fail; seat-2 only shops."""
    shared, labs = room
    one, two = labs["seat-1"], labs["seat-2"]
    one.change_flag(_on_variant(one))
    result = one.generate_traffic(seconds=20, rate=0, until_failures=6)
    calm = two.generate_traffic(seconds=1, rate=20)
    assert result.failure_count >= 6 and calm.failure_count == 0 and calm.sessions > 0
    return one, two


def test_each_seat_has_its_own_identity_and_tokens_on_one_tenant(room):
    shared, labs = room
    one, two = shared.seats["seat-1"], shared.seats["seat-2"]
    assert one.env["DT_URL"] == two.env["DT_URL"] == shared.url
    assert (one.env["LABKIT_CLUSTER_NAME"], two.env["LABKIT_CLUSTER_NAME"]) == ("seat-1", "seat-2")
    assert one.env["DT_API_TOKEN"] != two.env["DT_API_TOKEN"]
    assert one.env["KUBECONFIG"] != two.env["KUBECONFIG"]
    assert "seat-2" in labs["seat-2"].where()
    # Service Detection v2 splits services by cluster: one `cart` entity per seat, same name
    carts = {e.entity_id: e.cluster for e in shared.telemetry.entity_list() if e.name == "cart"}
    assert sorted(carts.values()) == ["seat-1", "seat-2"]
    assert labs["seat-1"].dynatrace.find_service("cart").id != labs["seat-2"].dynatrace.find_service("cart").id
    check = labs["seat-2"].check()
    assert check.ok, check
    (seat,) = [c for c in check if "k8s.cluster.name" in c.item]
    assert "seat-2" in seat.item and service_id("cart", "seat-2") in seat.detail


def test_the_change_event_is_the_seats_own(seat1_changed, room):
    shared, _ = room
    one, two = seat1_changed
    mine = one.change_events()
    assert len(mine) == 1 and mine.iloc[0]["run_id"] == one.timeline.run_id
    assert len(two.change_events()) == 0
    # one entity recorded it (seat-1's cart), though the tenant has two services named cart
    (event,) = [e for e in shared.telemetry.events() if e.event_type == "CUSTOM_CONFIGURATION"]
    assert event.entity.cluster == "seat-1" and event.properties["k8s.cluster.name"] == "seat-1"
    assert not [r for r in two.dynatrace.dql("fetch events") if r.get("labkit.run_id") == one.timeline.run_id]


def test_failures_verdict_and_logs_are_the_seats_own(seat1_changed):
    one, two = seat1_changed
    assert one.failed_requests()["failed"].sum() >= 6
    assert one.verdict().rose
    assert two.failed_requests()["failed"].sum() == 0 and two.failed_requests()["requests"].sum() > 0
    assert not two.verdict().rose
    assert len(one.error_logs()) >= 6 and len(two.error_logs()) == 0
    assert {r["k8s.cluster.name"] for r in two.dynatrace.dql("fetch logs | limit 500")} == {"seat-2"}


def test_a_problem_opens_for_the_failing_seat_only(seat1_changed, room):
    shared, _ = room
    one, two = seat1_changed
    found = one.wait_for_problem(timeout=20)  # (fast timings close it after 3 quiet seconds)
    assert len(found) == 1 and "Redis" in found.iloc[0]["title"]
    assert len(two.problems()) == 0 and len(two.dynatrace.problems()) == 0
    assert two.dynatrace.dql("fetch dt.davis.problems") == []
    # the tenant itself has that one problem, on seat-1's cart
    (problem,) = shared.telemetry.problems()
    assert problem.entity.cluster == "seat-1" and problem.entity.type == "CLOUD_APPLICATION_INSTANCE"
    assert found.iloc[0]["pod"] == problem.entity.name and found.iloc[0]["title"] == problem.title


def test_the_whole_tenant_unscoped_sees_both_seats(seat1_changed, room):
    """Without a cluster name (a tenant-wide view) the same tenant shows seat-1's failures among two
    carts: the seats' data really is on one tenant, kept apart only by the scope."""
    shared, _ = room
    env = dict(shared.env("seat-2"))
    env.pop("LABKIT_CLUSTER_NAME")
    with Dynatrace(_settings(env)) as dt:
        assert len(dt.entities.named("cart")) == 2
        assert dt.failed_requests("cart", since="now-30m")["failed"].sum() >= 6
        assert len(dt.problems()) == 1


def test_a_seat_without_grail_is_still_kept_to_itself(seat1_changed, room):
    """With the API token alone (no platform token, so no Grail to find the seat's own cart), the
    failed requests come by the metrics' k8s.cluster.name dimension and events and problems by their
    k8s.cluster.name; a change event can then only go to every cart, and says so."""
    shared, _ = room
    for name, failed in (("seat-1", lambda n: n >= 6), ("seat-2", lambda n: n == 0)):
        env = dict(shared.env(name))
        env.pop("DT_PLATFORM_TOKEN")
        with Dynatrace(_settings(env)) as dt:
            assert dt.scope and failed(dt.failed_requests("cart", since="now-30m")["failed"].sum())
            assert len(dt.problems("cart")) == (name == "seat-1")
            assert len(dt.change_events("cart")) == (name == "seat-1")
    env = dict(shared.env("seat-2"))
    env.pop("DT_PLATFORM_TOKEN")
    with Dynatrace(_settings(env)) as dt:
        seat = dt.access()[-1]
        event = dt.send_change_event("cart", FLAG, "off", old="off")
    assert not seat.ok and "DT_PLATFORM_TOKEN" in seat.detail and "every 'cart'" in seat.detail
    assert event.report_count == 2 and any("every seat's" in w for w in event.warnings)


def test_a_tenant_that_does_not_split_services_by_cluster(tmp_path):
    """On a tenant older than SaaS 1.317 every seat's cart is ONE entity: seat-2's failures and
    problems stay clean (the metrics' k8s.cluster.name, the problem's clusters), and seat-1's preflight
    and change event say that the event lands on everyone's cart and how to turn splitting on."""
    timings = Timings.fast()
    timings.shopper_rate = 0
    shared = start_shared_tenant(tmp_path, ["seat-1", "seat-2"], timings, split_by_cluster=False)
    labs = {name: Lab(_settings(shared.env(name))) for name in ("seat-1", "seat-2")}
    try:
        one, two = labs["seat-1"], labs["seat-2"]
        assert one.dynatrace.find_service("cart").id == two.dynatrace.find_service("cart").id
        (seat,) = [c for c in one.check() if "k8s.cluster.name" in c.item]
        assert not seat.ok and "Split services by k8s cluster and namespace" in seat.detail
        event = one.dynatrace.send_change_event("cart", FLAG, "on", old="off", run_id=one.timeline.run_id)
        assert any("does not split services" in w for w in event.warnings)
        one.cluster.set_default_variant(FLAG, _on_variant(one))
        one.restart_flagd()
        assert one.generate_traffic(seconds=20, rate=0, until_failures=6).failure_count >= 6
        two.generate_traffic(seconds=1, rate=20)
        assert one.failed_requests()["failed"].sum() >= 6
        assert two.failed_requests()["failed"].sum() == 0 and two.failed_requests()["requests"].sum() > 0
        assert len(one.wait_for_problem(timeout=20)) == 1 and len(two.problems()) == 0
        assert len(two.change_events()) == 0 and len(two.error_logs()) == 0
    finally:
        for lab in labs.values():
            lab.close()
        shared.stop()


def test_scope_puts_the_seat_into_every_kind_of_query():
    scope = Scope("seat-1")
    assert scope.dql("fetch logs | limit 5") == 'fetch logs | filter k8s.cluster.name == "seat-1" | limit 5'
    assert scope.dql('fetch spans, from: now()-1h | filter span.name == "a|b"') == (
        'fetch spans, from: now()-1h | filter k8s.cluster.name == "seat-1" | filter span.name == "a|b"')
    assert scope.dql("fetch dt.davis.problems") == 'fetch dt.davis.problems | filter in(k8s.cluster.name, "seat-1")'
    ts = "timeseries sum(dt.service.request.count), by: {dt.entity.service} | limit 1"
    assert scope.dql(ts) == ('timeseries sum(dt.service.request.count), by: {dt.entity.service}, '
                             'filter: {k8s.cluster.name == "seat-1"} | limit 1')
    once = scope.dql("fetch logs")
    assert scope.dql(once) == once and Scope().dql("fetch logs") == "fetch logs"
    with pytest.raises(BadInput):
        scope.dql("timeseries sum(x), filter: {a == 1}")
    assert scope.metric_filter() == ':filter(eq("k8s.cluster.name","seat-1"))'


def test_cluster_name_from_the_environment_and_the_local_labs_own(tmp_path, monkeypatch):
    assert _settings({}).cluster_name is None  # a lab of one's own: the whole tenant, as before
    assert _settings({"LABKIT_CLUSTER_NAME": "kind-obslab"}).cluster_name == "kind-obslab"
    with pytest.raises(BadInput) as err:
        _settings({"LABKIT_CLUSTER_NAME": 'x" or true'})
    assert "LABKIT_CLUSTER_NAME" in str(err.value)
    monkeypatch.delenv("LABKIT_CLUSTER_NAME", raising=False)
    with LocalLab(tmp_path / "a", Timings.fast()) as lab:
        assert "LABKIT_CLUSTER_NAME=labkit-local" in (tmp_path / "a" / "lab.env").read_text()
        assert {r["k8s.cluster.name"] for r in lab.telemetry.logs(0, 2**62)} == {"labkit-local"}
    with LocalLab(tmp_path / "b", Timings.fast(), cluster_name="seat-9") as lab:
        assert _settings(lab.env).cluster_name == "seat-9"


def test_a_removed_seat_stops_and_its_tokens_no_longer_work(tmp_path):
    import httpx

    timings = Timings.fast()
    timings.shopper_rate = 0
    shared = start_shared_tenant(tmp_path, ["seat-1", "seat-2"], timings)
    try:
        gone = dict(shared.env("seat-2"))
        shared.remove_seat("seat-2")
        assert sorted(shared.seats) == ["seat-1"] and not (tmp_path / "seat-2" / "lab.env").exists()
        lookup = httpx.post(f"{shared.url}/api/v2/apiTokens/lookup", json={"token": gone["DT_API_TOKEN"]},
                            headers={"Authorization": f"Api-Token {gone['DT_API_TOKEN']}"})
        assert lookup.status_code == 401
        with Dynatrace(_settings(shared.env("seat-1"))) as dt:  # the other seat carries on
            assert dt.find_service("cart") is not None
    finally:
        shared.stop()


def test_two_failing_seats_each_see_their_own_problem(tmp_path):
    """Both seats fail: two problems, one per seat's cart pod; neither seat's errors extend the
    other's (a pod is its cluster's entity, the problem carries its seat's k8s.cluster.name)."""
    from labkit.tenant import PROBLEM_TITLE

    shared = start_shared_tenant(tmp_path, ["seat-1", "seat-2"], Timings.fast())
    try:
        one, two = shared.seats["seat-1"].collector, shared.seats["seat-2"].collector
        for _ in range(2):
            one.log_cart_redis_error("a" * 32, "b" * 16, "pod")
        (first,) = shared.telemetry.problems()
        two.log_cart_redis_error("c" * 32, "d" * 16, "pod")
        problems = shared.telemetry.problems()
        assert len(problems) == 2 and first.error_count == 2
        assert [(p.title, p.entity.cluster, sorted(p.clusters)) for p in problems] == [
            (PROBLEM_TITLE, "seat-1", ["seat-1"]), (PROBLEM_TITLE, "seat-2", ["seat-2"])]
        assert problems[0].entity.entity_id != problems[1].entity.entity_id
        assert problems[0].display_id != problems[1].display_id
        # seeded once: one pipeline, one routing object, one runbook for the whole room
        assert len(shared.tenant.settings.items()) == 2 and len(shared.tenant.documents.list()) == 1
        with Dynatrace(_settings(shared.env("seat-2"))) as dt:
            seen = dt.problems("cart")
        assert list(seen["pod"]) == [problems[1].entity.name]
    finally:
        shared.stop()


def test_seats_run_from_the_command_line_and_stop_cleanly(tmp_path):
    """`python -m labkit.sandbox.shared --seats 2`: each seat's lab.env works for the CLI, scoped to
    that seat; Ctrl-C stops every seat and leaves no lab.env behind."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "LABKIT_POD_START": "0.3", "LABKIT_POD_TERMINATE": "0.3"}
    env.pop("LABKIT_CLUSTER_NAME", None)
    proc = subprocess.Popen([sys.executable, "-m", "labkit.sandbox.shared", "--seats", "2",
                             "--state-dir", str(tmp_path)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "seats.json").exists() or len(
                json.loads((tmp_path / "seats.json").read_text())["seats"]) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.2)
        from labkit.settings import read_dotenv

        seat2 = read_dotenv(tmp_path / "seat-2" / "lab.env")
        assert seat2["LABKIT_CLUSTER_NAME"] == "seat-2"
        out = subprocess.run([sys.executable, "-m", "labkit", "failures"], env={**env, **seat2},
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert service_id("cart", "seat-2") in out.stdout  # the link to seat-2's own cart
        assert service_id("cart", "seat-1") not in out.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0
    assert not (tmp_path / "seat-1" / "lab.env").exists() and not (tmp_path / "seats.json").exists()


def test_a_seats_query_reads_only_its_own_cluster_and_answers_as_the_whole_filter(seat1_changed, room):
    """On a room's tenant each seat's poll must not turn every seat's spans into records (40 seats
    polling that is what stalled a room): `filter k8s.cluster.name == "x"` right after fetch reads
    only x's records, and gives exactly what the filter over all records gives."""
    from labkit.sandbox.dynatrace import grail
    from labkit.sandbox.dynatrace.dql import parse_dql

    shared, _ = room
    for source in ("spans", "logs"):
        pushed = parse_dql(f'fetch {source} | filter k8s.cluster.name == "seat-1"')
        assert pushed.stages[0].args["cluster"] == "seat-1"
        frame = (0, shared.telemetry.clock() + 1)
        rows, _ = grail._source_records(shared.tenant, pushed, frame, frame[1])
        assert rows and {r["k8s.cluster.name"] for r in rows} == {"seat-1"}
        everything = grail._fetch(shared.tenant, source, *frame, frame[1])
        assert {r["k8s.cluster.name"] for r in everything} == {"seat-1", "seat-2"}
        assert rows == [r for r in everything if r["k8s.cluster.name"] == "seat-1"]
    for other in ('k8s.cluster.name == "seat-1" or true', 'k8s.cluster.name != "seat-1"',
                  'in(k8s.cluster.name, "seat-1")'):
        assert parse_dql(f"fetch spans | filter {other}").stages[0].args["cluster"] is None
    assert "cluster" not in parse_dql('fetch spans | filterOut k8s.cluster.name == "seat-1"').stages[0].args
