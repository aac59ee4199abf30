"""The local lab's Dynatrace tenant, called with httpx over loopback in the reference's shapes."""
from __future__ import annotations

import time

import httpx
import pytest

from labkit.sandbox import make_token
from labkit.sandbox.dynatrace import LAB_INGEST_SCOPES, service_id
from tenant_sandbox import QUERY, TenantSandbox

CART_ID = service_id("cart")
CART = "type(SERVICE),entityName.equals(cart)"
# The lab's runtime_change.py body, verbatim (a JSON boolean property included).
LAB_EVENT = {"title": "feature flag changed", "entitySelector": CART,
             "eventType": "CUSTOM_CONFIGURATION",
             "properties": {"dt.event.is_rootcause_relevant": True, "action": "changed",
                            "feature_flag.key": "cartFailure", "defaultValue": "on"}}
@pytest.fixture(scope="module")
def lab():
    lab = TenantSandbox()
    yield lab
    lab.close()


@pytest.fixture
def fresh_lab(tenant_sandbox):
    return tenant_sandbox(problem_quiet=0.6)


def metrics(lab, selector, **params):
    resp = lab.api.get("/api/v2/metrics/query", params={"metricSelector": selector, **params})
    assert resp.status_code == 200, resp.text
    return resp.json()


# ----- events ----------------------------------------------------------------------------------
def test_the_labs_event_is_accepted_and_read_back(lab):
    resp = lab.ingest.post("/api/v2/events/ingest", json=LAB_EVENT)
    assert resp.status_code == 201
    body = resp.json()
    assert body["reportCount"] == 1 and body["eventIngestResults"][0]["status"] == "OK"
    correlation = body["eventIngestResults"][0]["correlationId"]

    resp = lab.api.get("/api/v2/events", params={
        "eventSelector": 'eventType("CUSTOM_CONFIGURATION")', "entitySelector": CART,
        "from": "now-2h"})
    assert resp.status_code == 200
    event = next(e for e in resp.json()["events"] if e["correlationId"] == correlation)
    assert event["title"] == "feature flag changed"
    assert event["entityId"] == {"entityId": {"id": CART_ID, "type": "SERVICE"}, "name": "cart"}
    props = {p["key"]: p["value"] for p in event["properties"]}
    assert props["dt.event.is_rootcause_relevant"] == "true"  # read back as a string
    assert props["feature_flag.key"] == "cartFailure"
    assert event["status"] == "OPEN" and event["endTime"] > event["startTime"]

    by_property = lab.api.get("/api/v2/events", params={
        "eventSelector": 'property.feature_flag.key("cartFailure")', "from": "now-1d/d"}).json()
    assert correlation in {e["correlationId"] for e in by_property["events"]}


def test_a_selector_matching_nothing_reports_zero(lab):
    body = dict(LAB_EVENT, entitySelector="type(SERVICE),entityName.equals(cartservice)")
    resp = lab.ingest.post("/api/v2/events/ingest", json=body)
    assert resp.status_code == 201
    assert resp.json() == {"reportCount": 0, "eventIngestResults": []}


def test_entity_name_matching_follows_the_selector_rules(lab):
    def count(selector):
        body = dict(LAB_EVENT, entitySelector=selector, eventType="CUSTOM_INFO")
        return lab.ingest.post("/api/v2/events/ingest", json=body).json()["reportCount"]
    assert count('type(SERVICE),entityName.equals("CART")') == 1  # equals ignores case
    assert count("type(SERVICE),entityName(fronte)") == 2  # contains: frontend, frontend-proxy
    assert count(f'entityId("{CART_ID}")') == 1


def test_an_invalid_event_names_each_violation(lab):
    body = {"eventType": "CONFIG_CHANGED", "properties": {"dt.foo": "x", "ok": "y"}}
    resp = lab.ingest.post("/api/v2/events/ingest", json=body)
    assert resp.status_code == 400
    paths = {v["path"] for v in resp.json()["error"]["constraintViolations"]}
    assert paths == {"eventType", "title", "properties.dt.foo"}
    resp = lab.ingest.post("/api/v2/events/ingest", json=dict(LAB_EVENT, entitySelector="entityName.equals(cart)"))
    assert resp.status_code == 400
    assert "type" in resp.json()["error"]["constraintViolations"][0]["message"]


