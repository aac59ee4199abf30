"""The local lab's cart is one demo release's: it reads `cartFailure` as that release's cart does
(flagd-consumers.md §1.1), fails as often as what it read says, and writes the span event the demo's
TraceEnricherHook writes; checkout empties the cart and ignores the error (checkout/main.go)."""
from __future__ import annotations

import json

import httpx
import pytest

from kube_sandbox import FLAGS_YAML, release_flags_yaml, with_cart_failure
from labkit import releases
from labkit.errors import BadInput
from labkit.sandbox import LocalLab, Timings, kube
from labkit.sandbox.dynatrace import REDIS_ERROR, Telemetry
from labkit.sandbox.shop import DemoShop, empty_cart, place_order

QUERY_A = """fetch spans, from: now() - 30m
| filter service.name == "cart"
| filter iAny(span.events[][span_event.name] == "feature_flag.evaluation")
| expand span.events
| filter span.events[span_event.name] == "feature_flag.evaluation"
      and span.events[feature_flag.key] == "cartFailure"
| fields start_time, trace.id, span.name,
         variant = span.events[feature_flag.result.variant],
         value   = span.events[feature_flag.result.value],
         reason  = span.events[feature_flag.result.reason],
         error   = span.events[error.type]
| sort start_time desc"""  # flagd-consumers.md §2.4 query A, as written


@pytest.fixture
def cart():
    """make(version, flags_yaml) -> (shop, telemetry, cluster): a release's cart in front of a flagd
    started from `flags_yaml`; the cluster runs no other workload and no traffic."""
    made = []

    def make(version: str, flags_yaml: str):
        timings = Timings.fast()
        timings.shopper_rate = 0
        cluster = kube.LocalCluster(timings, flags_yaml, demo=False).start()
        telemetry = Telemetry(timings, seed=1)
        shop = DemoShop(cluster, telemetry, timings, releases.get(version), seed=2)
        made.append((shop, cluster))
        return shop, telemetry, cluster

    yield make
    for shop, cluster in made:
        shop.stop()
        cluster.stop()


def flagd_calls(telemetry) -> list:
    """The cart's gRPC client spans of its calls to flagd:8013."""
    return [s for s in telemetry.spans(0, 2**62) if s.service == "cart" and s.kind == "client"]


def flag_events(telemetry) -> list[dict]:
    return [ev for span in telemetry.records("cart") for ev in span.events
            if ev["span_event.name"] == "feature_flag.evaluation"]


@pytest.mark.parametrize("version, variant, low, high", [
    ("3.0.0", "10%", 0.06, 0.15), ("3.0.0", "100%", 1.0, 1.0), ("3.0.0", "off", 0.0, 0.0),
    ("2.2.0", "on", 1.0, 1.0), ("2.2.0", "off", 0.0, 0.0)])  # 2.2.0's `on`: the bad store, every time
def test_each_release_fails_as_its_own_flag_says(cart, version, variant, low, high):
    shop, telemetry, _ = cart(version, release_flags_yaml(version, variant))
    results = [empty_cart(shop, f"user-{i}") for i in range(1000)]
    assert low <= results.count(False) / len(results) <= high
    value = json.loads(releases.get(version).flags_json())["flags"]["cartFailure"]["variants"][variant]
    events = flag_events(telemetry)
    assert len(events) == 1000  # asked on every EmptyCart: no cache
    assert {(e["feature_flag.result.variant"], e["feature_flag.result.value"], e["feature_flag.result.reason"])
            for e in events} == {(variant, value, "static")}
    assert {e["feature_flag.provider.name"] for e in events} == {"flagd Provider"}
    assert not any("error.type" in e for e in events)


