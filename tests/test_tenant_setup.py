"""labkit checks, sets up and undoes the tenant's half of the lab (the runbook notebook, the pipeline
"Log Errors", the route "Critical Logs") on a bare local tenant, with the real clients over loopback:
`labkit check` and `labkit tenant setup` as a user runs them, the Lab's verbs, and the NO each
misconfiguration gives."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from labkit import tenant as lab_tenant
from labkit.cluster import Cluster
from labkit.dynatrace import Dynatrace
from labkit.errors import BadInput, Forbidden, LabError
from labkit.lab import Lab
from labkit.sandbox import LocalLab, Timings, make_token
from labkit.sandbox.dynatrace import READ_AND_INGEST_SCOPES
from labkit.sandbox.dynatrace.store import PIPELINES, ROUTING
from labkit.settings import CART_SELECTOR, Settings
from labkit.tenant import made, setup

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """A local lab whose tenant is bare: no pipeline, no route, no runbook (getting-started not done)."""
    lab = LocalLab(tmp_path_factory.mktemp("bare-lab"), Timings.fast(), bare_tenant=True).start()
    yield lab
    lab.stop()


@pytest.fixture
def tenant(bare):
    """The bare lab, its tenant's configuration and labkit's record wiped before each test."""
    store = bare.tenant.settings
    for schema in (ROUTING, PIPELINES):  # routes first: a referenced pipeline cannot go
        for obj in store.items(schema):
            store.delete(obj.object_id)
    for doc in bare.tenant.documents.list():
        bare.tenant.documents.delete(doc.id)
        bare.tenant.documents.purge(doc.id)
    made.path(settings(bare)).unlink(missing_ok=True)
    return bare


def settings(lab: LocalLab, **changes) -> Settings:
    env = {**lab.env, **changes}
    return Settings.load(environ={k: v for k, v in env.items() if v is not None}, dotenv=None)


def labkit_cli(lab: LocalLab, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **lab.env, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "labkit", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=lab.state_dir)


def rows(lab: LocalLab, **changes) -> dict:
    from labkit.tenant import check

    with Dynatrace(settings(lab, **changes)) as dt:
        return {c.item: c for c in check.rows(dt, Cluster(settings(lab)))}


def someone_elses(lab: LocalLab) -> tuple[str, str]:
    """A pipeline, a route and a notebook made by an attendee by hand: (pipeline objectId, doc id)."""
    pipeline = lab.tenant.settings.create(PIPELINES, {"customId": "pipeline_Audit_1234", "displayName": "Audit"})
    lab.tenant.settings.create(ROUTING, {"routingEntries": [{
        "enabled": True, "pipelineType": "custom", "pipelineId": pipeline.object_id,
        "matcher": 'matchesValue(log.source, "audit*")', "description": "Audit logs"}]})
    doc = lab.tenant.documents.create("My notes", "notebook", b'{"sections": []}')
    return pipeline.object_id, doc.id


def test_a_bare_tenant_fails_the_check_on_the_pipeline_the_route_and_the_runbook(tenant):
    proc = labkit_cli(tenant, "check")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for item in ("NO  pipeline 'Log Errors'", "NO  route 'Critical Logs'", "NO  runbook notebook"):
        assert item in proc.stdout, proc.stdout
    assert proc.stdout.count("Fix: labkit tenant setup") >= 3


def test_redis_error_logs_without_the_collectors_tags_say_the_transform_is_missing(tenant):
    item = "collector's alert tags"
    assert rows(tenant)[item].ok and "no redis error logs" in rows(tenant)[item].detail  # none yet: not a NO
    # a log as a collector without the lab's transform ships it: no alertmessage, no priority
    tenant.telemetry.log_cart_redis_error("1" * 32, "2" * 16, pod="cart-untagged", cluster=tenant.cluster_name)
    row = rows(tenant)[item]
    assert not row.ok and "the collector's transform is missing" in row.detail, row.detail
    assert 'set(attributes["alertmessage"], "Critical Redis connection error!")' in row.detail
    tenant.collector.log_cart_redis_error("3" * 32, "4" * 16)  # the lab's collector tags it
    assert rows(tenant)[item].ok


def test_the_wait_for_the_problem_stops_at_once_on_a_bare_tenant(tenant):
    lab = Lab(settings(tenant))
    try:
        with pytest.raises(LabError, match="cannot open on this tenant.*pipeline 'Log Errors'"):
            lab.wait_for_problem(timeout=600)  # at once, not after 600 s
    finally:
        lab.close()
    proc = labkit_cli(tenant, "problems", "--wait", "600")
    assert proc.returncode == 1 and "cannot open on this tenant" in proc.stderr, proc.stderr


def test_dry_run_shows_every_request_and_writes_nothing(tenant):
    proc = labkit_cli(tenant, "tenant", "setup", "--dry-run", "--annotate")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "POST /platform/document/v1/documents" in out and out.count("POST /api/v2/settings/objects") == 2
    assert "PATCH /apis/apps/v1/namespaces/default/deployments/cart" in out and lab_tenant.EVENT_NAME in out
    assert tenant.api_token not in out + proc.stderr and tenant.platform_token not in out + proc.stderr
    assert tenant.tenant.settings.items() == [] and tenant.tenant.documents.list() == []
    assert not made.path(settings(tenant)).exists()


def test_setup_makes_the_rows_pass_and_01_opens_the_labs_problem_on_the_carts_pod(tenant):
    proc = labkit_cli(tenant, "tenant", "setup", "--annotate")
    assert proc.returncode == 0, proc.stderr
    link = lab_tenant.runbook_link(tenant.env["DT_URL"])
    for line in ("Made the runbook notebook 'Redis Troubleshooting'", "Made the pipeline 'Log Errors'",
                 "Added the route 'Critical Logs' first", "the cart rolled and its pods carry it", link):
        assert line in proc.stdout, proc.stdout
    proc = labkit_cli(tenant, "check")
    assert proc.returncode == 0, proc.stdout
    lab = Lab(settings(tenant))
    on = tenant.release.lab_on_variant
    try:
        lab.change_flag(on, send_event=False)
        lab.generate_traffic(seconds=30, rate=40, until_failures=5)
        found = lab.wait_for_problem(timeout=60)
        assert list(found["title"]) == [lab_tenant.PROBLEM_TITLE]
        pods, _ = lab.cluster.kube.list_objects("pods", CART_SELECTOR)
        assert found.iloc[0]["affected"] in pods  # the cart's pod, where Davis puts the lab's problem
        problems = lab.problems()
        assert link in problems.iloc[0]["description"]  # the created notebook, linked from the pod
        assert httpx.get(link, timeout=10).status_code == 200
        shown = labkit_cli(tenant, "problems", "cart", "--wait", "30")  # open already: no wait
        assert shown.returncode == 0 and lab_tenant.PROBLEM_TITLE in shown.stdout, shown.stdout + shown.stderr
    finally:
        lab.change_flag("off", send_event=False)
        lab.close()


def test_undo_removes_exactly_what_setup_made(tenant):
    pipeline_id, doc_id = someone_elses(tenant)
    lab = Lab(settings(tenant))
    try:
        result = lab.prepare_tenant()
        assert "1 other route kept" in str(result)
        (_, routing), = tenant.tenant.settings.values(ROUTING)
        assert [r["description"] for r in routing["routingEntries"]] == ["Critical Logs", "Audit logs"]
        undone = str(lab.undo_tenant())
    finally:
        lab.close()
    assert "Removed the route 'Critical Logs'" in undone and "Removed the pipeline 'Log Errors'" in undone
    assert "Removed the runbook notebook 'Redis Troubleshooting' and its trash entry" in undone
    assert [o for o, _ in tenant.tenant.settings.values(PIPELINES)] == [pipeline_id]
    (_, routing), = tenant.tenant.settings.values(ROUTING)
    assert [r["description"] for r in routing["routingEntries"]] == ["Audit logs"]
    assert [d.id for d in tenant.tenant.documents.list()] == [doc_id] and tenant.tenant.documents.trash() == []
    assert not made.path(settings(tenant)).exists()


def test_setup_keeps_what_the_attendee_made_by_hand_and_undo_leaves_it(tenant):
    value = lab_tenant.pipeline_value("pipeline_Log_Errors_4242", "processor_1")
    pipeline = tenant.tenant.settings.create(PIPELINES, value)
    tenant.tenant.settings.create(ROUTING, {"routingEntries": [lab_tenant.route_entry(pipeline.object_id)]})
    lab = Lab(settings(tenant))
    try:
        result = str(lab.prepare_tenant())
        assert "Kept the pipeline 'Log Errors'" in result and "Kept the route 'Critical Logs'" in result
        undone = str(lab.undo_tenant())
    finally:
        lab.close()
    assert "Left the pipeline 'Log Errors' (not made by labkit)" in undone
    assert "Left the route 'Critical Logs' (not made by labkit)" in undone
    assert len(tenant.tenant.settings.items(PIPELINES)) == 1


def test_a_route_to_another_pipeline_is_a_no_and_setup_refuses_to_touch_it(tenant):
    lab = Lab(settings(tenant))
    try:
        lab.prepare_tenant()
    finally:
        lab.close()
    other = tenant.tenant.settings.create(PIPELINES, {"customId": "pipeline_Other_1", "displayName": "Other"})
    (routing_id, routing), = tenant.tenant.settings.values(ROUTING)
    routing["routingEntries"][0]["pipelineId"] = other.object_id
    tenant.tenant.settings.update(routing_id, routing)
    row = rows(tenant)["route 'Critical Logs'"]
    assert not row.ok and "sends the logs to the pipeline 'Other'" in row.detail, row.detail
    with Dynatrace(settings(tenant)) as dt, pytest.raises(BadInput, match="sends its logs to another pipeline"):
        setup.setup(dt, Cluster(settings(tenant)))
    assert tenant.tenant.settings.values(ROUTING) == [(routing_id, routing)]  # nothing written


def test_a_route_before_ours_that_takes_the_logs_first_is_a_no(tenant):
    lab = Lab(settings(tenant))
    try:
        lab.prepare_tenant()
    finally:
        lab.close()
    other = tenant.tenant.settings.create(PIPELINES, {"customId": "pipeline_Cart_1", "displayName": "Cart logs"})
    (routing_id, routing), = tenant.tenant.settings.values(ROUTING)
    first = {"enabled": True, "pipelineType": "custom", "pipelineId": other.object_id,
             "matcher": 'service.name == "cart"', "description": "All cart logs"}
    tenant.tenant.settings.update(routing_id, {"routingEntries": [first, *routing["routingEntries"]]})
    row = rows(tenant)["route 'Critical Logs'"]
    assert not row.ok and "'All cart logs' before 'Critical Logs' takes the cart's tagged logs first" in row.detail
    # one whose matcher cannot take them (another service) is no obstacle; one labkit cannot read says so
    first["matcher"] = 'service.name == "checkout"'
    odd = {**first, "matcher": 'in(priority, array("1"))', "description": "Odd"}
    tenant.tenant.settings.update(routing_id, {"routingEntries": [first, odd, *routing["routingEntries"]]})
    row = rows(tenant)["route 'Critical Logs'"]
    assert row.ok and "cannot tell whether the earlier route(s) 'Odd'" in row.detail, row.detail


def test_a_pipeline_with_a_changed_event_name_is_a_no_naming_the_field_and_setup_refuses(tenant):
    value = lab_tenant.pipeline_value("pipeline_Log_Errors_7", "processor_7")
    props = value["davis"]["processors"][0]["davis"]["properties"]
    props[:] = [p if p["key"] != "event.name" else {**p, "value": "Redis is down"} for p in props]
    tenant.tenant.settings.create(PIPELINES, value)
    row = rows(tenant)["pipeline 'Log Errors'"]
    assert not row.ok and "event.name is 'Redis is down'" in row.detail and lab_tenant.EVENT_NAME in row.detail
    with Dynatrace(settings(tenant)) as dt, pytest.raises(BadInput, match="exists with other contents"):
        setup.setup(dt, Cluster(settings(tenant)))
    assert len(tenant.tenant.settings.items()) == 1 and tenant.tenant.documents.list() == []


def test_a_token_without_the_settings_scope_is_its_own_no(tenant):
    token = make_token()
    tenant.tenant.add_token(token, READ_AND_INGEST_SCOPES - {"settings.read", "settings.write"})
    found = rows(tenant, DT_API_TOKEN=token, DT_PLATFORM_TOKEN=None)
    row = found["read OpenPipeline settings"]
    assert not row.ok and row.detail.startswith("DT_API_TOKEN lacks settings.read"), row.detail
    assert "pipeline 'Log Errors'" not in found
    assert found["runbook notebook"].detail.startswith("DT_PLATFORM_TOKEN is not set")
    platform = make_token("dt0s16")
    tenant.tenant.platform_tokens.add(platform, {"storage:logs:read", "storage:buckets:read"})
    found = rows(tenant, DT_API_TOKEN=None, DT_PLATFORM_TOKEN=platform)
    assert found["read OpenPipeline settings"].detail.startswith("DT_PLATFORM_TOKEN lacks settings:objects:read")
    assert found["runbook notebook"].detail.startswith("DT_PLATFORM_TOKEN lacks document:documents:read")
    with Dynatrace(settings(tenant, DT_API_TOKEN=token, DT_PLATFORM_TOKEN=None)) as dt:
        with pytest.raises(Forbidden, match="settings.read.*nothing was written"):
            setup.setup(dt, Cluster(settings(tenant)))


def test_an_api_token_only_lab_makes_the_settings_and_says_the_notebook_needs_a_platform_token(tenant):
    with Dynatrace(settings(tenant, DT_PLATFORM_TOKEN=None)) as dt:
        result = str(setup.setup(dt, Cluster(settings(tenant))))
    assert "Made the pipeline 'Log Errors'" in result and "Added the route 'Critical Logs'" in result
    assert "The runbook notebook needs a platform token: set DT_PLATFORM_TOKEN" in result
    assert tenant.tenant.documents.list() == [] and len(tenant.tenant.settings.items()) == 2
    assert all(o.owner is None for o in tenant.tenant.settings.items())  # made by an API token: public


class _Race(httpx.HTTPTransport):
    """Someone edits the routes in the UI just before each of labkit's first `times` PUTs of them."""

    def __init__(self, lab: LocalLab, times: int):
        super().__init__()
        self.lab, self.left, self.puts = lab, times, 0

    def handle_request(self, request):
        if request.method == "PUT" and "/settings/objects/" in request.url.path:
            self.puts += 1
            if self.left:
                self.left -= 1
                (oid, value), = self.lab.tenant.settings.values(ROUTING)
                value["routingEntries"].append({"enabled": True, "pipelineType": "builtin",
                                                "builtinPipelineId": "default", "matcher": "false",
                                                "description": f"Someone's route {self.left}"})
                self.lab.tenant.settings.update(oid, value)
        return super().handle_request(request)


