"""The local lab's flagd against OpenFeature's flagd evaluator: same value, variant, reason and metadata
for every flag file and context tried, single and bulk, through the service proxy and the pod proxy;
OFREP errors as flagd's handler gives them; the OFREP provider reading it; a rule per targeting key."""
from __future__ import annotations

import json

import httpx
import pytest
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import FlagNotFoundError, ParseError

from kube_sandbox import KubeSandbox
from labkit.sandbox.flagd.fractional import as_flagd
from labkit.sandbox import SHARED_FLAGS, Timings
from labkit.sandbox.flagd import FlagSet, load_flags, start_lines

NS = "default"
SESSIONS = [f"session-{i:03d}" for i in range(40)]


def _flag(variants, default, **more):
    return {"description": "a flag", "state": "ENABLED", "variants": variants, "defaultVariant": default, **more}


RATES = {"off": 0, "10%": 0.1, "25%": 0.25, "50%": 0.5, "75%": 0.75, "90%": 0.9, "100%": 1}
RATE_FILE = {"$schema": "https://flagd.dev/schema/v0/flags.json", "flags": {
    "cartFailure": _flag(RATES, "25%"),
    "paymentFailure": _flag(RATES, "off"),
    "kafkaQueueProblems": _flag({"on": 100, "off": 0}, "on"),
    "imageSlowLoad": _flag({"10sec": 10000, "5sec": 5000, "off": 0}, "off"),
}}
TARGETING_FILE = {"flags": {
    "productCatalogFailure": _flag({"on": True, "off": False}, "off", targeting={
        "if": [{"==": [{"var": "product_id"}, "OLJCESPC7Z"]}, "on", "off"]}),
    "cartFailure": _flag(RATES, "off", targeting={
        "if": [{"in": [{"var": "targetingKey"}, ["session-001", "session-007"]]}, "100%", None]}),
    "emailTier": _flag({"gold": "gold", "basic": "basic"}, "basic", targeting={
        "if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "gold",
               {"starts_with": [{"var": "email"}, "vip"]}, "gold", None]}),
    "newCheckout": _flag({"true": True, "false": False}, "false", targeting={
        "sem_ver": [{"var": "version"}, ">=", "2.1.0"]}),
    "banner": _flag({"on": {"text": "sale", "n": 3}, "off": {}}, "off", targeting={
        "if": [{">": [{"var": "cart_total"}, 100]}, "on", "off"]}),
    "noDefault": {"state": "ENABLED", "variants": {"a": 1, "b": 2}, "targeting": {
        "if": [{"==": [{"var": "plan"}, "b"]}, "b", None]}},
    "badVariant": _flag({"on": True, "off": False}, "off", targeting={"if": [True, "maybe", "off"]}),
}}
FRACTIONAL_FILE = {"$evaluators": {"isStaff": {"ends_with": [{"var": "email"}, "@staff.example"]}},
                   "flags": {
    "cartFailure": _flag(RATES, "off", targeting={"fractional": [["100%", 20], ["off", 80]]}),
    "paymentFailure": _flag(RATES, "off", targeting={
        "if": [{"$ref": "isStaff"}, "off", {"fractional": [{"var": "userId"}, ["50%", 1], ["off", 1]]}]}),
    "adFailure": _flag({"on": True, "off": False}, "off", targeting={
        "if": [{"$ref": "isStaff"}, "on", None]}),
}}
METADATA_FILE = {"metadata": {"flagSetId": "demo", "version": 3, "team": "shop"}, "flags": {
    "cartFailure": _flag({"on": True, "off": False}, "on", metadata={"owner": "cart", "version": 4}),
    "adFailure": _flag({"on": True, "off": False}, "on", state="DISABLED", metadata={"owner": "ad"}),
    "adHighCpu": _flag({"on": True, "off": False}, "off"),
    "recommendationCacheFailure": _flag({"on": True, "off": False}, "off", state="DISABLED"),
}}
FILES = {"lab": json.loads(__import__("yaml").safe_load(SHARED_FLAGS.read_text())["data"]["demo.flagd.json"]),
         "rates": RATE_FILE, "targeting": TARGETING_FILE, "fractional": FRACTIONAL_FILE,
         "metadata": METADATA_FILE}
