"""The local lab's demo shop, driven by httpx over loopback like the lab's own traffic."""
from __future__ import annotations

import json
import time

import httpx
import pytest

from kube_sandbox import release_flags_yaml
from labkit import releases
from labkit.sandbox import Timings, kube
from labkit.sandbox.flagd.evaluate import FlagSet
from labkit.sandbox.http import LabServer
from labkit.sandbox.shop import PRODUCTS, DemoShop, app
from labkit.sandbox.dynatrace import DEFAULT_CLUSTER, REDIS_ERROR, Collector, Telemetry

PRODUCT = "OLJCESPC7Z"


@pytest.fixture
def shop_lab():
    """Demo 3.0.0's shop in front of a flagd that serves `cart_failure` (the chart's `off` by
    default): make(cart_failure) -> (shop, telemetry, client)."""
    made = []

    def make(cart_failure: str = "off"):
        timings = Timings.fast()
        timings.shopper_rate = 0  # no background traffic unless a test starts it
        cluster = kube.LocalCluster(timings, release_flags_yaml("3.0.0", cart_failure)).start()
        telemetry = Telemetry(timings, seed=7)
        # through the lab's collector, as in a local lab: the cart pod's name and annotations on its logs
        shop = DemoShop(cluster, Collector(telemetry, DEFAULT_CLUSTER, cluster), timings,
                        releases.get("3.0.0"), seed=11)
        server = LabServer(app(shop)).start()
        client = httpx.Client(base_url=server.url, timeout=10)
        made.append((client, shop, server, cluster))
        return shop, telemetry, client

    yield make
    for client, shop, server, cluster in made:
        client.close()
        shop.stop()
        server.stop()
        cluster.stop()


def add(client, user="alice", product=PRODUCT, quantity=1):
    return client.post("/api/cart", json={"userId": user,
                                          "item": {"productId": product, "quantity": quantity}})


def empty(client, user="alice"):
    return client.request("DELETE", "/api/cart", json={"userId": user})


def test_products_are_the_demo_catalogue(shop_lab):
    _, _, client = shop_lab()
    products = client.get("/api/products").json()
    assert len(products) == len(PRODUCTS) >= 10
    scope = next(p for p in products if p["id"] == PRODUCT)
    assert scope["name"] == "National Park Foundation Explorascope"
    assert scope["priceUsd"] == {"currencyCode": "USD", "units": 101, "nanos": 960000000}


def test_add_view_and_empty_a_cart(shop_lab):
    _, _, client = shop_lab()
    assert add(client, quantity=2).status_code == 200
    add(client, product="L9ECAV7KIM")
    cart = client.get("/api/cart", params={"sessionId": "alice", "currencyCode": "USD"}).json()
    assert cart["userId"] == "alice"
    assert {i["productId"]: i["quantity"] for i in cart["items"]} == {PRODUCT: 2, "L9ECAV7KIM": 1}
    resp = empty(client)
    assert resp.status_code == 204 and resp.content == b""
    assert client.get("/api/cart", params={"sessionId": "alice"}).json()["items"] == []


@pytest.mark.parametrize("body", [
    {"userId": "a", "item": {"productId": "NOPE", "quantity": 1}},
    {"userId": "a", "item": {"productId": PRODUCT, "quantity": 0}},
    {"item": {"productId": PRODUCT, "quantity": 1}},
])
def test_bad_cart_additions_are_rejected(shop_lab, body):
    _, _, client = shop_lab()
    resp = client.post("/api/cart", json=body)
    assert resp.status_code == 400 and "error" in resp.json()


