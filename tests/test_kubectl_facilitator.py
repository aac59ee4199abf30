"""What a facilitator types beyond the lab page, with the real kubectl and the python client:
logs, events, ReplicaSets and rollouts, the demo's workloads, selectors, auth, health, validation,
exec and port-forward, each answered as a cluster answers it."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from kube_sandbox import KubeSandbox
from labkit.sandbox import Timings
from labkit.sandbox.http import json_response

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed; these run the real binary")
NS = "default"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One cluster for the whole module (tests that change it restore what they change)."""
    tmp = tmp_path_factory.mktemp("facilitator")
    sandbox = KubeSandbox(tmp).start()
    sandbox.cluster.register_service("frontend-proxy", 8080,
                                     lambda req: json_response({"shop": req.path, "method": req.method}))
    env = dict(os.environ, KUBECONFIG=str(sandbox.kubeconfig), HOME=str(tmp))

    def run(*args, timeout=20) -> subprocess.CompletedProcess:
        return subprocess.run([KUBECTL or "kubectl", "--cache-dir", str(tmp / "cache"), *args], env=env,
                              capture_output=True, text=True, timeout=timeout)

    run.sandbox, run.env, run.tmp = sandbox, env, tmp
    yield run
    sandbox.stop()


def api(lab):
    from kubernetes import config
    return config.new_client_from_config(str(lab.sandbox.kubeconfig))


def flagd_pod(lab) -> str:
    pods, _ = lab.sandbox.cluster.list("pods", "opentelemetry.io/name=flagd", None)
    return next(p["metadata"]["name"] for p in pods if lab.sandbox.cluster._is_ready(p))


# ------------------------------------------------------------------------------------------ logs
@needs_kubectl
def test_logs_of_flagd_its_init_container_and_the_demo(lab):
    r = lab("logs", "deploy/flagd")
    assert r.returncode == 0, r.stderr
    assert "starting sync from ./etc/flagd/demo.flagd.json" in r.stdout
    assert "ofrep service listening at 8016" in r.stdout and "flagd version: v0.16.1" in r.stdout
    assert lab("logs", "deploy/flagd", "-c", "init-config").stdout == "demo.flagd.json\n"
    r = lab("logs", "deploy/cart", "--tail=1", "--timestamps")
    assert len(r.stdout.splitlines()) == 1 and r.stdout[:4].isdigit() and "Z " in r.stdout
    r = lab("logs", "deploy/flagd", "--previous")
    assert r.returncode == 1 and 'previous terminated container "flagd" in pod' in r.stderr
    r = lab("logs", "deploy/flagd", "-c", "nope")
    assert "container nope is not valid for pod" in r.stderr
    r = lab("logs", "-l", "opentelemetry.io/name in (flagd,cart)", "--prefix", "--tail=1")
    assert "[pod/flagd-" in r.stdout and "[pod/cart-" in r.stdout


def test_log_follow_streams_new_lines_and_a_waiting_container_is_400(lab):
    from kubernetes import client, watch

    core = client.CoreV1Api(api(lab))
    pods = core.list_namespaced_pod(NS, label_selector="opentelemetry.io/name=load-generator").items
    name = pods[0].metadata.name
    cluster = lab.sandbox.cluster
    stream = watch.Watch().stream(core.read_namespaced_pod_log, name, NS, follow=True, _request_timeout=10)
    first = next(stream)  # the stream is open: a line written now arrives on it
    with cluster._cond:
        cluster.logs.write(pods[0].metadata.uid, "load-generator", ["a new line"])
    lines = [first] + [next(stream) for _ in range(3)]
    assert "a new line" in lines
    with cluster._cond:  # a pod still initializing: its container's log is not there yet
        rs = next(o for n, o in cluster._objects["replicasets"].items() if n.startswith("flagd-")
                  and o["spec"]["replicas"])
        pod = cluster._create_pod(rs)
    with pytest.raises(client.ApiException) as err:
        core.read_namespaced_pod_log(pod["metadata"]["name"], NS)
    body = json.loads(err.value.body)
    assert (err.value.status, body["reason"]) == (400, "BadRequest")
    assert body["message"] == (f'container "flagd" in pod "{pod["metadata"]["name"]}" is waiting to start: '
                               "PodInitializing")
    with pytest.raises(client.ApiException) as err:
        core.read_namespaced_pod_log("nope", NS)
    assert err.value.status == 404


# ------------------------------------------------------------------------------- events, rollouts
@needs_kubectl
def test_right_after_the_start_events_and_describe_are_not_empty(tmp_path):
    """A fresh cluster (its own, before any test changed it): what the install recorded."""
    sandbox = KubeSandbox(tmp_path).start()
    try:
        env = dict(os.environ, KUBECONFIG=str(sandbox.kubeconfig), HOME=str(tmp_path))
        kubectl = lambda *a: subprocess.run([KUBECTL, *a], env=env, capture_output=True, text=True,  # noqa: E731
                                            timeout=20)
        events = kubectl("get", "events")
        assert events.returncode == 0 and "No resources found" not in events.stdout + events.stderr
        for words in ("ScalingReplicaSet", "Scaled up replica set flagd-", "SuccessfulCreate",
                      "Successfully assigned default/flagd-", 'Container image "ghcr.io/open-feature/flagd'):
            assert words in events.stdout, words
        pod = kubectl("get", "pods", "-l", "opentelemetry.io/name=flagd", "-o", "name").stdout.split()[0]
        described = kubectl("describe", pod).stdout
        block = described.split("Events:", 1)[1]
        assert "<none>" not in block
        reasons = [line.split()[1] for line in block.splitlines()[3:] if line.strip()]
        assert reasons == ["Scheduled"] + ["Pulled", "Created", "Started"] * 2, block  # init, then flagd
    finally:
        sandbox.stop()


