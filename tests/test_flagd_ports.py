"""flagd's other ports in the local lab, as flagd v0.16 serves them: typed evaluation on 8013 (Connect
JSON through the API server's proxies; gRPC), what clients written by others read from them.

The expected answers are written out from flagd's Go source (core/pkg/evaluator/json.go `resolve[T]`,
flag_evaluator_v1.go/_v2.go, errFormat), not computed by the code under test.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
from contextlib import contextmanager

import grpc
import httpx
import pytest
from openfeature import api as openfeature
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import CacheType, ResolverType
from openfeature.flag_evaluation import ErrorCode
from openfeature.schemas.protobuf.flagd.evaluation.v1 import evaluation_pb2 as e1
from openfeature.schemas.protobuf.flagd.evaluation.v1 import evaluation_pb2_grpc as g1
from openfeature.schemas.protobuf.flagd.evaluation.v2 import evaluation_pb2 as e2
from openfeature.schemas.protobuf.flagd.evaluation.v2 import evaluation_pb2_grpc as g2
from openfeature.schemas.protobuf.flagd.sync.v1 import sync_pb2, sync_pb2_grpc

from kube_sandbox import KubeSandbox
from labkit import releases
from labkit.sandbox.flagd.evaluate import FlagSet
from labkit.sandbox.flagd.process import FlagdProcess

NS = "default"
V1, V2 = "flagd.evaluation.v1.Service", "flagd.evaluation.v2.Service"
KINDS = ("Boolean", "String", "Float", "Int", "Object")
MISMATCH = (400, {"code": "invalid_argument", "message": "Type mismatch error"})


def _flag(variants, default="v", **more):
    return {"state": "ENABLED", "variants": variants, "defaultVariant": default, **more}


# one flag per variant type, and the shapes flagd treats apart
TYPED_FILE = {"flags": {
    "aBool": _flag({"v": True}),
    "aString": _flag({"v": "blue"}),
    "aFloat": _flag({"v": 0.1}),
    "aWhole": _flag({"v": 7}),
    "aFraction": _flag({"v": 7.9}),
    "anObject": _flag({"v": {"n": 3, "color": "blue"}}),
    "aList": _flag({"v": [1, 2]}),
    "disabled": {"state": "DISABLED", "variants": {"on": 1, "off": 0}, "defaultVariant": "on",
                 "metadata": {"owner": "cart"}},
    "noDefault": {"state": "ENABLED", "variants": {"a": 1}},
    "targeted": _flag({"v": 0.5, "gold": 1}, targeting={"if": [{"==": [{"var": "tier"}, "gold"]}, "gold", None]}),
    "brokenRule": _flag({"v": 1}, targeting={"if": [True, "missing", "v"]}),
}}
# flagd's answer to a Resolve<Kind> of each flag: Go's type assertion on the JSON-decoded value
# (numbers are float64; int64(float64) truncates; protojson writes int64 as a string)
OK = {
    ("aBool", "Boolean"): True, ("aString", "String"): "blue",
    ("aFloat", "Float"): 0.1, ("aFloat", "Int"): "0",
    ("aWhole", "Float"): 7, ("aWhole", "Int"): "7",
    ("aFraction", "Float"): 7.9, ("aFraction", "Int"): "7",
    ("anObject", "Object"): {"color": "blue", "n": 3},
}


def manifest(doc: dict) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "flagd-config"},
                       "data": {"demo.flagd.json": json.dumps(doc, indent=2)}})


@pytest.fixture(scope="module")
def typed_lab(tmp_path_factory):
    sandbox = KubeSandbox(tmp_path_factory.mktemp("typed"), flags_yaml=manifest(TYPED_FILE)).start()
    assert sandbox.wait_serving("aBool")
    yield sandbox
    sandbox.stop()


@pytest.fixture(scope="module")
def release_lab(tmp_path_factory):
    """A lab whose flagd serves demo 3.0.0's own flag file (cartFailure: 0 ... 1)."""
    sandbox = KubeSandbox(tmp_path_factory.mktemp("release"),
                          flags_yaml=releases.get("3.0.0").configmap_yaml()).start()
    assert sandbox.wait_serving()
    yield sandbox
    sandbox.stop()