CONTEXTS = [None, {}, {"targetingKey": ""}, {"product_id": "OLJCESPC7Z"}, {"product_id": "66VCHSJNUP"},
            {"email": "ann@example.com"}, {"email": "vip-bob@corp.test"}, {"email": "cy@staff.example"},
            {"version": "2.3.1"}, {"version": "1.9"}, {"cart_total": 250}, {"cart_total": 5},
            {"plan": "b"}, {"plan": "a"}, {"userId": "u-17"}, {"userId": "u-18", "email": "d@staff.example"},
            *({"targetingKey": s} for s in SESSIONS),
            *({"targetingKey": s, "userId": s} for s in SESSIONS[:10])]


def manifest(doc: dict) -> str:
    text = json.dumps(doc, indent=2)
    body = "\n".join("    " + line for line in text.splitlines())
    return (f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: flagd-config\n  namespace: {NS}\n"
            f"data:\n  demo.flagd.json: |\n{body}\n")


def reference(doc: dict) -> FlagdCore:
    """OpenFeature's evaluator on the file (without `description`, which it refuses)."""
    core = FlagdCore()
    core.set_flags({**doc, "flags": {k: {f: v for f, v in body.items() if f != "description"}
                                     for k, body in doc["flags"].items()}})
    return core


def expected(core: FlagdCore, doc: dict, key: str, context: dict | None) -> dict:
    """What the evaluator resolves, as the fields OFREP carries (errors: their code)."""
    ctx = dict(context or {})
    tk = ctx.pop("targetingKey", None)
    flag = doc["flags"].get(key, {})
    variants = flag.get("variants", {})
    sample = variants.get(flag.get("defaultVariant"), next(iter(variants.values()), None))
    kind = {bool: "boolean", str: "string", dict: "object"}.get(type(sample), "float")
    try:
        with as_flagd():  # OpenFeature's core with flagd v0.16's fractional (test_flagd_fractional.py pins it)
            d = getattr(core, f"resolve_{kind}_value")(key, None, EvaluationContext(tk or None, ctx))
    except FlagNotFoundError:
        return {"errorCode": "FLAG_NOT_FOUND"}
    except ParseError:
        return {"errorCode": "PARSE_ERROR"}
    except Exception:
        return {"errorCode": "GENERAL"}
    out = {"reason": str(d.reason), "metadata": dict(d.flag_metadata)}
    if d.variant is not None and d.reason != "DISABLED":
        out.update(value=d.value, variant=d.variant)
    return out


def fields(body: dict) -> dict:
    if "errorCode" in body:
        return {"errorCode": body["errorCode"]}
    return {k: body[k] for k in ("value", "variant", "reason", "metadata") if k in body}


def post(api, path: str, body: bytes = b'{"context": {}}', method: str = "POST"):
    """A raw request through the API server, as an OFREP client sends it (bad bodies too)."""
    resp = httpx.request(method, f"{api.configuration.host}{path}", content=body, timeout=10,
                         headers={"Content-Type": "application/json", "Authorization": "Bearer local-lab"})
    return resp.status_code, resp.content


def ofrep(api, key: str | None, context, via: str = "services/flagd:8016"):
    path = f"/api/v1/namespaces/{NS}/{via}/proxy/ofrep/v1/evaluate/flags" + (f"/{key}" if key else "")
    body = b"" if context is None else json.dumps({"context": context}).encode()
    status, data = post(api, path, body)
    return status, json.loads(data)


@pytest.fixture(scope="module", params=sorted(FILES))
def flagd_lab(request, tmp_path_factory):
    from kubernetes import config

    doc = FILES[request.param]
    sandbox = KubeSandbox(tmp_path_factory.mktemp(request.param), flags_yaml=manifest(doc)).start()
    api = config.new_client_from_config(str(sandbox.kubeconfig))
    yield doc, reference(doc), sandbox, api
    api.close()
    sandbox.stop()


