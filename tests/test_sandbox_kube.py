"""The local lab's Kubernetes API, driven by the real python `kubernetes` client over loopback."""
from __future__ import annotations

import json
import threading
import time

import pytest

from kube_sandbox import KubeSandbox
from labkit.sandbox.http import Request, json_response

NS = "default"
SELECTOR = "opentelemetry.io/name=flagd"


@pytest.fixture
def lab(kube_sandbox):
    """A fresh cluster per test (tests scale and patch), its API server and a python ApiClient."""
    sandbox = kube_sandbox()
    api = sandbox.api()
    yield sandbox.cluster, sandbox.server, api
    api.close()


def core(api):
    from kubernetes import client
    return client.CoreV1Api(api)


def apps(api):
    from kubernetes import client
    return client.AppsV1Api(api)


def flags_of(cm) -> dict:
    return json.loads(cm.data["demo.flagd.json"])


def with_default(cm, flag: str, variant: str) -> str:
    doc = flags_of(cm)
    doc["flags"][flag]["defaultVariant"] = variant
    return json.dumps(doc, indent=2)


def ofrep(api, flag: str, port: str = "8016"):
    """POST flagd's OFREP through the API server's service proxy, as labkit does."""
    url = f"{api.configuration.host}/api/v1/namespaces/{NS}/services/flagd:{port}/proxy/ofrep/v1/evaluate/flags/{flag}"
    resp = api.call_api("POST", url, {"Content-Type": "application/json", "Accept": "application/json"},
                        body={"context": {}})
    resp.read()
    return resp.status, json.loads(resp.data)


def pod_events(api, until, timeout=10, **kw):
    """Watch flagd pods until `until(events)` is true; returns [(type, name, ready, terminating)]."""
    from kubernetes import watch

    seen = []
    w = watch.Watch()
    for ev in w.stream(core(api).list_namespaced_pod, NS, label_selector=SELECTOR, timeout_seconds=timeout, **kw):
        pod = ev["object"]
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        seen.append((ev["type"], pod.metadata.name, ready, pod.metadata.deletion_timestamp is not None))
        if until(seen):
            w.stop()
    return seen