def connect(sandbox, procedure: str, body, via: str = "services/flagd:8013", ctype="application/json",
            method: str = "POST"):
    """A Connect unary call through the API server's proxy, as curl or `kubectl get --raw` sends it."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = httpx.request(method, f"{sandbox.server.url}/api/v1/namespaces/{NS}/{via}/proxy/{procedure}",
                         content=content, timeout=10,
                         headers={"Content-Type": ctype, "Authorization": "Bearer local-lab"})
    return resp.status_code, (resp.json() if resp.headers.get("content-type") == "application/json" else resp.text)


@pytest.mark.parametrize("service", [V2, V1])
def test_every_typed_read_of_every_variant_type_answers_as_flagds_go(typed_lab, service):
    for key in ("aBool", "aString", "aFloat", "aWhole", "aFraction", "anObject", "aList"):
        for kind in KINDS:
            got = connect(typed_lab, f"{service}/Resolve{kind}", {"flagKey": key, "context": {}})
            if (key, kind) in OK:
                want = {"value": OK[key, kind], "reason": "STATIC", "variant": "v", "metadata": {}}
                assert got == (200, want), (service, key, kind)
            else:  # a list is no object for flagd (map only); a bool is no number
                assert got == MISMATCH, (service, key, kind)


def test_the_carts_float_read_of_a_boolean_flag_is_a_type_mismatch(release_lab):
    """Demo 3.0.0's cart reads cartFailure as a double: the release's own file answers; the lab page's
    boolean `on/off` would not (flagd's resolve[float64] refuses `true`, unlike OpenFeature's Python core)."""
    assert connect(release_lab, f"{V2}/ResolveFloat", {"flagKey": "cartFailure", "context": {}}) == (
        200, {"value": 0, "reason": "STATIC", "variant": "off", "metadata": {}})
    assert connect(release_lab, f"{V2}/ResolveBoolean", {"flagKey": "cartFailure"}) == MISMATCH
    assert connect(release_lab, f"{V2}/ResolveFloat", {"flagKey": "noSuchFlag"}) == (
        404, {"code": "not_found", "message": "Flag not found"})


def test_disabled_fallback_and_errors_differ_between_v1_and_v2_as_in_flagd(typed_lab):
    # v2: reason only (no value, no variant); v1: the type's zero and an empty variant
    assert connect(typed_lab, f"{V2}/ResolveFloat", {"flagKey": "disabled"}) == (
        200, {"reason": "DISABLED", "metadata": {"owner": "cart"}})
    assert connect(typed_lab, f"{V1}/ResolveFloat", {"flagKey": "disabled"}) == (
        200, {"value": 0, "reason": "DISABLED", "variant": "", "metadata": {"owner": "cart"}})
    assert connect(typed_lab, f"{V1}/ResolveObject", {"flagKey": "disabled"}) == (
        200, {"value": {}, "reason": "DISABLED", "variant": "", "metadata": {"owner": "cart"}})
    # no default variant: v2 answers the caller's default as DEFAULT, v1 says FLAG_NOT_FOUND
    assert connect(typed_lab, f"{V2}/ResolveInt", {"flagKey": "noDefault"}) == (
        200, {"reason": "DEFAULT", "metadata": {}})
    assert connect(typed_lab, f"{V1}/ResolveInt", {"flagKey": "noDefault"}) == (
        404, {"code": "not_found", "message": "Flag not found"})
    # targeting: the rule's variant, else the default; a variant the flag lacks is GENERAL (Unknown)
    assert connect(typed_lab, f"{V2}/ResolveFloat", {"flagKey": "targeted", "context": {"tier": "gold"}}) == (
        200, {"value": 1, "reason": "TARGETING_MATCH", "variant": "gold", "metadata": {}})
    assert connect(typed_lab, f"{V2}/ResolveFloat", {"flagKey": "targeted"}) == (
        200, {"value": 0.5, "reason": "DEFAULT", "variant": "v", "metadata": {}})
    assert connect(typed_lab, f"{V2}/ResolveFloat", {"flagKey": "brokenRule"}) == (
        500, {"code": "unknown", "message": "General error"})


def test_v1_resolve_all_reads_each_flag_as_its_default_variants_type(typed_lab):
    status, body = connect(typed_lab, f"{V1}/ResolveAll", {"context": {}})
    assert status == 200 and body["metadata"] == {}
    flags = body["flags"]
    assert list(flags) == sorted(flags)  # protojson writes map keys sorted
    assert flags["aBool"] == {"reason": "STATIC", "variant": "v", "boolValue": True, "metadata": {}}
    assert flags["aWhole"] == {"reason": "STATIC", "variant": "v", "doubleValue": 7, "metadata": {}}
    assert list(flags["anObject"]["objectValue"].items()) == [("color", "blue"), ("n", 3)]  # Struct keys sorted
    assert flags["disabled"] == {"reason": "DISABLED", "variant": "", "doubleValue": 0,
                                 "metadata": {"owner": "cart"}}
    assert "aList" not in flags and "noDefault" not in flags  # v1 skips what has no bool/string/number/map default
    assert connect(typed_lab, f"{V2}/ResolveAll", {})[0] == 404  # v2 has no ResolveAll


def test_connect_answers_through_the_pod_proxy_and_refuses_what_connect_go_refuses(release_lab):
    pod = _flagd_pod(release_lab)
    assert connect(release_lab, f"{V2}/ResolveFloat", {"flagKey": "cartFailure"}, via=f"pods/{pod}:8013")[0] == 200
    assert connect(release_lab, f"{V2}/ResolveFloat", {"flagKey": "cartFailure"}, method="GET")[0] == 405
    assert connect(release_lab, f"{V2}/ResolveFloat", {"flagKey": "cartFailure"}, ctype="text/plain")[0] == 415
    status, body = connect(release_lab, f"{V2}/ResolveFloat", b"")
    assert (status, body["code"]) == (400, "invalid_argument") and "zero-length payload" in body["message"]
    assert connect(release_lab, f"{V2}/NoSuchMethod", {})[0] == 404


def test_event_stream_over_connect_through_the_service_proxy(release_lab):
    """A Connect server stream (enveloped JSON), as flagd's web provider subscribes over HTTP/1.1."""
    url = (f"{release_lab.server.url}/api/v1/namespaces/{NS}/services/flagd:8013/proxy/{V1}/EventStream")
    headers = {"Authorization": "Bearer local-lab", "Content-Type": "application/connect+json"}
    with httpx.stream("POST", url, content=struct.pack(">BI", 0, 2) + b"{}", headers=headers, timeout=5) as resp:
        assert (resp.status_code, resp.headers["content-type"]) == (200, "application/connect+json")
        received = b""
        for chunk in resp.iter_raw():
            received += chunk
            if len(received) >= 5 and len(received) >= 5 + struct.unpack(">I", received[1:5])[0]:
                break
    size = struct.unpack(">I", received[1:5])[0]
    assert received[0] == 0 and json.loads(received[5:5 + size]) == {"type": "provider_ready", "data": {}}
    broken = httpx.post(url, content=b"{}", headers=headers)  # no envelope: the error ends the stream
    assert broken.status_code == 200 and broken.content[0] == 2
    assert json.loads(broken.content[5:])["error"]["code"] == "invalid_argument"
    assert connect(release_lab, f"{V1}/EventStream", {})[0] == 415  # a unary content type


