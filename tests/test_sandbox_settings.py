"""The local tenant's Settings 2.0 API over real HTTP (httpx), on both paths: /api/v2 with an
Api-Token and /platform/classic/environment-api/v2 with a platform token. What labkit's `tenant
setup` meets on a tenant: the lab's pipeline and route validated against the schemas, UNIQUE
customId, one routing object, updateToken conflicts, referential integrity, paging, 403s, and the
old OpenPipeline API of a migrated and of an unmigrated tenant."""
from __future__ import annotations

import copy

import httpx
import pytest

from labkit import tenant as lab
from labkit.sandbox import make_token
from labkit.sandbox.dynatrace import Tenant
from labkit.sandbox.dynatrace.tenant import LOCAL_USER
from labkit.sandbox.dynatrace import app as tenant_app
from labkit.sandbox.http import LabServer

PIPELINES, ROUTING = "builtin:openpipeline.logs.pipelines", "builtin:openpipeline.logs.routing"
API, PLATFORM = "/api/v2/settings", "/platform/classic/environment-api/v2/settings"


@pytest.fixture
def sandbox(tenant_sandbox):
    """A bare tenant (nothing made yet), as a tenant is before getting-started."""
    return tenant_sandbox(bare=True)


def post(client, path, *objects, **params):
    return client.post(f"{path}/objects", json=list(objects), params=params)


def pipeline(**value) -> dict:
    return {"schemaId": PIPELINES, "scope": "environment", "value": {**lab.pipeline_value(), **value}}


def routing(*entries) -> dict:
    return {"schemaId": ROUTING, "scope": "environment", "value": {"routingEntries": list(entries)}}


def made(resp) -> str:
    assert resp.status_code == 200, resp.text
    return resp.json()[0]["objectId"]