def restart_flagd(api):
    """What `kubectl rollout restart` sends."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    apps(api).patch_namespaced_deployment("flagd", NS, {"spec": {"template": {"metadata": {
        "annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}}})


def wait_rolled_out(api, timeout=10):
    """Like `kubectl rollout status`: watch the deployment until the new pods are all available."""
    from kubernetes import watch

    w = watch.Watch()
    for ev in w.stream(apps(api).list_namespaced_deployment, NS, field_selector="metadata.name=flagd",
                       timeout_seconds=timeout):
        d = ev["object"]
        s = d.status
        if (s.observed_generation or 0) >= d.metadata.generation and s.updated_replicas == d.spec.replicas \
                and s.replicas == d.spec.replicas and s.available_replicas == d.spec.replicas:
            w.stop()
            return d
    raise AssertionError("flagd did not roll out in time")


# ------------------------------------------------------------------------------------- ConfigMap
def test_configmap_read_patch_and_stale_replace_conflict(lab):
    from kubernetes.client.exceptions import ConflictException

    _, _, api = lab
    v1 = core(api)
    cm = v1.read_namespaced_config_map("flagd-config", NS)
    assert flags_of(cm)["flags"]["cartFailure"]["defaultVariant"] == "off"
    assert cm.metadata.labels["app.kubernetes.io/managed-by"] == "Helm"
    stale = cm.metadata.resource_version

    patched = v1.patch_namespaced_config_map("flagd-config", NS,
                                             {"data": {"demo.flagd.json": with_default(cm, "cartFailure", "on")}})
    assert flags_of(patched)["flags"]["cartFailure"]["defaultVariant"] == "on"
    assert int(patched.metadata.resource_version) > int(stale)
    assert patched.metadata.uid == cm.metadata.uid

    cm.data["demo.flagd.json"] = with_default(cm, "cartFailure", "off")  # edit made on stale data
    with pytest.raises(ConflictException) as err:
        v1.replace_namespaced_config_map("flagd-config", NS, cm)
    assert err.value.status == 409
    assert "the object has been modified" in json.loads(err.value.body)["message"]
    assert flags_of(v1.read_namespaced_config_map("flagd-config", NS))["flags"]["cartFailure"]["defaultVariant"] == "on"


def test_configmap_create_conflict_json_patch_and_server_side_apply(lab):
    from kubernetes import client
    from kubernetes.client.exceptions import ConflictException, NotFoundException

    _, _, api = lab
    v1 = core(api)
    with pytest.raises(ConflictException) as err:
        v1.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="flagd-config")))
    assert json.loads(err.value.body)["reason"] == "AlreadyExists"

    made = v1.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="extra"),
                                                                  data={"a": "1"}))
    assert (made.kind, made.metadata.namespace, made.data) == ("ConfigMap", NS, {"a": "1"})
    after = v1.patch_namespaced_config_map("extra", NS, [{"op": "replace", "path": "/data/a", "value": "2"}])
    assert after.data == {"a": "2"}
    merged = v1.patch_namespaced_config_map("extra", NS, {"data": {"a": None, "b": "3"}},
                                            _content_type="application/merge-patch+json")
    assert merged.data == {"b": "3"}  # null deletes

    applied = v1.patch_namespaced_config_map("applied", NS, {"apiVersion": "v1", "kind": "ConfigMap",
                                                             "metadata": {"name": "applied"}, "data": {"x": "y"}},
                                             field_manager="labkit", _content_type="application/apply-patch+yaml")
    assert applied.data == {"x": "y"}  # server-side apply creates what is absent
    v1.delete_namespaced_config_map("applied", NS)
    with pytest.raises(NotFoundException) as err:
        v1.read_namespaced_config_map("applied", NS)
    assert json.loads(err.value.body)["message"] == 'configmaps "applied" not found'


def test_forbid_answers_the_real_403(lab):
    from kubernetes.client.exceptions import ForbiddenException

    cluster, _, api = lab
    cluster.forbid("patch", "configmaps")
    with pytest.raises(ForbiddenException) as err:
        core(api).patch_namespaced_config_map("flagd-config", NS, {"metadata": {"labels": {"x": "y"}}})
    assert json.loads(err.value.body)["message"] == (
        'configmaps "flagd-config" is forbidden: User "system:serviceaccount:default:labkit" cannot patch '
        'resource "configmaps" in API group "" in the namespace "default"')
    core(api).read_namespaced_config_map("flagd-config", NS)  # reading is still allowed
    cluster.allow_all()
    core(api).patch_namespaced_config_map("flagd-config", NS, {"metadata": {"labels": {"x": "y"}}})


# ------------------------------------------------------------------------------ deployment, pods
def test_deployment_scale_and_pods_validate_strictly(lab):
    _, _, api = lab
    d = apps(api).read_namespaced_deployment("flagd", NS)
    assert d.spec.selector.match_labels == {"opentelemetry.io/name": "flagd"}
    assert d.spec.template.spec.containers[0].args[:5] == ["start", "--port", "8013", "--ofrep-port", "8016"]
    assert d.spec.template.spec.init_containers[0].name == "init-config"
    assert (d.status.ready_replicas, d.status.observed_generation) == (1, d.metadata.generation)

    scale = apps(api).read_namespaced_deployment_scale("flagd", NS)
    assert (scale.spec.replicas, scale.status.replicas) == (1, 1)

    pods = core(api).list_namespaced_pod(NS, label_selector=SELECTOR).items
    assert len(pods) == 1
    pod = core(api).read_namespaced_pod(pods[0].metadata.name, NS)  # strict pydantic validation
    assert pod.metadata.name.startswith("flagd-") and len(pod.metadata.name.split("-")[-1]) == 5
    assert pod.metadata.labels["app.kubernetes.io/component"] == "flagd"
    assert pod.status.phase == "Running" and pod.status.container_statuses[0].ready
    cart = core(api).list_namespaced_pod(NS, label_selector="opentelemetry.io/name=cart").items
    assert len(cart) == 1 and cart[0].status.phase == "Running"  # the demo's other workloads run too
    assert core(api).list_namespaced_pod(NS, label_selector="opentelemetry.io/name=nope").items == []
    byname = core(api).list_namespaced_pod(NS, field_selector=f"metadata.name={pod.metadata.name}").items
    assert [p.metadata.name for p in byname] == [pod.metadata.name]
    assert {"flagd", "frontend-proxy", "cart"} <= {s.metadata.name for s in core(api).list_namespaced_service(NS).items}
    flagd = core(api).read_namespaced_service("flagd", NS)
    assert {p.name: p.port for p in flagd.spec.ports} == {"rpc": 8013, "ofrep": 8016}


def test_watch_sees_scale_down_and_up(lab):
    _, _, api = lab
    before = core(api).list_namespaced_pod(NS, label_selector=SELECTOR)
    old = before.items[0].metadata.name

    t0 = time.monotonic()
    apps(api).patch_namespaced_deployment_scale("flagd", NS, {"spec": {"replicas": 0}})
    seen = pod_events(api, lambda s: s[-1][0] == "DELETED", resource_version=before.metadata.resource_version)
    assert [e[0] for e in seen] == ["MODIFIED", "DELETED"] and seen[0][3]  # Terminating, then gone
    assert time.monotonic() - t0 < 3
    assert core(api).list_namespaced_pod(NS, label_selector=SELECTOR).items == []
    assert apps(api).read_namespaced_deployment_scale("flagd", NS).status.replicas == 0

    apps(api).patch_namespaced_deployment_scale("flagd", NS, {"spec": {"replicas": 1}})
    seen = pod_events(api, lambda s: s[-1][2])  # first watch without RV: synthetic ADDED, then MODIFIED Ready
    assert seen[0][0] == "ADDED" and seen[-1][0] == "MODIFIED" and seen[-1][2]
    assert seen[-1][1] != old


def test_watch_event_arrives_within_milliseconds(lab):
    _, _, api = lab
    rv = core(api).list_namespaced_config_map(NS).metadata.resource_version
    from kubernetes import watch

    got = []

    def patch_soon():
        time.sleep(0.2)
        got.append(time.monotonic())
        core(api).patch_namespaced_config_map("flagd-config", NS, {"metadata": {"labels": {"touched": "yes"}}})

    threading.Thread(target=patch_soon).start()
    for ev in watch.Watch().stream(core(api).list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=5):
        assert ev["type"] == "MODIFIED" and ev["object"].metadata.labels["touched"] == "yes"
        latency = time.monotonic() - got[0]
        break
    assert latency < 0.2


def test_too_old_resource_version_is_410(tmp_path):
    from kubernetes import config, watch
    from kubernetes.client.exceptions import ApiException

    sandbox = KubeSandbox(tmp_path, history=5).start()
    try:
        api = config.new_client_from_config(str(sandbox.kubeconfig))
        for i in range(6):
            core(api).patch_namespaced_config_map("flagd-config", NS, {"metadata": {"labels": {"n": str(i)}}})
        with pytest.raises(ApiException) as err:
            list(watch.Watch().stream(core(api).list_namespaced_pod, NS, resource_version="1", timeout_seconds=2))
        assert err.value.status == 410 and "too old resource version" in err.value.reason
    finally:
        sandbox.stop()


def test_deleted_pod_is_replaced_by_the_deployment(lab):
    _, _, api = lab
    name = core(api).list_namespaced_pod(NS, label_selector=SELECTOR).items[0].metadata.name
    gone = core(api).delete_namespaced_pod(name, NS)
    assert gone.metadata.deletion_timestamp is not None
    seen = pod_events(api, lambda s: any(e[2] and e[1] != name for e in s) and any(e[0] == "DELETED" for e in s))
    assert ("DELETED", name) in [(e[0], e[1]) for e in seen]


def test_stop_ends_watch_streams(lab):
    from kubernetes import watch

    cluster, _, api = lab
    threading.Timer(0.3, cluster.stop).start()
    t0 = time.monotonic()
    events = list(watch.Watch().stream(core(api).list_namespaced_pod, NS, label_selector=SELECTOR,
                                       timeout_seconds=30))
    assert len(events) == 1 and time.monotonic() - t0 < 5


# ------------------------------------------------------------------------------- flagd and proxy
def test_flagd_serves_what_it_loaded_at_start_until_restarted(lab):
    cluster, _, api = lab
    assert ofrep(api, "cartFailure") == (200, {"key": "cartFailure", "value": False, "variant": "off",
                                               "reason": "STATIC", "metadata": {}})
    cm = core(api).read_namespaced_config_map("flagd-config", NS)
    core(api).patch_namespaced_config_map("flagd-config", NS,
                                          {"data": {"demo.flagd.json": with_default(cm, "cartFailure", "on")}})
    assert ofrep(api, "cartFailure")[1]["value"] is False  # the running pod keeps its copy
    assert cluster.flagd_value("cartFailure")["variant"] == "off"

    restart_flagd(api)
    wait_rolled_out(api)
    assert ofrep(api, "cartFailure")[1]["value"] is True
    assert cluster.flagd_value("cartFailure") == {"key": "cartFailure", "value": True, "variant": "on",
                                                  "reason": "STATIC"}
    assert cluster.flagd_value("nope") is None
    status, body = ofrep(api, "nope")
    assert status == 404 and body["errorCode"] == "FLAG_NOT_FOUND"


def test_no_ready_flagd_means_503_no_endpoints(lab):
    cluster, _, api = lab
    apps(api).patch_namespaced_deployment_scale("flagd", NS, {"spec": {"replicas": 0}})
    # The controllers act after the scale returns (as in a real cluster); once the pod is
    # Terminating it is no endpoint any more.
    deadline = time.monotonic() + 10
    while (answer := ofrep(api, "cartFailure"))[0] == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    status, body = answer
    assert status == 503 and body["message"] == 'no endpoints available for service "flagd"'
    assert cluster.flagd_value("cartFailure") is None


def test_malformed_flag_file_starts_a_ready_flagd_that_serves_no_flags(lab):
    # flagd logs the SetState error and runs on with an empty store (runtime.updateAndEmit): the
    # rollout goes through and every flag is unknown.
    cluster, _, api = lab
    core(api).patch_namespaced_config_map("flagd-config", NS, {"data": {"demo.flagd.json": "{not json"}})
    old = core(api).list_namespaced_pod(NS, label_selector=SELECTOR).items[0].metadata.name
    restart_flagd(api)
    wait_rolled_out(api)
    names = [p.metadata.name for p in core(api).list_namespaced_pod(NS, label_selector=SELECTOR).items
             if not p.metadata.deletion_timestamp]
    assert old not in names
    status, body = ofrep(api, "cartFailure")
    assert status == 404 and body["errorCode"] == "FLAG_NOT_FOUND"
    assert cluster.flagd_value("cartFailure") is None


def test_missing_flag_file_crash_loops_and_old_pod_keeps_serving(lab):
    cluster, _, api = lab
    core(api).patch_namespaced_config_map("flagd-config", NS, {"data": {"demo.flagd.json": None}})
    old = core(api).list_namespaced_pod(NS, label_selector=SELECTOR).items[0].metadata.name
    restart_flagd(api)
    seen = pod_events(api, lambda s: any(e[1] != old and e[0] == "MODIFIED" for e in s), timeout=5)
    new = [e for e in seen if e[1] != old][-1]
    assert not new[2]
    pod = core(api).read_namespaced_pod(new[1], NS)
    assert pod.status.container_statuses[0].state.waiting.reason == "CrashLoopBackOff"
    assert cluster.flagd_value("cartFailure")["value"] is False  # the rollout waits: the old pod stays
    assert old in [p.metadata.name for p in core(api).list_namespaced_pod(NS).items]


def test_registered_service_is_reached_through_the_proxy(lab):
    cluster, _, api = lab
    calls = []

    def shop(req: Request):
        calls.append(req)
        return json_response({"path": req.path, "query": req.query, "body": req.json()}, 201)

    cluster.register_service("frontend-proxy", 8080, shop)
    url = f"{api.configuration.host}/api/v1/namespaces/{NS}/services/frontend-proxy:8080/proxy/api/cart?x=1"
    resp = api.call_api("POST", url, {"Content-Type": "application/json"}, body={"userId": "u"})
    resp.read()
    assert resp.status == 201
    assert json.loads(resp.data) == {"path": "/api/cart", "query": {"x": "1"}, "body": {"userId": "u"}}


def test_error_statuses(lab):
    import urllib.request
    from urllib.error import HTTPError

    _, server, _ = lab

    def call(method, path, body=b"", ctype=None):
        req = urllib.request.Request(server.url + path, data=body or None, method=method)
        if ctype:
            req.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except HTTPError as e:
            return e.code, json.loads(e.read())

    assert call("GET", "/apis/batch/v1/jobs")[0] == 404
    status, body = call("GET", "/apis/apps/v1/namespaces/default/deployments/nope")
    assert (status, body["message"], body["details"]["group"]) == (404, 'deployments.apps "nope" not found', "apps")
    status, body = call("POST", "/api/v1/namespaces/default/configmaps", b"\x0a\x00",
                        "application/vnd.kubernetes.protobuf")
    assert status == 415 and body["reason"] == "UnsupportedMediaType"
    status, body = call("PATCH", "/apis/apps/v1/namespaces/default/deployments/flagd/scale",
                        b'{"spec":{"replicas":-1}}', "application/merge-patch+json")
    assert status == 422 and body["reason"] == "Invalid"
    assert call("GET", "/version")[1]["minor"] == "32"
    assert call("GET", "/openapi/v2")[0] == 404
    status, table = call("GET", "/api/v1/namespaces/default/pods")
    assert status == 200 and table["kind"] == "PodList"


def test_a_fresh_cluster_has_the_events_of_its_start(lab):
    """`kubectl get events` and `describe pod` right after the start: what a fresh install recorded."""
    _, _, api = lab
    events = core(api).list_namespaced_event(NS).items
    reasons: dict[tuple[str, str], set[str]] = {}
    for e in events:
        reasons.setdefault((e.involved_object.kind, e.involved_object.name), set()).add(e.reason)
    for d in apps(api).list_namespaced_deployment(NS).items:
        assert "ScalingReplicaSet" in reasons[("Deployment", d.metadata.name)], d.metadata.name
    for rs in apps(api).list_namespaced_replica_set(NS).items:
        assert "SuccessfulCreate" in reasons[("ReplicaSet", rs.metadata.name)], rs.metadata.name
    pods = core(api).list_namespaced_pod(NS).items
    assert len(pods) > 1
    for p in pods:
        assert {"Scheduled", "Pulled", "Created", "Started"} <= reasons[("Pod", p.metadata.name)], p.metadata.name
    flagd = core(api).list_namespaced_pod(NS, label_selector=SELECTOR).items[0]
    # what `kubectl describe pod` asks for its Events: block
    own = core(api).list_namespaced_event(NS, field_selector=(
        f"involvedObject.name={flagd.metadata.name},involvedObject.namespace={NS},"
        f"involvedObject.uid={flagd.metadata.uid}")).items
    assert [e.message for e in own if e.reason == "Started"] == [
        "Started container init-config", "Started container flagd"]
    assert own[0].reason == "Scheduled" and own[0].source.component == "default-scheduler"