def test_events_page_with_a_key_sent_alone(lab):
    for i in range(3):
        lab.api.post("/api/v2/events/ingest", json=dict(LAB_EVENT, title=f"page {i}",
                                                        eventType="CUSTOM_ANNOTATION"))
    params = {"eventSelector": 'eventType("CUSTOM_ANNOTATION")', "pageSize": "2"}
    first = lab.api.get("/api/v2/events", params=params).json()
    assert first["totalCount"] == 3 and len(first["events"]) == 2 and first["nextPageKey"]
    mixed = lab.api.get("/api/v2/events", params={**params, "nextPageKey": first["nextPageKey"]})
    assert mixed.status_code == 400
    second = lab.api.get("/api/v2/events", params={"nextPageKey": first["nextPageKey"]}).json()
    assert len(second["events"]) == 1 and second["nextPageKey"] is None


# ----- auth ------------------------------------------------------------------------------------
def test_missing_and_unknown_tokens_are_401(lab):
    url = lab.tenant_server.url + "/api/v2/events"
    assert httpx.get(url).status_code == 401
    resp = httpx.get(url, headers={"Authorization": f"Api-Token {make_token()}"})
    assert resp.status_code == 401 and resp.json()["error"]["code"] == 401
    assert httpx.get(url, params={"api-token": lab.api_token}).status_code == 200


def test_the_labs_ingest_only_token_cannot_read_and_says_which_scope(lab):
    resp = lab.ingest.get("/api/v2/metrics/query",
                          params={"metricSelector": "builtin:service.request.count"})
    assert resp.status_code == 403
    assert "metrics.read" in resp.json()["error"]["message"]
    for path, scope in (("/api/v2/problems", "problems.read"), ("/api/v2/events", "events.read")):
        assert scope in lab.ingest.get(path).json()["error"]["message"]


def test_token_lookup_lists_the_scopes(lab):
    resp = lab.ingest.post("/api/v2/apiTokens/lookup", json={"token": lab.ingest_token})
    assert resp.status_code == 200
    body = resp.json()
    assert set(body["scopes"]) == set(LAB_INGEST_SCOPES)
    assert body["id"] == ".".join(lab.ingest_token.split(".")[:2]) and body["enabled"] is True
    assert lab.api.post("/api/v2/apiTokens/lookup", json={"token": make_token()}).status_code == 404
    assert lab.api.post("/api/v2/apiTokens/lookup", json={"token": "nope"}).status_code == 400