def test_single_evaluation_equals_the_evaluator_for_every_flag_and_context(flagd_lab):
    doc, core, _, api = flagd_lab
    loaded, error = load_flags(json.dumps(doc))
    assert error is None
    for key in [*doc["flags"], "noSuchFlag"]:
        for i, context in enumerate(CONTEXTS):
            want = expected(core, doc, key, context)
            status, body = loaded.evaluate(key, context)
            if i % 4 == 0:  # the same answers over the wire, through the service proxy
                assert ofrep(api, key, context) == (status, body)
            assert fields(body) == want, (key, context, body)
            assert body["key"] == key
            assert status == {"FLAG_NOT_FOUND": 404}.get(want.get("errorCode"), 400 if "errorCode" in want else 200)


def test_bulk_evaluation_equals_the_evaluator(flagd_lab):
    doc, core, _, api = flagd_lab
    for context in CONTEXTS[::3]:
        status, body = ofrep(api, None, context)
        assert status == 200 and body["metadata"] == {}
        got = {d["key"]: fields(d) for d in body["flags"]}
        assert got == {k: expected(core, doc, k, context) for k in doc["flags"]}, context


def test_each_pod_answers_through_the_pod_proxy_as_the_service_does(flagd_lab):
    from kubernetes import client

    doc, _, _, api = flagd_lab

    pod = client.CoreV1Api(api).list_namespaced_pod(NS, label_selector="opentelemetry.io/name=flagd").items[0].metadata.name
    for key in doc["flags"]:
        for context in ({"targetingKey": "session-001"}, {"email": "cy@staff.example"}):
            assert ofrep(api, key, context, f"pods/{pod}:8016") == ofrep(api, key, context)


def test_the_evaluator_is_the_reference_not_a_copy(flagd_lab):
    doc, _, _, _ = flagd_lab
    flags, error = load_flags(json.dumps(doc))
    assert error is None and isinstance(flags.core, FlagdCore) and flags.keys == list(doc["flags"])


def test_targeting_reasons_as_flagd_gives_them():
    flags = FlagSet(TARGETING_FILE)
    assert flags.evaluate("productCatalogFailure", {"product_id": "OLJCESPC7Z"})[1]["reason"] == "TARGETING_MATCH"
    assert flags.evaluate("cartFailure", {"targetingKey": "session-001"})[1]["value"] == 1
    assert flags.evaluate("cartFailure", {"targetingKey": "session-002"})[1] == {
        "value": 0, "key": "cartFailure", "reason": "DEFAULT", "metadata": {}, "variant": "off"}
    assert flags.evaluate("noDefault", {})[1] == {"key": "noDefault", "reason": "DEFAULT", "metadata": {}}
    assert flags.evaluate("badVariant", {})[0] == 400
    disabled = FlagSet(METADATA_FILE).evaluate("adFailure")
    assert disabled == (200, {"key": "adFailure", "reason": "DISABLED",
                              "metadata": {"flagSetId": "demo", "version": 3, "team": "shop", "owner": "ad"}})


def test_ofrep_errors_and_methods_as_flagds_handler(flagd_lab):
    _, _, _, api = flagd_lab
    base = f"/api/v1/namespaces/{NS}/services/flagd:8016/proxy/ofrep/v1/evaluate/flags"
    status, data = post(api, base + "/cartFailure", b"{not json")
    assert status == 400 and json.loads(data) == {"key": "cartFailure", "errorCode": "INVALID_CONTEXT",
                                                  "errorDetails": "Provider context is not valid",
                                                  "metadata": None}
    status, data = post(api, base, b"[1]")
    assert status == 400 and json.loads(data)["errorCode"] == "INVALID_CONTEXT"
    status, data = post(api, base + "/nope", b'{"context": "not an object"}')
    assert status == 404 and json.loads(data) == {"key": "nope", "errorCode": "FLAG_NOT_FOUND",
                                                  "errorDetails": "flag `nope` does not exist", "metadata": {}}
    assert post(api, base + "/", b"")[0] == 200  # "flags/" is the bulk path too
    assert post(api, base + "/cartFailure", b"", method="GET")[0] == 405
    assert post(api, base[:-len("/evaluate/flags")] + "/other", b"")[0] == 404