@needs_kubectl
def test_rollout_writes_events_and_replicasets_history_and_undo(lab):
    assert lab("rollout", "restart", "deploy/flagd").returncode == 0
    assert lab("rollout", "status", "deploy/flagd", "--timeout=20s").returncode == 0
    def revisions() -> list[str]:
        r = lab("rollout", "history", "deploy/flagd")
        return [line.split()[0] for line in r.stdout.splitlines()[2:] if line.strip()]

    before = revisions()
    assert before[-1] == str(len(before)) and len(before) >= 2
    r = lab("rollout", "undo", "deploy/flagd")
    assert r.stdout.strip() == "deployment.apps/flagd rolled back", r.stderr
    assert lab("rollout", "status", "deploy/flagd", "--timeout=20s").returncode == 0
    after = revisions()  # the previous template came back as the next revision
    assert after[-1] == str(int(before[-1]) + 1) and before[-2] not in after
    r = lab("describe", "deploy", "flagd")
    assert "NewReplicaSet:" in r.stdout and "ScalingReplicaSet" in r.stdout
    r = lab("events", "--for", "deploy/flagd")
    assert "Scaled up replica set flagd-" in r.stdout
    r = lab("get", "events")
    assert all(word in r.stdout for word in ("Scheduled", "Pulled", "Created", "Started", "Killing",
                                             "SuccessfulCreate", "SuccessfulDelete"))
    pods = lab("get", "pods", "-l", "opentelemetry.io/name=flagd", "-o", "json")
    pod = json.loads(pods.stdout)["items"][0]
    assert "pod-template-hash" in pod["metadata"]["labels"]
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"


def test_events_in_both_groups_and_scale_down_removes_the_newest(lab):
    from kubernetes import client

    a = api(lab)
    cluster = lab.sandbox.cluster
    core, events_v1 = client.CoreV1Api(a), client.EventsV1Api(a)
    assert core.list_namespaced_event(NS).items
    assert events_v1.list_namespaced_event(NS).items[0].regarding.kind
    scale = client.AppsV1Api(a)
    scale.patch_namespaced_deployment_scale("cart", NS, {"spec": {"replicas": 2}})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and client.AppsV1Api(a).read_namespaced_deployment_status(
            "cart", NS).status.ready_replicas != 2:
        time.sleep(0.05)
    pods = sorted(core.list_namespaced_pod(NS, label_selector="opentelemetry.io/name=cart").items,
                  key=lambda p: cluster._born[p.metadata.uid])
    scale.patch_namespaced_deployment_scale("cart", NS, {"spec": {"replicas": 1}})
    # The ReplicaSet controller acts after the scale returns (as a real apiserver's does): await it.
    deadline = time.monotonic() + 10
    newest = core.read_namespaced_pod(pods[-1].metadata.name, NS)
    while newest.metadata.deletion_timestamp is None and time.monotonic() < deadline:
        time.sleep(0.05)
        newest = core.read_namespaced_pod(pods[-1].metadata.name, NS)
    assert newest.metadata.deletion_timestamp is not None
    assert core.read_namespaced_pod(pods[0].metadata.name, NS).metadata.deletion_timestamp is None


# ------------------------------------------------------------------- the demo, nodes, endpoints
@needs_kubectl
def test_the_demo_namespaces_nodes_and_endpoints(lab):
    r = lab("get", "pods")
    names = {line.split()[0].rsplit("-", 2)[0] for line in r.stdout.splitlines()[1:]}
    assert {"cart", "checkout", "frontend", "frontend-proxy", "load-generator", "flagd"} <= names
    namespaces = {line.split()[0]: line.split()[1] for line in lab("get", "ns").stdout.splitlines()[1:]}
    assert namespaces["default"] == namespaces["kube-system"] == "Active"
    r = lab("get", "nodes")
    assert r.stdout.splitlines()[1].split()[:3] == ["labkit-local-control-plane", "Ready", "control-plane"]
    assert ":8016" in lab("get", "endpoints", "flagd").stdout
    assert "Endpoints:                10.244." in lab("describe", "svc", "flagd").stdout
    r = lab("get", "all")
    assert "replicaset.apps/flagd-" in r.stdout and "service/flagd" in r.stdout