def test_the_lab_pages_boolean_flag_is_a_type_mismatch_for_the_3_0_0_cart(cart):
    """On 3.0.0 the lab page's flags.yaml with cartFailure on: flagd refuses the float read, the
    cart reads 0 and never fails, and its span events say why."""
    shop, telemetry, cluster = cart("3.0.0", with_cart_failure(FLAGS_YAML, "on"))
    assert cluster.flagd_value("cartFailure")["variant"] == "on"  # OFREP: no type check, "on"
    assert all(empty_cart(shop, f"user-{i}") for i in range(200))
    events = flag_events(telemetry)
    assert len(events) == 200
    assert {(e["feature_flag.result.reason"], e["error.type"], e["feature_flag.result.value"]) for e in events} \
        == {("error", "typemismatch", 0.0)}
    assert {e["error.message"] for e in events} == {"Type mismatch error"}  # flagd's InvalidArgument over 8013
    calls = flagd_calls(telemetry)
    assert len(calls) == 200 and {(c.name, c.attributes["rpc.grpc.status_code"], c.status) for c in calls} == {
        ("flagd.evaluation.v2.Service/ResolveFloat", 3, "error")}
    assert not any("feature_flag.result.variant" in e for e in events)  # no variant on an error
    assert not [log for log in telemetry.logs(0, 2**62) if log["content"] == REDIS_ERROR]


def test_the_2_2_0_cart_reads_the_lab_pages_flag(cart):
    shop, telemetry, _ = cart("2.2.0", with_cart_failure(FLAGS_YAML, "on"))
    results = [empty_cart(shop, f"user-{i}") for i in range(1000)]
    assert results.count(False) == 1000  # `on` sends every EmptyCart to the bad store (tag 2.2.0)
    assert {e["feature_flag.result.value"] for e in flag_events(telemetry)} == {True}


def test_flagd_down_means_the_default_and_provider_not_ready(kube_sandbox):
    sandbox = kube_sandbox(flags_yaml=release_flags_yaml("3.0.0", "100%"))
    timings = Timings.fast()
    telemetry = Telemetry(timings, seed=1)
    shop = DemoShop(sandbox.cluster, telemetry, timings, releases.get("3.0.0"), seed=2)
    try:
        assert not empty_cart(shop, "before")  # 100%: fails while flagd answers
        sandbox.scale(0)
        sandbox.wait_ready(0)
        assert all(empty_cart(shop, f"user-{i}") for i in range(50))  # the default, 0: never fails
        last = flag_events(telemetry)[-1]
        assert (last["feature_flag.result.reason"], last["error.type"], last["feature_flag.result.value"]) == (
            "error", "providernotready", 0.0)
        assert flagd_calls(telemetry)[-1].attributes["rpc.grpc.status_code"] == 14  # Unavailable
        sandbox.scale(1)
        sandbox.wait_ready(1)
        assert not empty_cart(shop, "after")  # the next EmptyCart after flagd is back reads 100%
    finally:
        sandbox.scale(1)
        shop.stop()


