"""The local flagd's `fractional` buckets users as the demo's flagd image (v0.16.1) does.

Every case and its expected variant is flagd's own, copied from `core/pkg/evaluator/fractional_test.go`
at tag flagd/v0.16.1 (whose go.mod takes core v0.15.6; that file and fractional.go are the same at both):
TestFractionalEvaluation, TestFractionalEvaluationNegativeClamping, TestFractionalEvaluationWithNestedJSONLogic
and TestFractionalEvaluation_ErrorFallbackWhenUsedDirectly. Not BenchmarkFractionalEvaluation's expected
variants (blue, red, green, blue for test_a..test_d@faas.com): fractional.go at that tag computes otherwise
(buckets 77, 90, 25, 76 of 100: yellow, yellow, blue, yellow) and `go test` never runs benchmarks, so
they are stale; its four emails are kept with the variants worked out by hand from fractional.go.
Their flag keys are kept: the key is part of the bucketing string. A few worked by hand from fractional.go
(murmur3 x86_32, seed 0, of the string's UTF-8; bucket = hash * totalWeight >> 32; first cumulative
weight above the bucket), to show where the Go test's answers come from:
- "headerColor" + "foo@foo.com": hash 3455740957, * 100 >> 32 = 80, past blue's 50: green;
- "headerColor" + "rachel@faas.com": 1805633606 -> 42 of 100: red 0-24, blue 25-49: blue;
- the literal "email" (a string first argument is the bucketing value itself): 3737300892 -> 87 of 100,
  past red 50 and blue 25: green, for every user;
- "test_a@faas.com" .. "test_d@faas.com": hashes 3312189530, 3882789055, 1110758177, 3291694731 -> buckets
  77, 90, 25, 76 of 100 -> yellow, yellow, blue (25-49), yellow (75-99);
- "foo@foo.com" with weights 25/25: 4156476097 -> 48 of 50: blue; with no weights (1/1): 1 of 2: blue.
"""
from __future__ import annotations

import copy
import json

import httpx
import mmh3
import pytest
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from kube_sandbox import KubeSandbox
from labkit.sandbox.flagd.evaluate import FlagSet
from test_flagd_ports import V1, V2, connect, manifest

NS = "default"
COLORS = {"red": "#FF0000", "blue": "#0000FF", "green": "#00FF00", "yellow": "#FFFF00"}
QUARTERS = [["red", 25], ["blue", 25], ["green", 25], ["yellow", 25]]


def faas(fractional: dict) -> dict:
    """flagd's test rule shape: the rollout for @faas.com addresses, else no variant (the default)."""
    return {"if": [{"in": ["@faas.com", {"var": ["email"]}]}, fractional, None]}


def flag(targeting: dict, default: str = "red", variants: dict = COLORS) -> dict:
    return {"state": "ENABLED", "variants": variants, "defaultVariant": default, "targeting": targeting}


FALLBACK = {"one": "one", "two": "two", "fallback": "fallback"}
TK_ONLY = {"fractional": [["blue", 50], ["green", 50]]}
DYNAMIC = {"fractional": ["email", ["red", {"var": "redWeight"}], ["blue", {"var": "blueWeight"}],
                          ["green", {"var": "greenWeight"}]]}
