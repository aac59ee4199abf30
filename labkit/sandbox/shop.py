"""The local lab's stand-in for the OpenTelemetry demo shop: frontend API, checkout and cart service.

`app(shop)` speaks the demo frontend's API: GET /api/products, GET/POST/DELETE /api/cart. Each
request is one trace of the demo's spans in Telemetry. The shop is one demo release's
(labkit/releases): its cart asks flagd for `cartFailure` as that release's cart does, on every
EmptyCart (openfeature.py), fails that share of empties (`Release.failure_rate`) with the Redis
error log, and writes the evaluation as a span event.

A background shopper plays the demo's load generator: it browses, adds, views and checks out, but,
like the real one, never calls DELETE /api/cart. Checkout empties the cart after placing the order
and ignores the error, as the demo's checkout does (checkout/main.go `_ = cs.emptyUserCart(...)`):
with the flag on, the shopper's checkouts keep failing EmptyCart until the change is rolled back.
"""
from __future__ import annotations

import random
import threading
import uuid
from collections import OrderedDict

import httpx

from labkit import releases
from labkit.sandbox.background import Background
from labkit.sandbox.flagd.ofrep import OFREP_PORT
from labkit.sandbox.http import HttpError, Request, Response, Route, Router, json_response
from labkit.sandbox.openfeature import EVENT, CartFlagClient
from labkit.sandbox.traces import Trace

MAX_CARTS = 10_000
CHECKOUT_SHARE = 0.3  # shopper sessions that check out
CART_ERROR = ("Status(StatusCode=\"FailedPrecondition\", Detail=\"Can't access cart storage. "
              "System.ApplicationException: Wasn't able to connect to redis\")")


def _price(units: int, nanos: int) -> dict:
    return {"currencyCode": "USD", "units": units, "nanos": nanos}


# The demo's product catalogue (ids and names as in the OpenTelemetry demo's products.json).
PRODUCTS = [
    {"id": "OLJCESPC7Z", "name": "National Park Foundation Explorascope",
     "priceUsd": _price(101, 960000000), "categories": ["telescopes"]},
    {"id": "66VCHSJNUP", "name": "Starsense Explorer Refractor Telescope",
     "priceUsd": _price(349, 950000000), "categories": ["telescopes"]},
    {"id": "1YMWWN1N4O", "name": "Eclipsmart Travel Refractor Telescope",
     "priceUsd": _price(129, 950000000), "categories": ["telescopes", "travel"]},
    {"id": "L9ECAV7KIM", "name": "Lens Cleaning Kit",
     "priceUsd": _price(21, 950000000), "categories": ["accessories"]},
    {"id": "2ZYFJ3GM2N", "name": "Roof Binoculars",
     "priceUsd": _price(209, 950000000), "categories": ["binoculars"]},
    {"id": "0PUK6V6EV0", "name": "Solar System Color Imager",
     "priceUsd": _price(175, 0), "categories": ["accessories", "telescopes"]},
    {"id": "LS4PSXUNUM", "name": "Red Flashlight",
     "priceUsd": _price(57, 800000000), "categories": ["accessories", "flashlights"]},
    {"id": "9SIQT8TOJO", "name": "Optical Tube Assembly",
     "priceUsd": _price(3599, 0), "categories": ["accessories", "telescopes", "assembly"]},
    {"id": "6E92ZMYYFZ", "name": "Solar Filter",
     "priceUsd": _price(69, 950000000), "categories": ["accessories", "telescopes"]},
    {"id": "HQTGWGPNH4", "name": "The Comet Book",
     "priceUsd": _price(0, 990000000), "categories": ["books"]},
]
for _p in PRODUCTS:
    _p.setdefault("description", f"{_p['name']} from the OpenTelemetry demo's astronomy shop.")
    _p.setdefault("picture", f"{_p['name'].replace(' ', '')}.jpg")
PRODUCT_IDS = {p["id"]: p for p in PRODUCTS}
CURRENCIES = {"USD", "EUR", "CAD", "JPY", "GBP", "TRY", "CHF"}


