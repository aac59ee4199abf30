"""The local tenant's OpenPipeline: each cart log through the tenant's own route table and pipelines,
as a tenant so configured would treat it (the lab's pipeline and route, and what an attendee might
have clicked instead). Traffic is the shop's over loopback; the problem is read back over the API."""
from __future__ import annotations

import copy

import pytest

from labkit import tenant as lab_tenant
from labkit.sandbox.dynatrace.openpipeline import parse_matcher
from labkit.sandbox.dynatrace.store import PIPELINES, ROUTING


def problems(lab) -> list[dict]:
    return lab.api.get("/api/v2/problems", params={"from": "now-1h"}).json()["problems"]


def redis_logs(lab) -> list[dict]:
    return lab.dql('fetch logs, from: now()-1h | filter matchesPhrase(content, "redis")')["records"]


def routing(lab) -> tuple[str, dict]:
    (found,) = lab.tenant.settings.values(ROUTING)
    return found


def lab_pipeline(lab) -> tuple[str, dict]:
    (found,) = lab.tenant.settings.values(PIPELINES)
    return found


def set_routes(lab, entries: list[dict]) -> None:
    object_id, value = routing(lab)
    lab.tenant.settings.update(object_id, {**value, "routingEntries": entries})


def other_pipeline(lab, name: str = "Everything else", with_davis: bool = False) -> str:
    value = {"customId": name.replace(" ", "_").lower(), "displayName": name}
    if with_davis:
        value = {**lab_tenant.pipeline_value(value["customId"], "processor_other_1"), "displayName": name}
    return lab.tenant.settings.create(PIPELINES, value).object_id


def test_a_bare_tenant_stores_the_tagged_logs_and_opens_no_problem(tenant_sandbox):
    lab = tenant_sandbox(bare=True)
    lab.fail_empties(3)
    logs = redis_logs(lab)
    assert len(logs) == 3 and problems(lab) == []
    assert all(r["alertmessage"] == lab_tenant.ALERT_MESSAGE and r["priority"] == "1" for r in logs)
    assert all(r["dt.openpipeline.pipelines"] == ["logs:default"] for r in logs)
    # the cart's annotation as the lab's otel-demo-values.yaml has it: the author's document id
    assert "c21c01cb-b4ad-4eae-9279-a3853f38b1de" in logs[0]["supportInfo"]


def test_the_labs_route_sends_the_tagged_logs_to_its_pipeline_only(tenant_sandbox):
    lab = tenant_sandbox()
    lab.fail_empties(2)
    lab.collector.log_cart("INFO", "GetCartAsync called with userId=u1")
    object_id, value = lab_pipeline(lab)
    by_content = {r["content"][:12]: r["dt.openpipeline.pipelines"] for r in
                  lab.dql("fetch logs, from: now()-1h | filter service.name == \"cart\"")["records"]}
    assert by_content["Can't access"] == [f"logs:{value['customId']}"]
    assert by_content["GetCartAsync"] == ["logs:default"]
    (problem,) = problems(lab)  # two records, one event refreshed: one problem
    assert problem["title"] == lab_tenant.PROBLEM_TITLE


def test_a_route_to_another_pipeline_opens_none(tenant_sandbox):
    lab = tenant_sandbox()
    elsewhere = other_pipeline(lab)
    set_routes(lab, [{**lab_tenant.route_entry(elsewhere)}])
    lab.fail_empties(2)
    assert problems(lab) == [] and {tuple(r["dt.openpipeline.pipelines"]) for r in redis_logs(lab)} == {
        ("logs:everything_else",)}


def test_a_route_placed_before_that_catches_the_logs_wins(tenant_sandbox):
    lab = tenant_sandbox()
    _, value = routing(lab)
    catch_all = {"enabled": True, "pipelineType": "custom", "pipelineId": other_pipeline(lab),
                 "matcher": 'matchesValue(service.name, "cart")', "description": "All cart logs"}
    set_routes(lab, [catch_all, *value["routingEntries"]])
    lab.fail_empties(2)
    assert problems(lab) == []
    set_routes(lab, [*value["routingEntries"], catch_all])  # placed after: the lab's route wins
    lab.fail_empties(1)
    assert [p["title"] for p in problems(lab)] == [lab_tenant.PROBLEM_TITLE]


def test_a_disabled_route_or_processor_opens_none(tenant_sandbox):
    lab = tenant_sandbox()
    _, value = routing(lab)
    set_routes(lab, [{**value["routingEntries"][0], "enabled": False}])
    lab.fail_empties(2)
    assert problems(lab) == []
    set_routes(lab, value["routingEntries"])
    object_id, pipeline = lab_pipeline(lab)
    off = copy.deepcopy(pipeline)
    off["davis"]["processors"][0]["enabled"] = False
    lab.tenant.settings.update(object_id, off)
    lab.fail_empties(2)
    assert problems(lab) == []


def test_a_changed_event_name_titles_the_problem_so(tenant_sandbox):
    lab = tenant_sandbox()
    object_id, pipeline = lab_pipeline(lab)
    for prop in pipeline["davis"]["processors"][0]["davis"]["properties"]:
        if prop["key"] == "event.name":
            prop["value"] = "[{dt.owner}] Redis connection failed on {k8s.pod.name}"
    lab.tenant.settings.update(object_id, pipeline)
    lab.fail_empties(1)
    (problem,) = problems(lab)
    (pod,) = lab.cluster.list("pods", "opentelemetry.io/name=cart", None)[0]
    assert problem["title"] == f"[teamA] Redis connection failed on {pod['metadata']['name']}"