def test_checkouts_failing_trace_runs_placeorder_quote_currency_emptycart(cart):
    shop, telemetry, _ = cart("3.0.0", release_flags_yaml("3.0.0", "100%"))
    empty_cart(shop, "warmup")
    from labkit.sandbox.shop import add_to_cart

    add_to_cart(shop, "alice", "OLJCESPC7Z", 2)
    place_order(shop, "alice", "EUR")
    failed = [s for s in telemetry.records("cart") if s.failed][-1]
    trace = [s for s in telemetry.spans(0, 2**62) if s.trace_id == failed.trace_id]
    by_id = {s.span_id: s for s in trace}

    def chain(span):
        while span is not None:
            yield span
            span = by_id.get(span.parent_id)

    assert [(s.service, s.kind, s.name) for s in chain(failed)] == [
        ("cart", "server", "oteldemo.CartService/EmptyCart"),
        ("checkout", "client", "oteldemo.CartService/EmptyCart"),
        ("checkout", "server", "oteldemo.CheckoutService/PlaceOrder"),
        ("frontend", "client", "oteldemo.CheckoutService/PlaceOrder"),
        ("frontend", "server", "POST /api/checkout"),
        ("frontend-proxy", "server", "POST /api/checkout")]  # envoy: one span per request
    order = by_id[by_id[failed.parent_id].parent_id]
    assert not order.failed and failed.status == "error"  # checkout ignores the cart's error
    before = [s.service for s in sorted(trace, key=lambda s: s.start_ns)
              if s.kind == "server" and s.start_ns < failed.start_ns]
    assert before.index("cart") < before.index("quote") < len(before) - 1 - before[::-1].index("currency")
    for span in trace:  # children inside their parents
        parent = by_id.get(span.parent_id)
        assert parent is None or parent.start_ns <= span.start_ns <= span.end_ns <= parent.end_ns
    (log,) = [g for g in telemetry.logs(0, 2**62)
              if g["content"] == REDIS_ERROR and g["trace_id"] == failed.trace_id]
    assert log["span_id"] == failed.span_id
    assert failed.start_ns // 1_000_000 <= log["_ms"] <= failed.end_ns // 1_000_000 + 1
    assert [e["span_event.name"] for e in failed.events] == ["Empty cart", "feature_flag.evaluation", "exception"]
    (call,) = [s for s in trace if s.parent_id == failed.span_id]  # the cart asking flagd, inside EmptyCart
    assert (call.kind, call.name, call.attributes["rpc.grpc.status_code"]) == (
        "client", "flagd.evaluation.v2.Service/ResolveFloat", 0)
    story = [(g["service.name"], g["content"].split(" called")[0]) for g in telemetry.logs(0, 2**62)
             if g["trace_id"] == failed.trace_id]  # the review page's "surrounding logs"
    assert story == [("checkout", "[PlaceOrder]"), ("cart", "GetCartAsync"), ("currency", "conversion successful"),
                     ("quote", "Calculated quote"), ("currency", "conversion successful"),
                     ("checkout", "payment went through"), ("cart", "EmptyCartAsync"), ("cart", REDIS_ERROR),
                     ("checkout", "order placed")]


def test_query_a_answers_through_labkits_grail_client(tenant_sandbox):
    from labkit.dynatrace import Dynatrace
    from labkit.settings import Secret, Settings

    lab = tenant_sandbox()
    lab.fail_empties(3)
    dt = Dynatrace(Settings(dt_url=lab.tenant_server.url, platform_token=Secret(lab.platform_token)))
    try:
        rows = dt.dql(QUERY_A)
        summary = dt.dql(QUERY_A + "\n| summarize first_seen = min(start_time), last_seen = max(start_time), "
                                   "n = count(), by: { variant, error }")
    finally:
        dt.close()
    assert len(rows) == 3 and rows[0]["start_time"] >= rows[-1]["start_time"]
    assert {(r["span.name"], r["variant"], r["value"], r["reason"], r["error"]) for r in rows} == {
        ("oteldemo.CartService/EmptyCart", "100%", 1, "static", None)}
    assert len(summary) == 1 and summary[0]["variant"] == "100%" and int(summary[0]["n"]) == 3
    assert summary[0]["first_seen"] <= summary[0]["last_seen"]


def test_span_fields_and_the_exception_pattern_in_dql(tenant_sandbox):
    lab = tenant_sandbox()
    lab.fail_empties(2)
    failed = lab.dql('fetch spans | filter request.is_failed == true | fields trace.id, span.id, span.name, '
                     'span.kind, span.status_code, rpc.grpc.status_code, service.name, dt.entity.service, '
                     'duration, k8s.cluster.name')["records"]
    assert {(r["service.name"], r["span.name"], r["span.kind"], r["span.status_code"]) for r in failed} >= {
        ("cart", "oteldemo.CartService/EmptyCart", "server", "error")}
    cart = next(r for r in failed if r["service.name"] == "cart")
    assert cart["rpc.grpc.status_code"] == "9" and int(cart["duration"]) > 0 and cart["k8s.cluster.name"]
    exceptions = lab.dql('fetch spans | filter iAny(span.events[][span_event.name] == "exception") '
                         '| expand span.events | filter span.events[span_event.name] == "exception" '
                         '| fieldsFlatten span.events, fields: { exception.type } '
                         '| summarize n = count(), by: { span.events.exception.type }')["records"]
    assert exceptions == [{"span.events.exception.type": "Grpc.Core.RpcException", "n": "2"}]


