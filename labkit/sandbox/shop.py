"""The local lab's stand-in for the OpenTelemetry demo shop (frontend API + cart service).

`app(shop)` speaks the demo frontend's API: GET /api/products, GET/POST/DELETE /api/cart. Every
request is recorded in Telemetry as the real lab's spans would be, and EmptyCart fails with the
probability flagd serves for `cartFailure`, writing the cart service's Redis error log. Each
EmptyCart asks flagd for that request, with the cart's user (the shop's session) as `targetingKey`,
so a targeting or `fractional` rule decides which carts fail. (The demo's cart service itself passes
no invocation context to `GetDoubleValueAsync("cartFailure", 0)`: on the real lab such a rule sees
no targetingKey. The local lab sends it so a rule can be rehearsed per session.)

A background shopper plays the demo's load generator: it browses, adds, views and checks out, but,
like the real one, never calls DELETE /api/cart. That is the lab's point: cart failures only show
when someone empties carts on purpose.
"""
from __future__ import annotations

import random
import threading
from collections import OrderedDict

from labkit.sandbox.background import Background
from labkit.sandbox.http import HttpError, Request, Response, Route, Router, json_response

FLAG = "cartFailure"
BOOLEAN_ON_RATE = 0.1  # the lab: a boolean `on` fails about 1 in 10 empties
MAX_CARTS = 10_000


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


def failure_rate(flag: dict | None) -> float:
    """EmptyCart failure probability from an OFREP answer (None: flagd unreachable -> default off).

    The lab's flag is boolean (`on` fails about 1 in 10); current demo releases serve a rate
    (0.25, or 25 meaning percent). Anything else reads as off, as the cart's typed lookup would.
    """
    value = flag.get("value") if isinstance(flag, dict) else None
    if value is True:
        return BOOLEAN_ON_RATE
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    rate = float(value) / 100 if value > 1 else float(value)
    return min(max(rate, 0.0), 1.0)


def cart_context(user_id: str) -> dict:
    """The evaluation context one EmptyCart sends flagd: the cart's user is the targeting key."""
    return {"targetingKey": user_id, "userId": user_id}