def test_an_info_type_event_makes_an_event_and_no_problem(tenant_sandbox):
    lab = tenant_sandbox()
    object_id, pipeline = lab_pipeline(lab)
    for prop in pipeline["davis"]["processors"][0]["davis"]["properties"]:
        if prop["key"] == "event.type":
            prop["value"] = "CUSTOM_INFO"
    lab.tenant.settings.update(object_id, pipeline)
    lab.fail_empties(2)
    assert problems(lab) == []
    events = lab.api.get("/api/v2/events", params={
        "from": "now-1h", "eventSelector": 'eventType("CUSTOM_INFO")'}).json()["events"]
    assert [e["title"] for e in events] == [lab_tenant.PROBLEM_TITLE]  # one event, refreshed


def test_a_rolled_cart_logs_under_its_new_pod_and_annotations(tenant_sandbox):
    """An annotation change on the pod template rolls the cart; its logs carry the new pod's name and
    annotation, so the next problem opens on the new pod (a new entity)."""
    import time

    lab = tenant_sandbox()
    lab.fail_empties(1)
    (first,) = problems(lab)
    patch = {"spec": {"template": {"metadata": {"annotations": {"ownedBy": "teamB"}}}}}
    lab.cluster.patch("deployments", "cart", "application/strategic-merge-patch+json", patch)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pods = [p for p in lab.cluster.list("pods", "opentelemetry.io/name=cart", None)[0]
                if not p["metadata"].get("deletionTimestamp") and p["status"]["phase"] == "Running"]
        if len(pods) == 1 and pods[0]["metadata"]["annotations"]["ownedBy"] == "teamB":
            break
        time.sleep(0.05)
    lab.fail_empties(1)
    titles = {p["title"]: p["affectedEntities"][0]["name"] for p in problems(lab)}
    assert titles[lab_tenant.PROBLEM_TITLE] == first["affectedEntities"][0]["name"]
    assert titles[lab_tenant.PROBLEM_TITLE.replace("teamA", "teamB")] == pods[0]["metadata"]["name"]


@pytest.mark.parametrize("text", ["", "priority ==", 'unknownFunction(priority)', "(true"])
def test_a_matcher_the_local_lab_cannot_evaluate_is_a_value_error(text):
    with pytest.raises(ValueError, match="matcher"):
        parse_matcher(text)


def test_matchers_evaluate_as_dql_does():
    record = {"alertmessage": "Critical Redis connection error!", "priority": "1", "service.name": "cart"}
    assert parse_matcher(lab_tenant.ROUTE_MATCHER)(record)
    assert not parse_matcher(lab_tenant.ROUTE_MATCHER)({**record, "priority": 1})  # a number is not "1"
    assert not parse_matcher(lab_tenant.ROUTE_MATCHER)({"service.name": "cart"})
    assert parse_matcher("true")({}) and not parse_matcher("not true")({})
    assert parse_matcher('matchesValue(service.name, "CA*")')(record)
    assert parse_matcher('matchesPhrase(alertmessage, "redis connection")')(record)


# ----- the local lab as getting-started leaves it, or bare ---------------------------------------
def test_the_local_lab_starts_set_up_and_its_runbook_link_opens(local_lab):
    import httpx

    (doc,) = local_lab.tenant.documents.list()
    assert doc.name == lab_tenant.RUNBOOK_NAME and doc.type == "notebook" and len(doc.id) == 36
    (pipeline_id, pipeline) = lab_pipeline(local_lab)
    assert pipeline["customId"].startswith("pipeline_Log_Errors_") and pipeline["displayName"] == "Log Errors"
    (processor,) = pipeline["davis"]["processors"]
    assert processor["id"].startswith("processor_") and processor["matcher"] == "true"
    (_, routes) = routing(local_lab)
    assert routes["routingEntries"] == [lab_tenant.route_entry(pipeline_id)]
    cart = local_lab.cluster.get("deployments", "cart")
    info = cart["spec"]["template"]["metadata"]["annotations"]["supportInfo"]
    link = f"{local_lab.tenant_server.url}/ui/document/{doc.id}"
    assert info == lab_tenant.support_info(local_lab.tenant_server.url, doc.id) and link in info
    page = httpx.get(link, timeout=10)
    assert page.status_code == 200 and "Contact List" in page.text and "Fetch logs" in page.text
    gone = httpx.get(f"{local_lab.tenant_server.url}/ui/document/c21c01cb-b4ad-4eae-9279-a3853f38b1de")
    assert gone.status_code == 404 and "no document c21c01cb" in gone.text


def test_a_bare_local_lab_has_none_of_it(tmp_path, monkeypatch):
    from labkit.sandbox import LocalLab, Timings
    from labkit.sandbox.kube.workloads import LAB_SUPPORT_INFO

    monkeypatch.setenv("LABKIT_BARE_TENANT", "1")
    lab = LocalLab(tmp_path, Timings.fast()).start()
    try:
        assert lab.bare_tenant and lab.tenant.settings.items() == [] and lab.tenant.documents.list() == []
        cart = lab.cluster.get("deployments", "cart")
        assert cart["spec"]["template"]["metadata"]["annotations"]["supportInfo"] == LAB_SUPPORT_INFO
    finally:
        lab.stop()