def test_the_local_lab_is_one_release_with_its_own_configmap_and_images(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_DEMO_RELEASE", "2.2.0")
    timings = Timings.fast()
    timings.shopper_rate = 0
    with LocalLab(tmp_path / "two", timings) as lab:
        assert lab.release.version == "2.2.0"
        cart = lab.cluster.get("deployments", "cart")["spec"]["template"]["spec"]["containers"][0]["image"]
        assert cart == "ghcr.io/open-telemetry/demo:2.2.0-cart" and releases.from_image(cart) is releases.get("2.2.0")
        served = lab.cluster.get("configmaps", "flagd-config")["data"]["demo.flagd.json"]
        assert served == releases.get("2.2.0").flags_json()
        workspace = tmp_path / "two" / "workspace" / "flags.yaml"
        assert workspace.read_text() == FLAGS_YAML  # the lab page's file, as in the Codespace
    monkeypatch.delenv("LABKIT_DEMO_RELEASE")
    with LocalLab(tmp_path / "three", timings) as lab:
        assert lab.release.version == releases.DEFAULT == "3.0.0"
        configmap = lab.cluster.get("configmaps", "flagd-config")
        assert json.loads(configmap["data"]["demo.flagd.json"])["flags"]["cartFailure"]["variants"]["10%"] == 0.1
        changed = json.loads(with_cart_failure(json.dumps(configmap), "10%"))
        lab.cluster.replace("configmaps", "flagd-config", changed)
    with LocalLab(tmp_path / "three", timings, release="2.2.0") as lab:  # a saved ConfigMap still wins
        kept = json.loads(lab.cluster.get("configmaps", "flagd-config")["data"]["demo.flagd.json"])
        assert lab.restored_flags and kept["flags"]["cartFailure"]["defaultVariant"] == "10%"
    with pytest.raises(BadInput, match="2.2.0, 3.0.0"):
        LocalLab(tmp_path / "bad", timings, release="9.9.9")


def test_a_front_end_checkout_succeeds_while_emptycart_fails(tenant_sandbox):
    lab = tenant_sandbox()
    lab.front.post("/api/cart", json={"userId": "carol", "item": {"productId": "OLJCESPC7Z", "quantity": 1}})
    resp = lab.front.post("/api/checkout", json={"userId": "carol", "userCurrency": "CHF"})
    assert resp.status_code == 200 and resp.json()["orderId"]
    assert lab.front.get("/api/cart", params={"sessionId": "carol"}).json()["items"]  # not emptied
    assert httpx.codes.is_success(resp.status_code)


def test_spans_need_the_spans_scope(tenant_sandbox):
    lab = tenant_sandbox()
    lab.tenant.platform_tokens.add("dt0s16.LOGSONLY", {"storage:logs:read", "storage:buckets:read"})
    resp = lab.grail.post("/platform/storage/query/v1/query:execute", json={"query": "fetch spans"},
                          headers={"Authorization": "Bearer dt0s16.LOGSONLY"})
    # a Grail table the token may not read (dynatrace-answers.md §2): NOT_AUTHORIZED_FOR_TABLE, table spans
    assert resp.status_code == 403 and "NOT_AUTHORIZED_FOR_TABLE" in resp.text
    assert resp.json()["error"]["details"]["arguments"] == ["spans"]


def test_the_tenant_keeps_the_newest_spans_only():
    from labkit.sandbox.dynatrace.telemetry import MAX_SPANS, Span

    telemetry = Telemetry(Timings.fast(), seed=1)
    now = telemetry.clock() * 1_000_000
    telemetry.add_spans([Span(now + i, now + i + 1, "cart", "x", "server", "t" * 32, f"{i:016x}")
                         for i in range(MAX_SPANS + 10)])
    kept = telemetry.spans(0, 2**62)
    assert len(kept) == MAX_SPANS and kept[0].span_id == f"{10:016x}"  # the oldest went first