def test_a_stale_update_token_is_retried_on_fresh_routes_and_never_overwrites_them(tenant):
    someone_elses(tenant)
    race = _Race(tenant, times=2)
    with Dynatrace(settings(tenant), transport=race) as dt:
        result = str(setup.setup(dt, Cluster(settings(tenant))))
    assert race.puts == 3 and "3 other routes kept" in result  # 2 stale (409), then 1 that lands
    (_, routing), = tenant.tenant.settings.values(ROUTING)
    names = [r["description"] for r in routing["routingEntries"]]
    assert names[0] == "Critical Logs" and set(names[1:]) == {"Audit logs", "Someone's route 1", "Someone's route 0"}


def test_a_409_that_persists_is_an_error_with_nothing_half_written(tenant):
    someone_elses(tenant)
    before = {o.object_id for o in tenant.tenant.settings.items(PIPELINES)}
    with Dynatrace(settings(tenant), transport=_Race(tenant, times=50)) as dt:
        with pytest.raises(LabError, match="kept changing.*Nothing was overwritten.*removed again"):
            setup.setup(dt, Cluster(settings(tenant)))
    assert {o.object_id for o in tenant.tenant.settings.items(PIPELINES)} == before
    assert [d.name for d in tenant.tenant.documents.list()] == ["My notes"] and tenant.tenant.documents.trash() == []
    assert not made.path(settings(tenant)).exists()