def one(client, path, object_id) -> dict:
    resp = client.get(f"{path}/objects/{object_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_the_labs_pipeline_and_route_are_created_and_read_back_on_both_paths(sandbox):
    pid = made(post(sandbox.api, API, pipeline()))
    rid = made(post(sandbox.grail, PLATFORM, routing(lab.route_entry(pid))))
    listed = sandbox.grail.get(f"{PLATFORM}/objects", params={"schemaIds": PIPELINES}).json()
    assert listed["totalCount"] == 1 and set(listed["items"][0]) == {"objectId", "value"}  # the default set
    assert listed["items"][0]["value"]["displayName"] == "Log Errors"
    route = one(sandbox.api, API, rid)
    assert route["value"]["routingEntries"][0]["pipelineId"] == pid
    assert route["owner"] == {"type": "USER", "id": LOCAL_USER}  # made with a platform token
    assert one(sandbox.api, API, pid)["owner"] is None  # made with an API token: public
    assert route["schemaVersion"] == "1.69" and route["updateToken"]


def test_fields_replace_the_default_set_and_filter_finds_the_pipeline_by_custom_id(sandbox):
    made(post(sandbox.api, API, pipeline()))
    made(post(sandbox.api, API, pipeline(customId="someone-elses", displayName="Other")))
    resp = sandbox.api.get(f"{API}/objects", params={
        "schemaIds": PIPELINES, "fields": "objectId,updateToken,value",
        "filter": "value.customId = 'labkit-log-errors'"})
    items = resp.json()["items"]
    assert [i["value"]["displayName"] for i in items] == ["Log Errors"]
    assert set(items[0]) == {"objectId", "updateToken", "value"}
    # A filter on a field that was not asked for is refused, as the reference says.
    bad = sandbox.api.get(f"{API}/objects", params={"schemaIds": PIPELINES, "fields": "objectId",
                                                    "filter": "value.customId = 'x'"})
    assert bad.status_code == 400 and bad.json()["error"]["constraintViolations"][0]["path"] == "filter"


def test_paging_sends_next_page_key_alone(sandbox):
    for i in range(5):
        made(post(sandbox.api, API, pipeline(customId=f"pipe-{i}", displayName=f"P{i}")))
    first = sandbox.api.get(f"{API}/objects", params={"schemaIds": PIPELINES, "pageSize": 2}).json()
    assert first["totalCount"] == 5 and len(first["items"]) == 2 and first["pageSize"] == 2
    seen = [i["value"]["customId"] for i in first["items"]]
    key = first["nextPageKey"]
    while key:
        page = sandbox.api.get(f"{API}/objects", params={"nextPageKey": key}).json()
        seen += [i["value"]["customId"] for i in page["items"]]
        key = page.get("nextPageKey")
    assert seen == [f"pipe-{i}" for i in range(5)]
    mixed = sandbox.api.get(f"{API}/objects", params={"nextPageKey": first["nextPageKey"],
                                                      "schemaIds": PIPELINES})
    assert mixed.status_code == 400
    assert sandbox.api.get(f"{API}/objects").status_code == 400  # neither schemaIds nor scopes
    assert sandbox.api.get(f"{API}/objects", params={"schemaIds": PIPELINES, "pageSize": 501}
                           ).status_code == 400


def test_validation_errors_name_the_path_in_the_request(sandbox):
    value = lab.pipeline_value()
    value["customId"] = "dt.mine"
    value["davis"]["processors"][0]["davis"]["properties"][0]["key"] = "{event.type}"
    resp = post(sandbox.api, API, pipeline(), {"schemaId": PIPELINES, "scope": "environment",
                                               "value": value})
    assert resp.status_code == 207  # the first item was fine, the second not
    ok, bad = resp.json()
    assert ok["code"] == 200 and bad["code"] == 400 and bad["invalidValue"] == value
    paths = {v["path"]: v["message"] for v in bad["error"]["constraintViolations"]}
    assert "Must not start with 'dt.' or 'dynatrace.'" in paths[f"{PIPELINES}/1/customId"]
    assert "Must not contain '{' or '}'" in paths[f"{PIPELINES}/1/davis/processors/0/davis/properties/0/key"]
    assert all(v["parameterLocation"] == "PAYLOAD_BODY" for v in bad["error"]["constraintViolations"])


@pytest.mark.parametrize("change, path", [
    ({"displayName": ""}, "displayName"),
    ({"routing": "sometimes"}, "routing"),
    ({"customId": "abc"}, "customId"),
    ({"unknownStage": {}}, "unknownStage"),
])
def test_types_lengths_enums_and_unknown_properties_are_refused(sandbox, change, path):
    resp = post(sandbox.api, API, pipeline(**change))
    assert resp.status_code == 400
    assert f"{PIPELINES}/0/{path}" in [v["path"] for v in resp.json()[0]["error"]["constraintViolations"]]
    assert sandbox.api.get(f"{API}/objects", params={"schemaIds": PIPELINES}).json()["totalCount"] == 0


def test_validate_only_saves_nothing(sandbox):
    resp = post(sandbox.api, API, pipeline(), validateOnly="true")
    assert resp.status_code == 200 and resp.json() == [{"code": 200}]
    assert sandbox.api.get(f"{API}/objects", params={"schemaIds": PIPELINES}).json()["totalCount"] == 0


def test_custom_id_is_unique_across_pipelines_and_immutable(sandbox):
    pid = made(post(sandbox.api, API, pipeline()))
    again = post(sandbox.api, API, pipeline(displayName="Log Errors 2"))
    assert again.status_code == 400
    assert "identical customId" in again.json()[0]["error"]["constraintViolations"][0]["message"]
    obj = one(sandbox.api, API, pid)
    changed = {**obj["value"], "customId": "labkit-renamed"}
    resp = sandbox.api.put(f"{API}/objects/{pid}", json={"value": changed, "updateToken": obj["updateToken"]})
    assert resp.status_code == 400 and resp.json()["code"] == 400
    assert resp.json()["error"]["constraintViolations"][0]["path"] == "customId"


def test_a_stale_update_token_is_a_409_and_a_fresh_one_writes(sandbox):
    pid = made(post(sandbox.api, API, pipeline()))
    obj = one(sandbox.api, API, pid)
    renamed = {**obj["value"], "displayName": "Log Errors (renamed)"}
    first = sandbox.api.put(f"{API}/objects/{pid}", json={"value": renamed, "updateToken": obj["updateToken"]})
    assert first.status_code == 200 and first.json() == {"code": 200, "objectId": pid}
    stale = sandbox.grail.put(f"{PLATFORM}/objects/{pid}", json={"value": obj["value"],
                                                                 "updateToken": obj["updateToken"]})
    assert stale.status_code == 409
    assert stale.json() == {"code": 409, "error": {"code": 409, "message": "Failed. Conflicting resource."}}
    assert one(sandbox.api, API, pid)["value"]["displayName"] == "Log Errors (renamed)"
    gone = sandbox.api.delete(f"{API}/objects/{pid}", params={"updateToken": obj["updateToken"]})
    assert gone.status_code == 409
    fresh = one(sandbox.api, API, pid)["updateToken"]
    assert sandbox.api.delete(f"{API}/objects/{pid}", params={"updateToken": fresh}).status_code == 204
    missing = sandbox.api.get(f"{API}/objects/{pid}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == 404
    assert sandbox.api.put(f"{API}/objects/{pid}", json={"value": renamed}).json()["code"] == 404


def test_one_routing_object_a_post_replaces_it_and_put_keeps_the_others(sandbox):
    pid = made(post(sandbox.api, API, pipeline()))
    theirs = {"enabled": True, "pipelineType": "builtin", "builtinPipelineId": "default",
              "matcher": "true", "description": "Everything else"}
    rid = made(post(sandbox.api, API, routing(theirs)))
    routing_obj = one(sandbox.api, API, rid)
    ours = lab.route_entry(pid)
    value = {"routingEntries": [ours, *routing_obj["value"]["routingEntries"]]}
    assert sandbox.api.put(f"{API}/objects/{rid}", json={
        "value": value, "updateToken": routing_obj["updateToken"]}).status_code == 200
    assert [e["description"] for e in one(sandbox.api, API, rid)["value"]["routingEntries"]] == \
        ["Critical Logs", "Everything else"]
    # The chosen answer to the open question: a second POST upserts the single object (same id).
    again = post(sandbox.api, API, routing(theirs))
    assert made(again) == rid
    assert [e["description"] for e in one(sandbox.api, API, rid)["value"]["routingEntries"]] == \
        ["Everything else"]
    listed = sandbox.api.get(f"{API}/objects", params={"schemaIds": ROUTING}).json()
    assert listed["totalCount"] == 1


def test_a_route_must_name_an_existing_pipeline_and_descriptions_are_unique(sandbox):
    resp = post(sandbox.api, API, routing(lab.route_entry("labkit-log-errors")))  # a customId, not an objectId
    assert resp.status_code == 400
    violation = resp.json()[0]["error"]["constraintViolations"][0]
    assert violation == {"path": f"{ROUTING}/0/routingEntries/0/pipelineId", "message": "Must be of type setting",
                         "parameterLocation": "PAYLOAD_BODY", "location": None}
    pid = made(post(sandbox.api, API, pipeline()))
    twice = post(sandbox.api, API, routing(lab.route_entry(pid), lab.route_entry(pid)))
    assert twice.status_code == 400
    assert twice.json()[0]["error"]["constraintViolations"][0]["path"] == f"{ROUTING}/0/routingEntries/1"


def test_a_pipeline_a_route_references_cannot_be_deleted(sandbox):
    pid = made(post(sandbox.api, API, pipeline()))
    rid = made(post(sandbox.api, API, routing(lab.route_entry(pid))))
    refused = sandbox.api.delete(f"{API}/objects/{pid}")
    assert refused.status_code == 400 and rid in refused.json()["error"]["message"]
    obj = one(sandbox.api, API, rid)
    assert sandbox.api.put(f"{API}/objects/{rid}", json={
        "value": {"routingEntries": []}, "updateToken": obj["updateToken"]}).status_code == 200
    assert sandbox.api.delete(f"{API}/objects/{pid}").status_code == 204


def test_scopes_are_checked_per_token_kind(sandbox):
    url = sandbox.tenant_server.url
    reader = make_token()
    sandbox.tenant.add_token(reader, {"settings.read"})
    with httpx.Client(base_url=url, headers={"Authorization": f"Api-Token {reader}"}) as c:
        assert c.get(f"{API}/objects", params={"schemaIds": PIPELINES}).status_code == 200
        denied = post(c, API, pipeline())
        assert denied.status_code == 403
        assert denied.json() == {"error": {"code": 403, "message":
                                           "Token is missing required scope. Use one of: settings.write"}}
    with httpx.Client(base_url=url, headers={"Authorization": f"Api-Token {sandbox.ingest_token}"}) as c:
        assert c.get(f"{API}/objects", params={"schemaIds": PIPELINES}).status_code == 403
    bare = make_token("dt0s16")
    sandbox.tenant.platform_tokens.add(bare, {"storage:logs:read"})
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {bare}"}) as c:
        resp = c.get(f"{PLATFORM}/objects", params={"schemaIds": PIPELINES})
        assert resp.status_code == 403 and resp.json() == {"error": {"code": 403, "message": "Access denied"}}
        assert c.get(f"{PLATFORM}/schemas/{PIPELINES}").status_code == 403
    # An Api-Token on the platform path is not a platform token.
    assert sandbox.api.get(f"{PLATFORM}/objects", params={"schemaIds": PIPELINES}).status_code == 401


def test_schemas_are_served_and_unknown_ones_are_404(sandbox):
    listed = sandbox.grail.get(f"{PLATFORM}/schemas").json()
    assert {s["schemaId"] for s in listed["items"]} == {PIPELINES, ROUTING}
    routing_schema = sandbox.api.get(f"{API}/schemas/{ROUTING}").json()
    assert routing_schema["multiObject"] is False and routing_schema["maxObjects"] == 1
    assert sandbox.api.get(f"{API}/schemas/builtin:nothing.here").status_code == 404
    assert sandbox.api.get(f"{API}/objects", params={"schemaIds": "builtin:nothing.here"}).status_code == 404
    resp = post(sandbox.api, API, {"schemaId": "builtin:nothing.here", "scope": "environment", "value": {}})
    assert resp.status_code == 404 and resp.json()[0]["code"] == 404


def test_a_migrated_tenant_answers_the_old_openpipeline_api_404(sandbox):
    for path in ("/platform/openpipeline/v1/configurations", "/platform/openpipeline/v1/configurations/logs"):
        resp = sandbox.grail.get(path)
        assert resp.status_code == 404
        assert resp.json()["error"]["message"] == \
            "Migration in-progress/completed, the requested resource is no longer available."


@pytest.fixture
def unmigrated(sandbox):
    """The same telemetry behind a tenant that was never migrated to OpenPipeline on Settings."""
    old = Tenant(sandbox.telemetry, sandbox.timings, {sandbox.api_token: frozenset({"settings.read",
                                                                                   "settings.write"})},
                 platform_tokens={sandbox.platform_token}, openpipeline_migrated=False)
    server = LabServer(tenant_app(old)).start()
    yield server.url
    server.stop()


def test_an_unmigrated_tenant_answers_v1_and_knows_no_openpipeline_schemas(sandbox, unmigrated):
    bearer = {"Authorization": f"Bearer {sandbox.platform_token}"}
    with httpx.Client(base_url=unmigrated, headers=bearer) as c:
        assert c.get("/platform/openpipeline/v1/configurations").json() == [{"id": "logs", "editable": True}]
        config = c.get("/platform/openpipeline/v1/configurations/logs").json()
        assert config["routing"]["catchAllPipeline"]["pipelineId"] == "default"
        assert c.get(f"{PLATFORM}/schemas/{PIPELINES}").status_code == 404
        changed = copy.deepcopy(config)
        changed["routing"]["entries"].append({"enabled": True, "pipelineId": "default", "matcher": "true",
                                              "note": "mine", "builtin": False, "editable": True})
        assert c.put("/platform/openpipeline/v1/configurations/logs", json=changed).status_code == 200
        assert c.put("/platform/openpipeline/v1/configurations/logs", json=changed).status_code == 409  # stale
    with httpx.Client(base_url=unmigrated, headers={"Authorization": f"Api-Token {sandbox.api_token}"}) as c:
        resp = post(c, API, pipeline())
        assert resp.status_code == 404 and "not found" in resp.json()[0]["error"]["message"]