def test_a_failed_empty_looks_like_the_lab_in_telemetry(shop_lab):
    shop, telemetry, client = shop_lab("100%")
    add(client, "bob")
    resp = empty(client, "bob")
    assert resp.status_code == 500
    assert "Wasn't able to connect to redis" in resp.json()["error"]
    cart = telemetry.records("cart")
    failed = [r for r in cart if r.failed]
    assert [r.name for r in failed] == ["oteldemo.CartService/EmptyCart"]
    assert failed[0].attributes["rpc.grpc.status_code"] == 9  # FailedPrecondition
    assert any(r.failed for r in telemetry.records("frontend"))
    log = telemetry.logs(0, 2**62)[-1]
    assert log["content"] == REDIS_ERROR
    assert (log["loglevel"], log["status"], log["statuscode"], log["priority"], log["alertmessage"]) == (
        "ERROR", "ERROR", "FailedPrecondition", "1", "Critical Redis connection error!")  # the transform's
    assert log["trace_id"] == failed[0].trace_id and len(log["trace_id"]) == 32
    assert log["span_id"] == failed[0].span_id and len(log["span_id"]) == 16
    (pod,) = [p["metadata"] for p in shop.cluster.list("pods", "opentelemetry.io/name=cart", None)[0]]
    assert log["service.name"] == "cart" and log["k8s.pod.name"] == log["host.name"] == pod["name"]
    # k8sattributes: the pod's annotations under the lab's tag names; none becomes dt.cost.product
    assert {k: log[k] for k in ("dt.owner", "dt.cost.costcenter", "deployment.release_product",
                                "deployment.release_stage", "supportInfo")} == {
        "dt.owner": "teamA", "dt.cost.costcenter": "centre1", "deployment.release_product": "otel-demo-app",
        "deployment.release_stage": "production", "supportInfo": pod["annotations"]["supportInfo"]}
    assert "dt.cost.product" not in log and log["dt.entity.service"]
    info = [r for r in telemetry.logs(0, 2**62) if r["service.name"] == "cart" and r["status"] == "INFO"][-1]
    assert "alertmessage" not in info and info["dt.owner"] == "teamA"  # tagged, not alerted
    # The cart keeps its items when EmptyCart fails.
    assert client.get("/api/cart", params={"sessionId": "bob"}).json()["items"]


def test_background_shopper_never_deletes_but_its_checkouts_fail_emptycart(shop_lab):
    """Like the demo's load generator: no DELETE /api/cart, but checkout empties the cart after each
    order and ignores the error, so with the flag on the shopper alone keeps EmptyCart failing."""
    shop, telemetry, _ = shop_lab("100%")
    shop.timings.shopper_rate = 200.0
    shop.start()
    deadline = time.monotonic() + 10
    while len([r for r in telemetry.records("cart") if r.failed]) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    shop.stop()
    requests = telemetry.records()
    empties = [r for r in requests if r.service == "cart" and r.name.endswith("/EmptyCart")]
    assert len(empties) >= 5 and all(r.failed for r in empties)  # every one of them, at 100%
    assert not any(r.name == "DELETE /api/cart" for r in requests)
    orders = [r for r in requests if r.name.endswith("/PlaceOrder")]
    assert orders and not any(r.failed for r in orders)  # the order is placed all the same
    assert len([log for log in telemetry.logs(0, 2**62) if log["content"] == REDIS_ERROR]) == len(empties)


@pytest.mark.parametrize("traffic", ["off", None])
def test_the_shopper_sends_nothing_while_loadgeneratortraffic_is_off_or_missing(shop_lab, traffic):
    """3.0.0's load generator asks flagd (OFREP) for loadGeneratorTraffic on every iteration and
    pauses while it is <= 0, a missing flag (the lab page's flags.yaml has none) reading 0."""
    shop, telemetry, _ = shop_lab("100%")
    assert shop.traffic_on()  # the chart's own file: on
    process = shop.cluster.flagd_process()
    flags = json.loads(json.dumps(process.flags.doc["flags"]))
    if traffic is None:
        flags.pop("loadGeneratorTraffic")
    else:
        flags["loadGeneratorTraffic"]["defaultVariant"] = traffic
    process.load(FlagSet({"flags": flags}))  # what a new pod started from such a file serves
    assert not shop.traffic_on()
    shop.timings.shopper_rate = 200.0
    shop.start()
    time.sleep(1.0)
    shop.stop()
    assert telemetry.records() == []


def test_many_cart_operations_over_one_keep_alive_client(shop_lab):
    """Throughput smoke: every operation is served and counted (timing is benchmarked elsewhere)."""
    _, telemetry, client = shop_lab()
    before = len(telemetry.records("cart"))
    for i in range(100):
        assert add(client, "load").status_code == 200
        assert client.get("/api/cart", params={"sessionId": "load"}).status_code == 200
        assert empty(client, "load").status_code == 204
    # add = AddItem + GetCart; view = GetCart; empty = EmptyCart
    assert len(telemetry.records("cart")) - before == 400