def test_openfeature_ofrep_provider_reads_the_local_labs_flagd(flagd_lab):
    from openfeature import api as openfeature
    from openfeature.contrib.provider.ofrep import OFREPProvider

    doc, core, _, api = flagd_lab
    base = f"{api.configuration.host}/api/v1/namespaces/{NS}/services/flagd:8016/proxy"
    openfeature.set_provider(OFREPProvider(base, headers_factory=lambda: {"Authorization": "Bearer local-lab"}))
    client = openfeature.get_client()
    for key, flag in doc["flags"].items():
        sample = flag["variants"].get(flag.get("defaultVariant"))
        if not isinstance(sample, bool) or flag.get("state") == "DISABLED":
            continue  # the provider wants a float to be a JSON float; flagd writes 0 and 1 as integers
        for context in ({"targetingKey": "session-001"}, {"product_id": "OLJCESPC7Z"}, {}):
            ctx = dict(context)
            details = client.get_boolean_details(key, False, EvaluationContext(ctx.pop("targetingKey", None), ctx))
            want = expected(core, doc, key, context)
            if "errorCode" in want:
                assert str(details.error_code) == want["errorCode"] and details.value is False
                continue
            assert (details.value, details.variant, str(details.reason)) == (
                want.get("value", False), want.get("variant"), want["reason"]), (key, context)
    missing = client.get_boolean_details("noSuchFlag", True)
    assert missing.value is True and str(missing.error_code) == "FLAG_NOT_FOUND"


def test_a_bad_flag_file_loads_no_flags_and_logs_why_as_flagd_does():
    flags, error = load_flags("{not json")
    assert len(flags) == 0 and error.startswith("error setting state: failed to unmarshal JSON string")
    assert flags.evaluate("cartFailure")[0] == 404 and flags.evaluate_all() == (200, {"flags": [], "metadata": {}})
    _, error = load_flags(json.dumps({"flags": {"a": _flag({"x": 1}, "y")}}))
    assert error == "error setting state: default variant: 'y' isn't a valid variant of flag: 'a'"
    lines = start_lines([], error, at=0.0, image="ghcr.io/open-feature/flagd:v0.16.1")
    assert lines[0].startswith("1970-01-01T00:00:00.000Z\tinfo\tcmd/start.go:157\tflagd version: v0.16.1 (")
    assert any(line.split("\t")[1:2] == ["error"] and "default variant" in line for line in lines)
    assert any("starting sync from ./etc/flagd/demo.flagd.json" in line for line in lines)
    assert any("ofrep service listening at 8016" in line for line in lines)
    fatal = start_lines(None, "open ./etc/flagd/demo.flagd.json: no such file or directory", at=0.0)
    assert fatal[-1].split("\t")[1] == "fatal"


def test_a_rule_decides_per_targeting_key():
    """flagd answers a targeting or `fractional` rule per targetingKey. (The demo's cart sends no
    context, so on the lab such a rule sees none: test_cart_release.py has what the cart reads.)"""
    flags = FlagSet(TARGETING_FILE)
    values = {s: flags.evaluate("cartFailure", {"targetingKey": s})[1]["value"] for s in ("session-001", "session-002")}
    assert values == {"session-001": 1, "session-002": 0}  # 100% vs the default, off
    rollout = FlagSet(FRACTIONAL_FILE)
    rates = [rollout.evaluate("cartFailure", {"targetingKey": s})[1]["value"] for s in SESSIONS * 5]
    assert 0.05 < rates.count(1) / len(rates) < 0.4  # ~20% of sessions in the failing bucket