# flag files with one rule per key (flagd's tests reuse "headerColor" for several rules: one file each)
FILES = {
    "emails": {"flags": {
        "headerColor": flag(faas({"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]}, *QUARTERS]})),
        "customSeededHeaderColor": flag(faas({"fractional": [{"cat": ["my-seed", {"var": "email"}]}, *QUARTERS]})),
        "footerColor": flag(faas({"fractional": [{"var": "email"}, *QUARTERS]})),
        "clampedWeightFlag": flag({"fractional": [["red", -1000], ["green", 1]]}, default="blue"),
        "nestedIfVariant": flag({"fractional": [
            "email", [{"if": [{"in": ["us", {"var": "locale"}]}, "red", "blue"]}, 25], ["green", 75]]}),
        "nestedFractional": flag({"fractional": [
            "email", [{"fractional": ["tier", *QUARTERS]}, 25], ["green", 75]]}),
        "dynamicWeights": flag(DYNAMIC),
        "fractional-op-error-fallback": flag(
            {"fractional": [{"var": "missing_key"}, ["one", 50], ["two", 50]]}, "fallback", FALLBACK),
    }},
    "targetingKey": {"flags": {"headerColor": flag(TK_ONLY)}},
    "bench": {"flags": {"headerColor": flag(faas({"fractional": [{"var": "email"}, *QUARTERS]}))}},
    "split": {"flags": {"headerColor": flag(faas({"fractional": ["email", ["red", 50], ["blue", 25], ["green", 25]]}))}},
    "noEmail": {"flags": {"headerColor": flag({"fractional": [{"var": "email"}, *QUARTERS]})}},
    "halves": {"flags": {"headerColor": flag({"fractional": [{"var": "email"}, ["red", 25], ["blue", 25]]})}},
    "unweighted": {"flags": {"headerColor": flag({"fractional": [{"var": "email"}, ["red"], ["blue"]]})}},
    "missingEmail": {"flags": {"headerColor": flag({"fractional": [{"var": "email"}, ["red", 50], ["blue", 50]]})}},
    "soleBlue": {"flags": {"headerColor": flag({"fractional": [["blue", 1]]})}},
    "soleGreen": {"flags": {"headerColor": flag({"fractional": [{"var": "email"}, ["green", 100]]})}},
    "soleYellow": {"flags": {"headerColor": flag({"fractional": [["yellow"]]})}},
    "zeroWeights": {"flags": {"fractional-op-error-fallback": flag(
        {"fractional": [{"var": "targetingKey"}, ["one", 0], ["two", 0]]}, "fallback", FALLBACK)}},
}
T, D = "TARGETING_MATCH", "DEFAULT"
# (file, flag key, context, flagd's expected variant, reason) from fractional_test.go
CASES = [
    ("emails", "headerColor", {"email": "rachel@faas.com"}, "blue", T),
    ("emails", "headerColor", {"email": "monica@faas.com"}, "yellow", T),
    ("emails", "headerColor", {"email": "joey@faas.com"}, "red", T),
    ("emails", "headerColor", {"email": "ross@faas.com"}, "blue", T),
    ("emails", "customSeededHeaderColor", {"email": "rachel@faas.com"}, "green", T),
    ("emails", "customSeededHeaderColor", {"email": "monica@faas.com"}, "red", T),
    ("emails", "customSeededHeaderColor", {"email": "joey@faas.com"}, "blue", T),
    ("emails", "customSeededHeaderColor", {"email": "ross@faas.com"}, "green", T),
    ("emails", "footerColor", {"email": "ross@faas.com"}, "red", T),
    ("emails", "clampedWeightFlag", {"targetingKey": "some-targeting-key"}, "green", T),
    ("emails", "nestedIfVariant", {"email": "rachel@faas.com", "locale": "us"}, "green", T),
    ("emails", "nestedIfVariant", {"email": "rachel@faas.com", "locale": "ca"}, "green", T),
    ("emails", "nestedFractional", {"email": "rachel@faas.com", "tier": "premium"}, "green", T),
    ("emails", "dynamicWeights", {"email": "test_a@faas.com", "redWeight": 0, "blueWeight": 1, "greenWeight": 0}, "blue", T),
    ("emails", "dynamicWeights", {"email": "test_a@faas.com", "redWeight": 1, "blueWeight": 0, "greenWeight": 0}, "red", T),
    ("emails", "dynamicWeights", {"email": "test_a@faas.com", "redWeight": 0, "blueWeight": 0, "greenWeight": 1}, "green", T),
    ("emails", "fractional-op-error-fallback", {}, "fallback", D),
    ("targetingKey", "headerColor", {"targetingKey": "foo@foo.com"}, "green", T),
    ("targetingKey", "headerColor", {"targetingKey": None}, "red", D),
    ("targetingKey", "headerColor", {}, "red", D),
    ("targetingKey", "headerColor", {"targetingKey": ""}, "red", D),
    ("bench", "headerColor", {"email": "test_a@faas.com"}, "yellow", T),  # by hand, not the benchmark's
    ("bench", "headerColor", {"email": "test_b@faas.com"}, "yellow", T),
    ("bench", "headerColor", {"email": "test_c@faas.com"}, "blue", T),
    ("bench", "headerColor", {"email": "test_d@faas.com"}, "yellow", T),
    ("split", "headerColor", {"email": "test4@faas.com"}, "green", T),
    ("noEmail", "headerColor", {}, "red", D),
    ("halves", "headerColor", {"email": "foo@foo.com"}, "blue", T),
    ("unweighted", "headerColor", {"email": "foo@foo.com"}, "blue", T),
    ("missingEmail", "headerColor", {"targetingKey": "foo@foo.com"}, "blue", T),
    ("soleBlue", "headerColor", {"targetingKey": "any-user"}, "blue", T),
    ("soleGreen", "headerColor", {"email": "any@user.com"}, "green", T),
    ("soleYellow", "headerColor", {"targetingKey": "any-user"}, "yellow", T),
    ("zeroWeights", "fractional-op-error-fallback", {"targetingKey": "any-user"}, "fallback", D),
]
# the cases served over the wire: flagd's key-dependent rules, a file each
WIRE = ("emails", "targetingKey")


def value(doc: dict, key: str, variant: str):
    return doc["flags"][key]["variants"][variant]


def test_murmur3_is_the_32_bit_x86_one_flagd_links():
    """twmb/murmur3 StringSum32 is MurmurHash3_x86_32 with seed 0: its reference vector for "hello"."""
    assert mmh3.hash(b"hello", 0, signed=False) == 0x248BFA47


@pytest.mark.parametrize("name,key,context,variant,reason", CASES)
def test_each_of_flagds_own_cases_resolves_to_flagds_variant(name, key, context, variant, reason):
    doc = FILES[name]
    flags = FlagSet(doc)
    status, body = flags.evaluate(key, context)
    assert (status, body["variant"], body["value"], body["reason"]) == (200, variant, value(doc, key, variant), reason)
    typed = flags.resolve(key, "string", context)
    assert (typed.variant, typed.value, typed.reason, typed.error_code) == (variant, value(doc, key, variant), reason, None)


def test_openfeatures_core_alone_buckets_other_users_as_the_issue_says():
    """Why the module exists: the core's own algorithm (CBOR, then murmur3) gives other variants for some
    of flagd's cases, and the core outside the local flagd (the in-process provider) keeps it."""
    differ = []
    for name, key, context, variant, reason in CASES:
        core = FlagdCore()
        core.set_flags(copy.deepcopy(FILES[name]))  # the core takes the file apart as it loads it
        ctx = dict(context)
        tk = ctx.pop("targetingKey", None)
        got = core.resolve_string_value(key, "", EvaluationContext(tk or None, ctx))
        if reason == T and got.variant != variant:
            differ.append((key, context))
    assert ({"email": "rachel@faas.com"} in [c for _, c in differ]
            and ("headerColor", {"targetingKey": "foo@foo.com"}) in differ), differ


@pytest.fixture(scope="module", params=WIRE)
def fractional_lab(request, tmp_path_factory):
    doc = FILES[request.param]
    sandbox = KubeSandbox(tmp_path_factory.mktemp(request.param), flags_yaml=manifest(doc)).start()
    assert sandbox.wait_serving(next(iter(doc["flags"])))
    yield request.param, doc, sandbox
    sandbox.stop()


def ofrep(sandbox, key: str, context: dict):
    """An OFREP evaluation through the API server's service proxy, as an OFREP client sends it."""
    resp = httpx.post(f"{sandbox.server.url}/api/v1/namespaces/{NS}/services/flagd:8016/proxy/ofrep/v1/evaluate/flags/{key}",
                      content=json.dumps({"context": context}).encode(), timeout=10,
                      headers={"Content-Type": "application/json", "Authorization": "Bearer local-lab"})
    return resp.status_code, resp.json()


def test_the_local_flagds_ofrep_and_typed_answers_agree_with_flagd(fractional_lab):
    name, doc, sandbox = fractional_lab
    cases = [c for c in CASES if c[0] == name]
    assert cases
    for _, key, context, variant, reason in cases:
        want = value(doc, key, variant)
        status, body = ofrep(sandbox, key, context)
        assert (status, body.get("variant"), body.get("value"), body.get("reason")) == (200, variant, want, reason), (key, context)
        for service in (V2, V1):
            got = connect(sandbox, f"{service}/ResolveString", {"flagKey": key, "context": context})
            assert got[0] == 200 and (got[1]["variant"], got[1]["value"], got[1]["reason"]) == (variant, want, reason), \
                (service, key, context, got)