def test_an_unmigrated_tenant_is_told_what_to_do(tenant):
    tenant.tenant.openpipeline_migrated = False
    try:
        with Dynatrace(settings(tenant)) as dt, pytest.raises(LabError, match="old configuration API.*by hand"):
            setup.setup(dt, Cluster(settings(tenant)))
        assert "old configuration API" in rows(tenant)["read OpenPipeline settings"].detail
    finally:
        tenant.tenant.openpipeline_migrated = True


@pytest.mark.parametrize("matcher, takes", [
    (lab_tenant.ROUTE_MATCHER, True),
    ('isNotNull(alertmessage)\nand isNotNull(priority)\nand priority == "1"', True),
    ('priority == "2"', False),
    ('not isNull(alertmessage) and (service.name == "checkout" or service.name == "cart")', True),
    ('matchesValue(service.name, "CART")', True),  # matchesValue ignores case
    ('contains(content, "Redis")', False), ('contains(content, "connect to redis")', True),  # case-sensitive
    ('k8s.pod.name == "x"', False),  # a field the record lacks is null: no match
    ("true", True), ("false", False),
])
def test_the_route_matcher_evaluator_reads_the_common_forms(matcher, takes):
    from labkit.tenant.matcher import matches
    from labkit.tenant.read import SAMPLE_LOG

    assert matches(matcher, SAMPLE_LOG) is takes


@pytest.mark.parametrize("matcher", ['in(priority, array("1"))', "priority == 1 |", "lower(x) == \"y\""])
def test_an_unknown_matcher_form_says_it_cannot_tell(matcher):
    from labkit.tenant.matcher import Unknown, matches

    with pytest.raises(Unknown):
        matches(matcher, {"priority": "1"})