class DemoShop:
    """The demo shop's state: carts per user, the cart service's flag lookups, a shopper."""

    def __init__(self, flag_value_fn, telemetry, timings, seed: int | None = None):
        self.flag_value_fn = flag_value_fn  # (flag key, evaluation context) -> OFREP answer or None
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

    # ----- lifecycle ------------------------------------------------------------------------
    def start(self) -> "DemoShop":
        if self.timings.shopper_rate > 0:
            self._shopper.start()
        return self

    def stop(self) -> None:
        self._shopper.stop()

    # ----- the cart service -----------------------------------------------------------------
    def _trace(self) -> tuple[str, str]:
        return self.telemetry.new_trace()

    def _front(self, route: str, trace: str, failed: bool = False) -> None:
        """The frontend-proxy and frontend spans every shop API call goes through."""
        self.telemetry.record("frontend-proxy", route, failed, 2.0, trace)
        self.telemetry.record("frontend", route, failed, 4.0, trace)

    def get_cart(self, user_id: str, trace: str) -> list[dict]:
        _, span = self._trace()
        self.telemetry.record("cart", "GetCart", False, 3.0, trace, span)
        self.telemetry.log_cart_info(f"GetCartAsync called with userId={user_id}", trace, span,
                                     self.pod)
        with self._lock:
            items = dict(self._carts.get(user_id, {}))
        return [{"productId": pid, "quantity": q} for pid, q in items.items()]

    def add_item(self, user_id: str, product_id: str, quantity: int, trace: str) -> None:
        _, span = self._trace()
        self.telemetry.record("cart", "AddItem", False, 4.0, trace, span)
        self.telemetry.log_cart_info(
            f"AddItemAsync called with userId={user_id}, productId={product_id}, "
            f"quantity={quantity}", trace, span, self.pod)
        with self._lock:
            cart = self._carts.setdefault(user_id, {})
            self._carts.move_to_end(user_id)
            cart[product_id] = cart.get(product_id, 0) + quantity
            while len(self._carts) > MAX_CARTS:
                self._carts.popitem(last=False)

    def empty_cart(self, user_id: str, trace: str) -> bool:
        """EmptyCart as the cart service does it: may fail per the flag. True on success."""
        _, span = self._trace()
        self.telemetry.log_cart_info(f"EmptyCartAsync called with userId={user_id}", trace, span,
                                     self.pod)
        if self.rng.random() < failure_rate(self.flag_value_fn(FLAG, cart_context(user_id))):
            self.telemetry.record("cart", "EmptyCart", True, 9.0, trace, span)
            self.telemetry.log_cart_redis_error(trace, span, self.pod)
            return False
        self.telemetry.record("cart", "EmptyCart", False, 3.0, trace, span)
        with self._lock:
            self._carts.pop(user_id, None)
        return True

    # ----- the background shopper -----------------------------------------------------------
    def shop_once(self) -> None:
        """One load-generator session: browse, add, view, sometimes check out. Never DELETE."""
        user = f"shopper-{self.rng.getrandbits(32):08x}"
        trace, _ = self._trace()
        self._front("GET /api/products", trace)
        self.telemetry.record("product-catalog", "ListProducts", False, 2.0, trace)
        product = self.rng.choice(PRODUCTS)["id"]
        trace, _ = self._trace()
        self._front("POST /api/cart", trace)
        self.add_item(user, product, self.rng.randint(1, 3), trace)
        trace, _ = self._trace()
        self._front("GET /api/cart", trace)
        self.get_cart(user, trace)
        self.telemetry.record("currency", "Convert", False, 1.0, trace)
        if self.rng.random() < 0.3:
            self._checkout(user)

    def _checkout(self, user: str) -> None:
        """PlaceOrder. The real checkout empties the cart and ignores the error; the local lab
        leaves cart failures to the attendee's DELETE traffic (see the module docstring)."""
        trace, _ = self._trace()
        self._front("POST /api/checkout", trace)
        for service, endpoint in (("checkout", "PlaceOrder"), ("quote", "GetQuote"),
                                  ("shipping", "ShipOrder"), ("currency", "Convert"),
                                  ("payment", "Charge"), ("email", "SendOrderConfirmation")):
            self.telemetry.record(service, endpoint, False, 5.0, trace)
        with self._lock:
            self._carts.pop(user, None)


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
    trace, _ = shop._trace()
    shop._front("GET /api/products", trace)
    shop.telemetry.record("product-catalog", "ListProducts", False, 2.0, trace)
    return json_response(PRODUCTS)


def _get_cart(shop: DemoShop, req: Request) -> Response:
    user = req.query.get("sessionId") or req.query.get("userId")
    currency = req.query.get("currencyCode", "USD")
    if not user:
        return _error(400, "sessionId is required")
    if currency not in CURRENCIES:
        return _error(400, f"unsupported currency {currency!r}")
    trace, _ = shop._trace()
    shop._front("GET /api/cart", trace)
    items = shop.get_cart(user, trace)
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
    trace, _ = shop._trace()
    shop._front("POST /api/cart", trace)
    shop.add_item(user, product, quantity, trace)
    return json_response({"userId": user, "items": shop.get_cart(user, trace)})


def _empty_cart(shop: DemoShop, req: Request) -> Response:
    body = _body(req)
    user = body.get("userId") if isinstance(body, dict) else None
    if not isinstance(user, str) or not user:
        return _error(400, 'expected {"userId": str}')
    trace, _ = shop._trace()
    if shop.empty_cart(user, trace):
        shop._front("DELETE /api/cart", trace)
        return Response(204, b"", "text/plain")
    shop._front("DELETE /api/cart", trace, failed=True)
    # The demo frontend passes the gRPC error through as its 500 body.
    return _error(500, "9 FAILED_PRECONDITION: Can't access cart storage. "
                       "System.ApplicationException: Wasn't able to connect to redis")


def _index(shop: DemoShop, req: Request) -> Response:
    return Response(200, "<html><body>OpenTelemetry demo (labkit local lab)</body></html>", "text/html")


ROUTES = [
    Route("/", _index),
    Route("/api/products", _get_products),
    Route("/api/cart", _get_cart),
    Route("/api/cart", _add_to_cart, ("POST",)),
    Route("/api/cart", _empty_cart, ("DELETE",)),
]


def app(shop: DemoShop) -> Router:
    return Router(ROUTES, ShopError, shop, "the demo frontend")


__all__ = ["DemoShop", "app", "PRODUCTS", "cart_context", "failure_rate"]