# ------------------------------------------------------------ selectors, auth, health, validation
@needs_kubectl
def test_selectors_auth_health_and_validation(lab):
    r = lab("get", "pods", "-l", "opentelemetry.io/name in (flagd)", "-o", "name")
    assert r.stdout.startswith("pod/flagd-") and len(r.stdout.split()) == 1
    assert "pod/flagd-" not in lab("get", "pods", "-l", "opentelemetry.io/name notin (flagd)", "-o", "name").stdout
    r = lab("get", "pods", "-l", "app in (flagd")
    assert r.returncode == 1 and "unable to parse requirement: found '', expected: ',' or ')'" in r.stderr
    assert lab("auth", "can-i", "patch", "configmaps").stdout.strip() == "yes"
    lab.sandbox.cluster.forbid("patch", "configmaps")
    try:
        assert lab("auth", "can-i", "patch", "configmaps").stdout.strip() == "no"
    finally:
        lab.sandbox.cluster.allow_all()
    assert "system:serviceaccount:default:labkit" in lab("auth", "whoami").stdout
    assert lab("get", "--raw", "/readyz").stdout == "ok"
    bad = lab.tmp / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\nfoo: 1\ndata: {a: b}\n")
    r = lab("apply", "-f", str(bad))
    assert 'strict decoding error: unknown field "foo"' in r.stderr
    r = lab("create", "configmap", "Bad_Name")
    assert 'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123' in r.stderr
    r = lab("create", "configmap", "from-kubectl", "--from-literal=a=b")  # protobuf on the wire
    assert r.stdout.strip() == "configmap/from-kubectl created", r.stderr
    assert lab("delete", "cm", "from-kubectl").returncode == 0
    r = lab("exec", "deploy/flagd", "--", "sh")
    assert "the local lab runs no containers" in r.stderr and "executable file not found" in r.stderr


def test_python_client_status_proxy_selectors_and_a_wrong_token(lab):
    from kubernetes import client

    a = api(lab)
    apps, core = client.AppsV1Api(a), client.CoreV1Api(a)
    assert apps.read_namespaced_deployment_status("flagd", NS).status.available_replicas == 1
    body = core.connect_post_namespaced_service_proxy_with_path(
        "flagd:8016", NS, "ofrep/v1/evaluate/flags/cartFailure", _preload_content=False)
    assert json.loads(body.data)["key"] == "cartFailure"
    assert len(core.list_namespaced_pod(NS, label_selector="opentelemetry.io/name in (flagd,cart)").items) >= 2
    with pytest.raises(client.ApiException) as err:
        core.list_namespaced_pod(NS, label_selector="a b")
    assert err.value.status == 400
    req = urllib.request.Request(lab.sandbox.server.url + "/api/v1/namespaces/default/pods",
                                 headers={"Authorization": "Bearer not-the-token"})
    with pytest.raises(urllib.error.HTTPError) as http_err:
        urllib.request.urlopen(req, timeout=5)
    assert http_err.value.code == 401 and json.loads(http_err.value.read())["reason"] == "Unauthorized"


# ----------------------------------------------------------------------------------- port-forward
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, path: str, body: bytes = b'{"context":{}}') -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@needs_kubectl
@pytest.mark.parametrize("target, remote, path", [("svc/frontend-proxy", 8080, "/api/cart"),
                                                  ("svc/flagd", 8016, "/ofrep/v1/evaluate/flags/cartFailure")])
def test_port_forward_carries_tcp_and_ends_on_ctrl_c(lab, target, remote, path):
    port = _free_port()
    proc = subprocess.Popen([KUBECTL, "--cache-dir", str(lab.tmp / "cache"), "port-forward", target,
                             f"{port}:{remote}"], env=lab.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert "Forwarding from 127.0.0.1" in proc.stdout.readline()
        for _ in range(3):  # several connections through one forward
            status, body = _post(port, path)
            assert status == 200, body
        assert json.loads(body) == ({"shop": path, "method": "POST"} if remote == 8080 else
                                    json.loads(body) | {"key": "cartFailure"})
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0


# --------------------------------------------------------------------------------------- lab.env
@needs_kubectl
def test_the_lab_page_runs_verbatim_from_lab_env(local_lab, tmp_path):
    """`source lab.env` and the page's own command line: $CODESPACE_VSCODE_FOLDER holds flags.yaml."""
    from kubernetes import client, config

    # The page's flags.yaml is not the release's own ConfigMap: put the session's lab back afterwards.
    core = client.CoreV1Api(config.new_client_from_config(str(local_lab.kubeconfig_path)))
    before = core.read_namespaced_config_map("flagd-config", "default").data
    env_file = local_lab.state_dir / "lab.env"
    try:
        r = subprocess.run(["bash", "-c", f". {env_file} && kubectl --cache-dir {tmp_path} apply -f "
                                          "$CODESPACE_VSCODE_FOLDER/flags.yaml"],
                           capture_output=True, text=True, timeout=30, env=dict(os.environ, HOME=str(tmp_path)))
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() in ("configmap/flagd-config configured", "configmap/flagd-config unchanged")
        applied = core.read_namespaced_config_map("flagd-config", "default").data["demo.flagd.json"]
        assert '"on": true' in applied  # the lab page's cartFailure, not the release's
    finally:
        core.patch_namespaced_config_map("flagd-config", "default", {"data": before})