def _flagd_pod(sandbox) -> str:
    pods, _ = sandbox.cluster.list("pods", "opentelemetry.io/name=flagd", None)
    return next(p["metadata"]["name"] for p in pods if sandbox.cluster.pod_flags(p["metadata"]["name"]))


# ---- gRPC: the stubs OpenFeature's flagd provider ships, and the provider itself ---------------------
needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None,
                                   reason="kubectl is not installed; this runs the real `kubectl port-forward`")


def target(address) -> str:
    return f"{address[0]}:{address[1]}"


def test_every_typed_read_over_grpc_answers_as_over_connect(typed_lab):
    with grpc.insecure_channel(target(typed_lab.cluster.flagd_rpc_address())) as channel:
        stub = g2.ServiceStub(channel)
        for key in ("aBool", "aString", "aFloat", "aWhole", "aFraction", "anObject", "aList"):
            for kind in KINDS:
                call = getattr(stub, f"Resolve{kind}")
                request = getattr(e2, f"Resolve{kind}Request")(flag_key=key)
                if (key, kind) in OK:
                    got = call(request)
                    value = got.value if kind != "Object" else dict(got.value)
                    want = OK[key, kind]
                    assert (value, got.variant, got.reason) == (
                        int(want) if kind == "Int" else want, "v", "STATIC"), (key, kind)
                else:
                    with pytest.raises(grpc.RpcError) as err:
                        call(request)
                    assert (err.value.code(), err.value.details()) == (
                        grpc.StatusCode.INVALID_ARGUMENT, "Type mismatch error"), (key, kind)
        with pytest.raises(grpc.RpcError) as err:
            stub.ResolveFloat(e2.ResolveFloatRequest(flag_key="noSuchFlag"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        disabled = stub.ResolveFloat(e2.ResolveFloatRequest(flag_key="disabled"))
        assert (disabled.reason, disabled.HasField("value"), disabled.HasField("variant")) == ("DISABLED", False, False)
        everything = g1.ServiceStub(channel).ResolveAll(e1.ResolveAllRequest())
        assert everything.flags["aFloat"].double_value == 0.1 and everything.flags["disabled"].reason == "DISABLED"


def test_event_stream_says_provider_ready_then_keep_alive_and_ends_when_flagd_stops():
    process = FlagdProcess("flagd-test", keep_alive=0.2).start()
    process.load(FlagSet(json.loads(releases.get("3.0.0").flags_json())))
    try:
        with grpc.insecure_channel(target(process.address(8013))) as channel:
            for stub, request in ((g2.ServiceStub(channel), e2.EventStreamRequest()),
                                  (g1.ServiceStub(channel), e1.EventStreamRequest())):
                stream, start = stub.EventStream(request), time.monotonic()
                first, second = next(stream), next(stream)
                assert (first.type, dict(first.data)) == ("provider_ready", {})
                assert second.type == "keep_alive" and time.monotonic() - start >= 0.2  # no configuration_change
                stream.cancel()
            stream = g2.ServiceStub(channel).EventStream(e2.EventStreamRequest())
            assert next(stream).type == "provider_ready"
            process.stop()  # the pod terminates: a subscriber sees its stream end
            with pytest.raises(grpc.RpcError):
                for _ in stream:
                    pass
    finally:
        process.stop()


def test_sync_port_sends_the_whole_flag_set_as_flagd_marshals_it(release_lab):
    pod = _flagd_pod(release_lab)
    address = release_lab.cluster.pod_process(pod).address(8015)
    with grpc.insecure_channel(target(address)) as channel:
        stub = sync_pb2_grpc.FlagSyncServiceStub(channel)
        fetched = json.loads(stub.FetchAllFlags(sync_pb2.FetchAllFlagsRequest()).flag_configuration)
        stream = stub.SyncFlags(sync_pb2.SyncFlagsRequest(provider_id="test"))
        synced = next(stream)
        stream.cancel()
    assert json.loads(synced.flag_configuration) == fetched and synced.HasField("sync_context")
    release = json.loads(releases.get("3.0.0").flags_json())["flags"]["cartFailure"]
    assert fetched["flags"]["cartFailure"] == {  # flagd's model.Flag: no description, the source added
        "state": "ENABLED", "defaultVariant": "off", "variants": release["variants"],
        "source": "./etc/flagd/demo.flagd.json"}
    assert set(fetched["flags"]) == set(json.loads(releases.get("3.0.0").flags_json())["flags"])


def test_management_port_answers_health_readiness_and_metrics(release_lab):
    pod = _flagd_pod(release_lab)
    connect(release_lab, f"{V2}/ResolveFloat", {"flagKey": "cartFailure"})
    base = f"{release_lab.server.url}/api/v1/namespaces/{NS}/pods/{pod}:8014/proxy"
    auth = {"Authorization": "Bearer local-lab"}
    assert httpx.get(f"{base}/healthz", headers=auth).status_code == 200
    assert httpx.get(f"{base}/readyz", headers=auth).status_code == 200
    metrics = httpx.get(f"{base}/metrics", headers=auth).text
    assert re.search(r'feature_flag_flagd_impression_total\{feature_flag_key="cartFailure",[^}]*'
                     r'feature_flag_result_variant="off"[^}]*\} [1-9]', metrics)
    # gRPC-only 8015 hangs up on HTTP/1.1; the Service has no 8014/8015 (the chart's lists rpc and ofrep)
    assert httpx.get(f"{release_lab.server.url}/api/v1/namespaces/{NS}/pods/{pod}:8015/proxy/",
                     headers=auth).status_code == 503
    assert httpx.get(f"{release_lab.server.url}/api/v1/namespaces/{NS}/services/flagd:8014/proxy/readyz",
                     headers=auth).status_code == 503
    # before its flag file is read, flagd is not ready
    starting = FlagdProcess("flagd-starting").start()
    try:
        assert httpx.get(f"http://{target(starting.address(8014))}/readyz").status_code == 412
        starting.load(FlagSet())
        assert httpx.get(f"http://{target(starting.address(8014))}/readyz").status_code == 200
    finally:
        starting.stop()


# ---- OpenFeature's Python flagd provider, as a user runs it ---------------------------------------
@contextmanager
def provider_client(name: str, port: int, resolver: ResolverType):
    """A client of OpenFeature's flagd provider on 127.0.0.1:port: RPC without a cache (every read asks
    flagd), or in-process on the sync port."""
    options = {"cache": CacheType.DISABLED} if resolver == ResolverType.RPC else {}
    provider = FlagdProvider(host="127.0.0.1", port=port, resolver_type=resolver, deadline_ms=2000, **options)
    openfeature.set_provider_and_wait(provider, name)
    try:
        yield openfeature.get_client(name)
    finally:
        provider.shutdown()


def cart_reads(client) -> tuple:
    """What demo 3.0.0's cart reads: cartFailure as a double, default 0."""
    got = client.get_float_details("cartFailure", 0.0)
    return got.value, got.variant, str(getattr(got.reason, "value", got.reason)), got.error_code


def change_to_10_percent(sandbox) -> None:
    """The lab's change, with labkit's own Cluster: the ConfigMap edit, then flagd's restart."""
    cluster = sandbox.labkit()
    assert cluster.set_default_variant("cartFailure", "10%").changed
    cluster.restart_flagd(timeout=30)


def _pod_port(sandbox, port: int) -> int:
    return sandbox.cluster.pod_process(_flagd_pod(sandbox)).address(port)[1]


def test_openfeature_flagd_provider_reads_and_follows_a_change_at_the_pods_ports(tmp_path):
    sandbox = KubeSandbox(tmp_path, flags_yaml=releases.get("3.0.0").configmap_yaml()).start()
    try:
        assert sandbox.wait_serving()
        before = sandbox.cluster.flagd_rpc_address()
        with provider_client("rpc-before", before[1], ResolverType.RPC) as client:
            assert cart_reads(client) == (0.0, "off", "STATIC", None)
            mismatch = client.get_boolean_details("cartFailure", False)  # the lab page's boolean read
            assert (mismatch.value, mismatch.error_code) == (False, ErrorCode.TYPE_MISMATCH)
        with provider_client("sync-before", _pod_port(sandbox, 8015), ResolverType.IN_PROCESS) as client:
            assert cart_reads(client) == (0.0, "off", "STATIC", None)
        change_to_10_percent(sandbox)
        after = sandbox.cluster.flagd_rpc_address()
        assert after != before  # a new pod; the old one's listeners are gone with it
        with pytest.raises(OSError):
            socket.create_connection(before, timeout=1).close()
        with provider_client("rpc-after", after[1], ResolverType.RPC) as client:
            assert cart_reads(client) == (0.1, "10%", "STATIC", None)
        with provider_client("sync-after", _pod_port(sandbox, 8015), ResolverType.IN_PROCESS) as client:
            assert cart_reads(client) == (0.1, "10%", "STATIC", None)
    finally:
        sandbox.stop()


def test_the_carts_provider_reads_its_default_from_the_lab_pages_boolean_flag(tmp_path):
    """The lab page's flags.yaml (cartFailure on/off as booleans) read as demo 3.0.0's cart reads it:
    flagd refuses the float read, so the cart gets its default 0 and never fails."""
    sandbox = KubeSandbox(tmp_path).start()  # the lab page's own flags.yaml
    try:
        assert sandbox.wait_serving()
        with provider_client("page-flags", sandbox.cluster.flagd_rpc_address()[1], ResolverType.RPC) as client:
            value, _, reason, error = cart_reads(client)
            assert (value, reason, error) == (0.0, "ERROR", ErrorCode.TYPE_MISMATCH)
            assert client.get_boolean_value("cartFailure", True) is False  # read as a boolean it serves `off`
        assert connect(sandbox, f"{V2}/ResolveFloat", {"flagKey": "cartFailure", "context": {}}) == MISMATCH
    finally:
        sandbox.stop()


@contextmanager
def port_forward(sandbox, what: str, port: int):
    """`kubectl port-forward <what> :<port>` as a user runs it; yields the local port."""
    env = dict(os.environ, KUBECONFIG=str(sandbox.kubeconfig), HOME=str(sandbox.tmp))
    proc = subprocess.Popen(["kubectl", "port-forward", what, f":{port}"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        found = re.search(r"Forwarding from 127\.0\.0\.1:(\d+) -> " + str(port), line)
        assert found, line + proc.stderr.read() if proc.poll() is not None else line
        yield int(found.group(1))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@needs_kubectl
def test_openfeature_flagd_provider_through_kubectl_port_forward_follows_labkit_set(tmp_path):
    sandbox = KubeSandbox(tmp_path, flags_yaml=releases.get("3.0.0").configmap_yaml()).start()
    try:
        assert sandbox.wait_serving()
        with port_forward(sandbox, "svc/flagd", 8013) as local:
            with provider_client("pf-rpc-before", local, ResolverType.RPC) as client:
                assert cart_reads(client) == (0.0, "off", "STATIC", None)
            status = httpx.post(f"http://127.0.0.1:{local}/{V2}/ResolveFloat", json={"flagKey": "cartFailure"})
            assert status.json() == {"value": 0, "reason": "STATIC", "variant": "off", "metadata": {}}
        with port_forward(sandbox, f"pod/{_flagd_pod(sandbox)}", 8015) as local:
            with provider_client("pf-sync-before", local, ResolverType.IN_PROCESS) as client:
                assert cart_reads(client) == (0.0, "off", "STATIC", None)
        change_to_10_percent(sandbox)
        # the pod the forwards were bound to is gone: forward again, as a user would
        with port_forward(sandbox, "svc/flagd", 8013) as local:
            with provider_client("pf-rpc-after", local, ResolverType.RPC) as client:
                assert cart_reads(client) == (0.1, "10%", "STATIC", None)
        pod = _flagd_pod(sandbox)
        with port_forward(sandbox, f"pod/{pod}", 8015) as local:
            with provider_client("pf-sync-after", local, ResolverType.IN_PROCESS) as client:
                assert cart_reads(client) == (0.1, "10%", "STATIC", None)
        with port_forward(sandbox, f"pod/{pod}", 8014) as local:
            assert httpx.get(f"http://127.0.0.1:{local}/readyz").status_code == 200
    finally:
        sandbox.stop()