class DemoShop:
    """The demo shop's state: carts per user, the cart service asking flagd, a shopper."""

    def __init__(self, cluster, telemetry, timings, release: releases.Release | None = None,
                 seed: int | None = None):
        self.release = release or releases.get()
        self.cluster = cluster  # flagd's Service: the cart and the load generator ask it
        self.flagd = CartFlagClient(cluster, self.release)  # cluster: where flagd's Service answers
        self.telemetry = telemetry
        self.timings = timings
        self.rng = random.Random(seed)
        self._lock = threading.Lock()
        self._carts: OrderedDict[str, dict[str, int]] = OrderedDict()
        # Like the demo's load generator: sessions at random intervals, `shopper_rate` a second.
        self._shopper = Background(
            "labkit-shopper", lambda: self.timings.shopper_rate > 0 and self.shop_once(),
            lambda: self.rng.expovariate(self.timings.shopper_rate) if self.timings.shopper_rate > 0 else 0.5)
        self.pod = f"{self.rng.getrandbits(36):09x}-{self.rng.getrandbits(24):05x}"
        self._loadgen = httpx.Client(timeout=2.0)  # the load generator's own calls to flagd

    # ----- lifecycle ------------------------------------------------------------------------
    def start(self) -> "DemoShop":
        if self.timings.shopper_rate > 0:
            self._shopper.start()
        return self

    def stop(self) -> None:
        self._shopper.stop()
        self.flagd.close()
        self._loadgen.close()

    def trace(self) -> Trace:
        return Trace(self.telemetry)

    # ----- the cart service (called inside its gRPC server span) ----------------------------
    def log(self, trace: Trace, content: str) -> None:
        """An INFO line of the service whose span is open (the demo's services log over OTel)."""
        span = trace.current
        self.telemetry.log_info(span.service, content, span.trace_id, span.span_id, self.pod,
                                trace.now_ns() // 1_000_000)

    def get_cart(self, trace: Trace, user_id: str) -> list[dict]:
        self.log(trace, f"GetCartAsync called with userId={user_id}")
        with self._lock:
            items = dict(self._carts.get(user_id, {}))
        return [{"productId": pid, "quantity": q} for pid, q in items.items()]

    def add_item(self, trace: Trace, user_id: str, product_id: str, quantity: int) -> None:
        self.log(trace, f"AddItemAsync called with userId={user_id}, productId={product_id}, "
                         f"quantity={quantity}")
        with self._lock:
            cart = self._carts.setdefault(user_id, {})
            self._carts.move_to_end(user_id)
            cart[product_id] = cart.get(product_id, 0) + quantity
            while len(self._carts) > MAX_CARTS:
                self._carts.popitem(last=False)

    def empty_cart(self, trace: Trace, user_id: str) -> bool:
        """CartService.EmptyCart of the release: read the flag, maybe the bad store. True on success."""
        span = trace.current
        span.attributes["user.id" if _major(self.release) >= 3 else "app.user.id"] = user_id  # its tag
        trace.event(span, "Empty cart")
        read = self._read_flag(trace)
        trace.event(span, EVENT, **read.event())  # TraceEnricherHook, in the SDK's finally
        rate = self.release.failure_rate(read.value)
        self.log(trace, f"EmptyCartAsync called with userId={user_id}")
        if rate > 0 and self.rng.random() < rate:  # the bad store at badhost:1234
            trace.event(span, "exception", **{"exception.type": "Grpc.Core.RpcException",
                                              "exception.message": CART_ERROR})
            trace.fail(span, CART_ERROR)
            self.telemetry.log_cart_redis_error(span.trace_id, span.span_id, self.pod,
                                                trace.now_ns() // 1_000_000)
            return False
        with self._lock:
            self._carts.pop(user_id, None)
        return True

    def _read_flag(self, trace: Trace):
        """The provider's call to flagd:8013, a client span of the cart (its gRPC client is instrumented)."""
        package, method = self.release.cart_method.rsplit("/", 1)
        with trace.span("cart", self.release.cart_method, "client", **{
                "rpc.system": "grpc", "rpc.service": package, "rpc.method": method,
                "server.address": "flagd", "server.port": 8013}) as call:
            read = self.flagd.evaluate(traceparent=trace.traceparent(call))
            call.attributes["rpc.grpc.status_code"] = read.grpc_status
            if read.grpc_status:
                call.status = "error"
        return read

    # ----- the background shopper -----------------------------------------------------------
    def traffic_on(self) -> bool:
        """The release's load generator's gate, as 3.0.0's k6 script asks it on every iteration
        (getFlagdValue): POST flagd:8016 OFREP for its traffic flag, `value || 0`, nothing sent while
        that is <= 0 (Release.load_generator_sends); a missing flag (404) or flagd down reads 0."""
        key = self.release.traffic_flag
        if key is None:
            return True
        process = self.cluster.flagd_process()
        address = process.address(OFREP_PORT) if process is not None else None
        if address is None:
            return False
        try:
            res = self._loadgen.post(f"http://{address[0]}:{address[1]}/ofrep/v1/evaluate/flags/{key}", json={})
            value = res.json().get("value") if res.status_code == 200 else 0
        except (httpx.HTTPError, ValueError, AttributeError):  # k6's http.post/JSON.parse fail the iteration
            return False
        return self.release.load_generator_sends(value)

    def shop_once(self) -> None:
        """One load-generator session: browse, add, view, sometimes check out. Never DELETE."""
        if not self.traffic_on():
            return
        user = f"shopper-{self.rng.getrandbits(32):08x}"
        list_products(self)
        add_to_cart(self, user, self.rng.choice(PRODUCTS)["id"], self.rng.randint(1, 3))
        view_cart(self, user, "USD")
        if self.rng.random() < CHECKOUT_SHARE:
            place_order(self, user, self.rng.choice(sorted(CURRENCIES)))


def _major(release: releases.Release) -> int:
    return int(release.version.split(".")[0])


# ----- the shop's calls, one trace each, as the demo's services make them ---------------------------
def list_products(shop: DemoShop) -> list[dict]:
    trace = shop.trace()
    with trace.http(None, "frontend-proxy", "GET", "/api/products"):
        with trace.http(None, "frontend", "GET", "/api/products"):
            with trace.grpc("frontend", "product-catalog", "ProductCatalogService", "ListProducts"):
                return PRODUCTS


def add_to_cart(shop: DemoShop, user: str, product: str, quantity: int) -> list[dict]:
    trace = shop.trace()
    with trace.http(None, "frontend-proxy", "POST", "/api/cart"):
        with trace.http(None, "frontend", "POST", "/api/cart"):
            with trace.grpc("frontend", "cart", "CartService", "AddItem"):
                shop.add_item(trace, user, product, quantity)
            with trace.grpc("frontend", "cart", "CartService", "GetCart"):
                return shop.get_cart(trace, user)


def view_cart(shop: DemoShop, user: str, currency: str) -> list[dict]:
    trace = shop.trace()
    with trace.http(None, "frontend-proxy", "GET", "/api/cart"):
        with trace.http(None, "frontend", "GET", "/api/cart"):
            with trace.grpc("frontend", "cart", "CartService", "GetCart"):
                items = shop.get_cart(trace, user)
            for _ in items:
                with trace.grpc("frontend", "currency", "CurrencyService", "Convert"):
                    pass
            return items


def empty_cart(shop: DemoShop, user: str) -> bool:
    """DELETE /api/cart: the frontend calls EmptyCart and answers 500 when it fails."""
    trace = shop.trace()
    with trace.http(None, "frontend-proxy", "DELETE", "/api/cart") as proxy:
        with trace.http(None, "frontend", "DELETE", "/api/cart") as front:
            with trace.grpc("frontend", "cart", "CartService", "EmptyCart"):
                ok = shop.empty_cart(trace, user)
            if not ok:
                trace.fail(front, CART_ERROR)
                trace.fail(proxy, CART_ERROR)
            return ok


def _convert(shop: DemoShop, trace: Trace) -> None:
    with trace.grpc("checkout", "currency", "CurrencyService", "Convert"):
        shop.log(trace, "conversion successful")  # currency's server.cpp


def place_order(shop: DemoShop, user: str, currency: str) -> str:
    """POST /api/checkout: checkout's PlaceOrder as the demo's checkout/main.go makes its calls."""
    trace = shop.trace()
    with trace.http(None, "frontend-proxy", "POST", "/api/checkout"):
        with trace.http(None, "frontend", "POST", "/api/checkout"):
            with trace.grpc("frontend", "checkout", "CheckoutService", "PlaceOrder") as order:
                order.attributes["user.id"] = user
                shop.log(trace, "[PlaceOrder]")
                with trace.span("checkout", "prepareOrderItemsAndShippingQuoteFromCart", "internal"):
                    with trace.grpc("checkout", "cart", "CartService", "GetCart"):
                        items = shop.get_cart(trace, user)
                    for _ in items:
                        with trace.grpc("checkout", "product-catalog", "ProductCatalogService", "GetProduct"):
                            pass
                        _convert(shop, trace)
                    with trace.http("checkout", "shipping", "POST", "/get-quote"):
                        with trace.http("shipping", "quote", "POST", "/getquote"):
                            shop.log(trace, "Calculated quote")
                    _convert(shop, trace)
                with trace.grpc("checkout", "payment", "PaymentService", "Charge"):
                    pass
                shop.log(trace, "payment went through")
                with trace.http("checkout", "shipping", "POST", "/ship-order"):
                    pass
                with trace.grpc("checkout", "cart", "CartService", "EmptyCart"):
                    shop.empty_cart(trace, user)  # `_ = cs.emptyUserCart(ctx, req.UserId)`: error ignored
                shop.log(trace, "order placed")
                with trace.http("checkout", "email", "POST", "/send_order_confirmation"):
                    pass
    return str(uuid.UUID(int=shop.rng.getrandbits(128), version=1))


# ----- the frontend API -------------------------------------------------------------------------
class ShopError(HttpError):
    """The demo frontend answers errors as {"error": message}."""

    def response(self) -> Response:
        return json_response({"error": self.message}, self.status)


def _error(status: int, message: str) -> Response:
    return ShopError(status, message).response()


def _body(req: Request):
    try:
        return req.json()
    except (ValueError, UnicodeDecodeError):
        return None


def _get_products(shop: DemoShop, req: Request) -> Response:
    return json_response(list_products(shop))


def _get_cart(shop: DemoShop, req: Request) -> Response:
    user = req.query.get("sessionId") or req.query.get("userId")
    currency = req.query.get("currencyCode", "USD")
    if not user:
        return _error(400, "sessionId is required")
    if currency not in CURRENCIES:
        return _error(400, f"unsupported currency {currency!r}")
    items = view_cart(shop, user, currency)
    return json_response({"userId": user, "items": [
        {**item, "product": PRODUCT_IDS.get(item["productId"])} for item in items]})


def _add_to_cart(shop: DemoShop, req: Request) -> Response:
    body = _body(req)
    item = body.get("item") if isinstance(body, dict) else None
    user = body.get("userId") if isinstance(body, dict) else None
    if not isinstance(user, str) or not user or not isinstance(item, dict):
        return _error(400, 'expected {"userId": str, "item": {"productId": str, "quantity": int}}')
    product, quantity = item.get("productId"), item.get("quantity", 1)
    if product not in PRODUCT_IDS:
        return _error(400, f"product {product!r} not found")
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
        return _error(400, "quantity must be a positive integer")
    return json_response({"userId": user, "items": add_to_cart(shop, user, product, quantity)})


def _empty_cart(shop: DemoShop, req: Request) -> Response:
    body = _body(req)
    user = body.get("userId") if isinstance(body, dict) else None
    if not isinstance(user, str) or not user:
        return _error(400, 'expected {"userId": str}')
    if empty_cart(shop, user):
        return Response(204, b"", "text/plain")
    # The demo frontend passes the gRPC error through as its 500 body.
    return _error(500, "9 FAILED_PRECONDITION: Can't access cart storage. "
                       "System.ApplicationException: Wasn't able to connect to redis")


def _checkout(shop: DemoShop, req: Request) -> Response:
    """POST /api/checkout (the load generator's checkout): the order is placed even when the cart
    cannot be emptied."""
    body = _body(req)
    user = body.get("userId") if isinstance(body, dict) else None
    currency = body.get("userCurrency", "USD") if isinstance(body, dict) else "USD"
    if not isinstance(user, str) or not user or currency not in CURRENCIES:
        return _error(400, 'expected {"userId": str, "userCurrency": one of '
                      + ", ".join(sorted(CURRENCIES)) + "}")
    return json_response({"orderId": place_order(shop, user, currency), "userId": user})


def _index(shop: DemoShop, req: Request) -> Response:
    return Response(200, "<html><body>OpenTelemetry demo (labkit local lab)</body></html>", "text/html")


ROUTES = [
    Route("/", _index),
    Route("/api/products", _get_products),
    Route("/api/cart", _get_cart),
    Route("/api/cart", _add_to_cart, ("POST",)),
    Route("/api/cart", _empty_cart, ("DELETE",)),
    Route("/api/checkout", _checkout, ("POST",)),
]


def app(shop: DemoShop) -> Router:
    return Router(ROUTES, ShopError, shop, "the demo frontend")


__all__ = ["DemoShop", "PRODUCTS", "app", "empty_cart", "place_order"]
