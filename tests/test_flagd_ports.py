"""flagd's other ports in the local lab, as flagd v0.16 serves them: typed evaluation on 8013 (Connect
JSON through the API server's proxies; gRPC), what clients written by others read from them.

The expected answers are written out from flagd's Go source (core/pkg/evaluator/json.go `resolve[T]`,
flag_evaluator_v1.go/_v2.go, errFormat), not computed by the code under test.
"""
from __future__ import annotations

import json

import httpx
import pytest

from kube_sandbox import KubeSandbox
from labkit import releases

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
    "anObject": _flag({"v": {"color": "blue", "n": 3}}),
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
    assert flags["anObject"]["objectValue"] == {"color": "blue", "n": 3}
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


def _flagd_pod(sandbox) -> str:
    pods, _ = sandbox.cluster.list("pods", "opentelemetry.io/name=flagd", None)
    return next(p["metadata"]["name"] for p in pods if sandbox.cluster.pod_flags(p["metadata"]["name"]))