# ----- metrics ---------------------------------------------------------------------------------
def test_cart_failures_show_in_the_unified_metrics(lab):
    before = time.time() * 1000
    lab.fail_empties(4)
    selector = ("builtin:service.request.failure_count:splitBy():value:default(0),"
                "builtin:service.request.count:splitBy():value:default(0)")
    body = metrics(lab, selector, entitySelector=CART, **{"from": "now-5m", "resolution": "1m"})
    assert body["resolution"] == "1m" and body["nextPageKey"] is None
    failed, total = body["result"]
    assert failed["metricId"] == selector.split(",")[0]
    series = failed["data"][0]
    assert series["dimensions"] == [] and series["dimensionMap"] == {}
    assert len(series["timestamps"]) == len(series["values"])
    assert sum(series["values"]) >= 4
    assert sum(total["data"][0]["values"]) >= 12  # add + view + empty, per user
    # Timestamps are slot ENDS: the failures' minute is reported one minute later.
    slot_end = (int(before) // 60_000 + 1) * 60_000
    assert all(t % 60_000 == 0 for t in series["timestamps"])
    assert series["timestamps"][-1] >= slot_end


def test_filter_and_default_split_by_entity(lab):
    selector = f'builtin:service.request.count:filter(eq("dt.entity.service","{CART_ID}"))'
    body = metrics(lab, selector, **{"from": "now-1h"})
    (series,) = body["result"][0]["data"]
    assert series["dimensionMap"] == {"dt.entity.service": CART_ID}
    via_selector = ('builtin:service.request.count:filter(in("dt.entity.service",'
                    'entitySelector("type(SERVICE),entityName.equals(cart)"))):splitBy()')
    assert len(metrics(lab, via_selector, **{"from": "now-1h"})["result"][0]["data"]) == 1


def test_empty_slots_are_null_until_defaulted(lab):
    # The seeded history starts 2 h ago, so the first hours of this window are empty.
    key = "builtin:service.request.count:splitBy()"
    raw = metrics(lab, key, entitySelector=CART, **{"from": "now-5h", "resolution": "1h"})
    values = raw["result"][0]["data"][0]["values"]
    assert values[0] is None and values[-1] is not None
    filled = metrics(lab, key + ":default(0)", entitySelector=CART,
                     **{"from": "now-5h", "resolution": "1h"})["result"][0]["data"][0]["values"]
    assert filled[0] == 0 and None not in filled
    # With no data at all, only default(0,always) produces a series.
    old = {"from": "now-3d", "to": "now-2d", "resolution": "1h"}
    assert metrics(lab, key + ":default(0)", entitySelector=CART, **old)["result"][0]["data"] == []
    always = metrics(lab, key + ":default(0,always)", entitySelector=CART, **old)
    assert set(always["result"][0]["data"][0]["values"]) == {0}


def test_inf_resolution_is_one_point(lab):
    body = metrics(lab, "builtin:service.request.count:splitBy()", entitySelector=CART,
                   **{"from": "now-2h", "resolution": "Inf"})
    series = body["result"][0]["data"][0]
    assert body["resolution"] == "Inf" and len(series["values"]) == 1 and series["values"][0] > 0


def test_a_day_at_one_minute_resolution(lab):
    body = metrics(lab, "builtin:service.request.failure_count:splitBy()", entitySelector=CART,
                   **{"from": "now-24h", "resolution": "1m"})
    assert len(body["result"][0]["data"][0]["timestamps"]) in (1440, 1441)


def test_oneagent_keys_are_empty_and_unknown_keys_404(lab):
    body = metrics(lab, "builtin:service.errors.total.count:splitBy():value:default(0)",
                   entitySelector=CART)
    assert body["result"][0]["data"] == [] and body["result"][0]["warnings"]
    resp = lab.api.get("/api/v2/metrics/query", params={"metricSelector": "builtin:nope.count"})
    assert resp.status_code == 404 and "builtin:nope.count" in resp.json()["error"]["message"]
    bad = lab.api.get("/api/v2/metrics/query",
                      params={"metricSelector": "builtin:service.request.count:splitBy(("})
    assert bad.status_code == 400


def test_time_formats(lab):
    for value in ("now-1d/d", "2030-01-01T00:00:00Z", "2030-01-01T01:00:00.000+01:00",
                  "2030-01-01 00:00", str(int(time.time() * 1000) - 3_600_000)):
        resp = lab.api.get("/api/v2/events", params={"from": value, "to": "now+1d"
                                                     if value.startswith("2030") else "now"})
        assert resp.status_code in (200, 400), value
        if not value.startswith("2030"):
            assert resp.status_code == 200, (value, resp.text)
    assert lab.api.get("/api/v2/events", params={"from": "yesterday"}).status_code == 400


# ----- entities --------------------------------------------------------------------------------
def test_entities_need_a_selector_and_show_the_cart(lab):
    assert lab.api.get("/api/v2/entities").status_code == 400
    resp = lab.api.get("/api/v2/entities", params={
        "entitySelector": CART, "from": "now-3d", "fields": "+lastSeenTms,+firstSeenTms"})
    (entity,) = resp.json()["entities"]
    assert entity["entityId"] == CART_ID and entity["displayName"] == "cart"
    assert entity["type"] == "SERVICE" and entity["firstSeenTms"] <= entity["lastSeenTms"]


# ----- problems --------------------------------------------------------------------------------
def test_the_first_routed_redis_error_opens_the_labs_problem_on_the_cart_pod(fresh_lab):
    """As the tenant's pipeline and route make it: one failing EmptyCart, one problem, titled from
    the event name's template, on the cart's pod, described by its supportInfo and the log line."""
    from labkit.tenant import PROBLEM_TITLE

    lab = fresh_lab
    assert lab.api.get("/api/v2/problems", params={"from": "now-1d"}).json()["problems"] == []
    lab.ingest.post("/api/v2/events/ingest", json=LAB_EVENT)
    lab.fail_empties(1)
    params = {"problemSelector": 'status("open")', "from": "now-1d", "fields": "evidenceDetails"}
    (problem,) = lab.api.get("/api/v2/problems", params=params).json()["problems"]
    (pod,) = lab.cluster.list("pods", "opentelemetry.io/name=cart", None)[0]
    name = pod["metadata"]["name"]
    assert problem["title"] == PROBLEM_TITLE and problem["status"] == "OPEN"
    assert problem["endTime"] == -1 and problem["displayId"].startswith("P-")
    assert problem["impactLevel"] == "INFRASTRUCTURE" and problem["severityLevel"] == "ERROR"
    (affected,) = problem["affectedEntities"]
    pod_id = affected["entityId"]["id"]
    assert affected["name"] == name and affected["entityId"]["type"] == "CLOUD_APPLICATION_INSTANCE"
    assert pod_id.startswith("CLOUD_APPLICATION_INSTANCE-") and len(pod_id.split("-")[1]) == 16
    assert problem["rootCauseEntity"]["entityId"]["id"] == pod_id
    assert problem["k8s.cluster.name"] == ["labkit-local"]
    events = [d for d in problem["evidenceDetails"]["details"] if d["eventType"] == "ERROR_EVENT"]
    assert [e["displayName"] for e in events] == [PROBLEM_TITLE] and events[0]["entity"] == affected
    change = [d for d in problem["evidenceDetails"]["details"]
              if d.get("eventType") == "CUSTOM_CONFIGURATION"]
    assert change and change[0]["rootCauseRelevant"] is True  # the change on the service the pod runs
    # the entities API knows the pod; the classic events API has the event on it
    found = lab.api.get("/api/v2/entities", params={
        "entitySelector": 'type("CLOUD_APPLICATION_INSTANCE")', "from": "now-1h"}).json()["entities"]
    assert [(e["entityId"], e["displayName"]) for e in found] == [(pod_id, name)]
    event = [e for e in lab.api.get("/api/v2/events", params={"from": "now-1h"}).json()["events"]
             if e["eventType"] == "ERROR_EVENT"]
    assert [(e["title"], e["entityId"]["entityId"]["id"]) for e in event] == [(PROBLEM_TITLE, pod_id)]

    grail = lab.dql("fetch dt.davis.problems, from: now()-1d | filter not(dt.davis.is_duplicate)"
                    f' | filter in(affected_entity_ids, "{pod_id}")')
    (record,) = grail["records"]
    assert (record["event.status"], record["event.end"]) == ("ACTIVE", None)
    assert record["affected_entity_types"] == ["dt.entity.cloud_application_instance"]
    info = pod["metadata"]["annotations"]["supportInfo"]
    assert record["event.description"].startswith(info + " - Log line: Can't access cart storage.")
    (davis,) = lab.dql('fetch events, from: now()-1h | filter event.kind == "DAVIS_EVENT"'
                       ' | filter event.provider == "OPENPIPELINE_DATA_EXTRACTION"')["records"]
    assert davis["event.category"] == "ERROR" and davis["event.name"] == PROBLEM_TITLE
    assert davis["dt.source_entity"] == pod_id and davis["affected_entity_ids"] == [pod_id]
    assert davis["dt.entity.cloud_application_instance.name"] == name
    assert davis["dt.davis.impact_level"] == "Infrastructure" and davis["dt.davis.is_frequent_event"] is False
    assert davis["dt.davis.mute.status"] == "NOT_MUTED" and davis["k8s.pod.name"] == name
    assert {k: davis[k] for k in ("dt.owner", "dt.cost.costcenter", "deployment.release_product",
                                  "deployment.release_stage", "k8s.cluster.name")} == {
        "dt.owner": "teamA", "dt.cost.costcenter": "centre1", "deployment.release_product": "otel-demo-app",
        "deployment.release_stage": "production", "k8s.cluster.name": "labkit-local"}
    # the collector maps no annotation to dt.cost.product: its placeholder stays as written
    assert davis["dt.cost.product"] == "{dt.cost.product}"

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        closed = lab.api.get("/api/v2/problems", params={
            "problemSelector": 'status("closed")', "from": "now-1d"}).json()["problems"]
        if closed:
            break
        time.sleep(0.1)
    assert closed and closed[0]["endTime"] > closed[0]["startTime"]
    records = lab.dql("fetch dt.davis.problems, from: now()-1d")["records"]
    assert records[0]["event.status"] == "CLOSED" and records[0]["event.end"]


# ----- Grail -----------------------------------------------------------------------------------
def test_grail_finds_the_redis_error_logs(lab):
    lab.fail_empties(2)
    result = lab.dql('fetch logs, from: now()-1h | filter matchesPhrase(content, "redis") '
                     '| sort timestamp desc | limit 100')
    records = result["records"]
    assert len(records) >= 2
    assert all("Wasn't able to connect to redis" in r["content"] for r in records)
    newest = records[0]
    assert newest["loglevel"] == "ERROR" and newest["priority"] == "1"
    assert newest["timestamp"].endswith("Z") and newest["timestamp"] >= records[-1]["timestamp"]
    assert result["types"][0]["mappings"]["timestamp"] == {"type": "timestamp"}
    only = lab.dql('fetch logs | filter service.name == "cart" and loglevel == "ERROR" '
                   "| fields timestamp, content | limit 1")["records"]
    assert list(only[0]) == ["timestamp", "content"]


def test_grail_events_and_timeseries(lab):
    lab.ingest.post("/api/v2/events/ingest", json=LAB_EVENT)
    events = lab.dql('fetch events | filter event.type == "CUSTOM_CONFIGURATION" '
                     '| filter dt.entity.service.name == "cart"')["records"]
    assert events and events[0]["feature_flag.key"] == "cartFailure"
    result = lab.dql("timeseries { failed = sum(dt.service.request.failure_count), "
                     "total = sum(dt.service.request.count) }, by: { dt.service.name }, "
                     'filter: { dt.service.name == "cart" }, interval: 1m, from: now()-2h')
    (record,) = result["records"]
    assert record["interval"] == "60000000000" and record["dt.service.name"] == "cart"
    assert len(record["failed"]) == len(record["total"]) >= 120
    assert {m["fieldName"] for m in result["metadata"]["metrics"]} == {"failed", "total"}
    single = lab.dql("timeseries total = sum(dt.service.request.count), from: now()-10m")
    assert len(single["records"]) == 1


def test_grail_answers_202_then_poll_succeeds(tenant_sandbox):
    lab = tenant_sandbox(grail_delay=0.3)
    resp = lab.grail.post(QUERY + "query:execute", json={
        "query": "fetch logs | limit 1", "requestTimeoutMilliseconds": 10})
    assert resp.status_code == 202
    body = resp.json()
    assert body["state"] == "RUNNING" and body["requestToken"] and body["ttlSeconds"] > 0
    poll = lab.grail.get(QUERY + "query:poll", params={
        "request-token": body["requestToken"], "request-timeout-milliseconds": 2000})
    assert poll.status_code == 200 and poll.json()["state"] == "SUCCEEDED"
    assert len(poll.json()["result"]["records"]) == 1
    unknown = lab.grail.get(QUERY + "query:poll", params={"request-token": "bm9wZQ=="})
    assert unknown.status_code in (404, 410) and "error" in unknown.json()


def test_grail_needs_a_bearer_token_and_rejects_unsupported_dql(lab):
    url = lab.tenant_server.url + QUERY + "query:execute"
    resp = httpx.post(url, json={"query": "fetch logs"},
                      headers={"Authorization": f"Api-Token {lab.api_token}"})
    assert resp.status_code == 401 and resp.json()["error"]["code"] == 401
    bad = lab.grail.post(QUERY + "query:execute", json={"query": "fetch logs | join [fetch spans], on: {trace_id}"})
    assert bad.status_code == 400
    details = bad.json()["error"]["details"]
    assert "join" in details["errorMessage"] and details["syntaxErrorPosition"]


# ----- the whole local lab ---------------------------------------------------------------------
def test_local_lab_wires_shop_and_tenant(local_lab):
    front = httpx.Client(base_url=local_lab.frontend_server.url, timeout=10)
    api = httpx.Client(base_url=local_lab.tenant_server.url, timeout=10,
                       headers={"Authorization": f"Api-Token {local_lab.ingest_token}"})
    try:
        assert front.get("/api/products").status_code == 200
        resp = api.post("/api/v2/events/ingest", json=LAB_EVENT)
        assert resp.status_code == 201 and resp.json()["reportCount"] == 1
        read = api.get("/api/v2/metrics/query", params={"metricSelector": "builtin:service.request.count"},
                       headers={"Authorization": f"Api-Token {local_lab.api_token}"})
        assert read.status_code == 200 and read.json()["result"][0]["data"]
    finally:
        front.close()
        api.close()


def test_a_second_problem_starts_at_its_own_first_error(tenant_sandbox):
    """The event ends a quiet period after its last record, its problem with it; the next routed
    record opens a new problem from its own time."""
    lab = tenant_sandbox(problem_quiet=3.0)
    t0, now = 1_800_000_000_000, [0]
    lab.telemetry.clock = lambda: t0 + now[0]
    for at in (0, 1000, 6000, 7000):  # P-01 from the first; 4 s on it has ended; P-02 from the third
        now[0] = at
        lab.telemetry.check_problems()
        lab.collector.log_cart_redis_error("a" * 32, "b" * 16, "pod", at=t0 + at)
    first, second = lab.telemetry.problems()
    assert not first.open and second.open and first.end == t0 + 4000
    assert first.start == t0 and second.start == t0 + 6000, (first, second)
    assert first.error_count == second.error_count == 2
