"""The local lab's demo shop, driven by httpx over loopback like the lab's own traffic."""
from __future__ import annotations

import time

import httpx
import pytest

from labkit.sandbox import Timings
from labkit.sandbox.http import LabServer
from labkit.sandbox.shop import PRODUCTS, DemoShop, app, failure_rate
from labkit.sandbox.dynatrace import REDIS_ERROR, Telemetry

PRODUCT = "OLJCESPC7Z"


class Flag:
    """What flagd serves for cartFailure; tests change it between calls."""

    def __init__(self, value=None):
        self.value = value

    def __call__(self, key, context=None):
        assert key == "cartFailure"
        if self.value is None:
            return None  # no flagd pod Ready: the cart falls back to its default (off)
        return {"key": key, "value": self.value, "variant": "x", "reason": "STATIC"}


@pytest.fixture
def shop_lab():
    timings = Timings.fast()
    timings.shopper_rate = 0  # no background traffic unless a test starts it
    telemetry = Telemetry(timings, seed=7)
    flag = Flag()
    shop = DemoShop(flag, telemetry, timings, seed=11)
    server = LabServer(app(shop)).start()
    client = httpx.Client(base_url=server.url, timeout=10)
    yield shop, telemetry, flag, client
    client.close()
    shop.stop()
    server.stop()


def add(client, user="alice", product=PRODUCT, quantity=1):
    return client.post("/api/cart", json={"userId": user,
                                          "item": {"productId": product, "quantity": quantity}})


def empty(client, user="alice"):
    return client.request("DELETE", "/api/cart", json={"userId": user})


def test_products_are_the_demo_catalogue(shop_lab):
    _, _, _, client = shop_lab
    products = client.get("/api/products").json()
    assert len(products) == len(PRODUCTS) >= 10
    scope = next(p for p in products if p["id"] == PRODUCT)
    assert scope["name"] == "National Park Foundation Explorascope"
    assert scope["priceUsd"] == {"currencyCode": "USD", "units": 101, "nanos": 960000000}


def test_add_view_and_empty_a_cart(shop_lab):
    _, _, _, client = shop_lab
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
    _, _, _, client = shop_lab
    resp = client.post("/api/cart", json=body)
    assert resp.status_code == 400 and "error" in resp.json()


def test_failure_rate_reads_booleans_rates_and_percent():
    on = {"value": True}
    assert failure_rate(on) == 0.1
    assert failure_rate({"value": 0.25}) == 0.25
    assert failure_rate({"value": 25}) == 0.25
    assert failure_rate({"value": 1}) == 1.0
    assert failure_rate({"value": False}) == failure_rate({"value": 0}) == failure_rate(None) == 0
    assert failure_rate({"value": "on"}) == 0  # a typed boolean lookup would not read a string


@pytest.mark.parametrize("value, low, high", [(True, 0.06, 0.16), (1, 1.0, 1.0), (1.0, 1.0, 1.0),
                                              (None, 0.0, 0.0), (False, 0.0, 0.0)])
def test_empty_cart_fails_as_often_as_the_flag_says(shop_lab, value, low, high):
    _, _, flag, client = shop_lab
    flag.value = value
    codes = [empty(client, f"user-{i}").status_code for i in range(1000)]
    assert set(codes) <= {204, 500}
    assert low <= codes.count(500) / len(codes) <= high


def test_a_failed_empty_looks_like_the_lab_in_telemetry(shop_lab):
    _, telemetry, flag, client = shop_lab
    flag.value = 1.0
    add(client, "bob")
    resp = empty(client, "bob")
    assert resp.status_code == 500
    assert "Wasn't able to connect to redis" in resp.json()["error"]
    cart = telemetry.records("cart")
    failed = [r for r in cart if r.failed]
    assert [r.endpoint for r in failed] == ["EmptyCart"]
    assert any(r.failed for r in telemetry.records("frontend"))
    log = telemetry.logs(0, 2**62)[-1]
    assert log["content"] == REDIS_ERROR
    assert (log["loglevel"], log["status"], log["statuscode"], log["priority"]) == (
        "ERROR", "ERROR", "FailedPrecondition", "1")
    assert log["trace_id"] == failed[0].trace_id and len(log["trace_id"]) == 32
    assert log["span_id"] == failed[0].span_id and len(log["span_id"]) == 16
    assert log["service.name"] == "cart" and log["host.name"].startswith("cart-")
    for key in ("dt.owner", "dt.cost.product", "dt.cost.costcenter", "dt.entity.service"):
        assert log[key]
    # The cart keeps its items when EmptyCart fails.
    assert client.get("/api/cart", params={"sessionId": "bob"}).json()["items"]


def test_background_shopper_never_empties_carts(shop_lab):
    shop, telemetry, flag, _ = shop_lab
    flag.value = 1.0
    shop.timings.shopper_rate = 200.0
    shop.start()
    deadline = time.monotonic() + 10
    while len(telemetry.records("cart")) < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    shop.stop()
    cart = telemetry.records("cart")
    assert len(cart) >= 30
    assert {r.endpoint for r in cart} <= {"AddItem", "GetCart"}
    assert not any(r.failed for r in cart)
    assert any(r.service == "checkout" for r in telemetry.records())


def test_many_cart_operations_over_one_keep_alive_client(shop_lab):
    """Throughput smoke: every operation is served and counted (timing is benchmarked elsewhere)."""
    _, telemetry, _, client = shop_lab
    before = len(telemetry.records("cart"))
    for i in range(100):
        assert add(client, "load").status_code == 200
        assert client.get("/api/cart", params={"sessionId": "load"}).status_code == 200
        assert empty(client, "load").status_code == 204
    # add = AddItem + GetCart; view = GetCart; empty = EmptyCart
    assert len(telemetry.records("cart")) - before == 400
