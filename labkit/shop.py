"""Cart traffic against the demo frontend: add an item, view the cart, empty it (EmptyCart).

The demo's own load generator never calls `DELETE /api/cart`, so cart failures stay hidden unless
someone empties carts on purpose (FACTS.md). `Shop.run()` does exactly that, at a chosen rate for a
chosen time, and counts what failed and when. Refused connections, timeouts and 5xx answers are
counted as failures, never raised; when the frontend cannot be reached at all, the result carries a
note on how to reach it.

Interrupts: `stop` (a threading.Event) ends a run cleanly and returns the partial result. A
KeyboardInterrupt (Ctrl-C, the notebook's stop button) is reported through `progress`, the partial
result is kept in `Shop.last_result`, and the interrupt is re-raised, so scripts and cells stop as
the user asked.
"""
from __future__ import annotations

import math
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import httpx

from labkit import cards
from labkit.errors import BadInput
from labkit.progress import Progress
from labkit.settings import DEFAULT_FRONTEND_URL, Settings
from labkit.verdict import Count, share_text, span_text

FALLBACK_PRODUCT = "OLJCESPC7Z"  # the demo catalogue's first product
PORT_FORWARD_HINT = ("run `kubectl -n default port-forward svc/frontend-proxy 8080:8080` in another "
                     "terminal (the lab's way), set FRONTEND_URL, or start the local lab")
MAX_SECONDS = 3600.0
# As long as the real path lets a request take: frontend-proxy's `/` route keeps Envoy's default route
# timeout of 15 s (src/frontend-proxy/envoy.tmpl.yaml sets none; only /flagservice/ sets 0s), so on the
# demo a slower answer is the proxy's 504. A shorter wait counts a busy machine's slow answers as cart
# failures (a room of 40 seats on 2 cores: control seats saw "no answer within 5 s").
TIMEOUT = 15.0


@dataclass(frozen=True)
class Failure:
    """One failed shop operation, as the shopper saw it."""

    timestamp: datetime  # UTC, when the answer (or the error) arrived
    operation: str       # products | add | view | empty
    status: int | None   # HTTP status, None when there was no answer
    detail: str


@dataclass
class ShopResult:
    """What a run of cart traffic did."""

    url: str = ""
    sessions: int = 0
    operations: int = 0
    failures: list[Failure] = field(default_factory=list)
    by_operation: dict[str, int] = field(default_factory=dict)
    failures_by_operation: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)
    max_failures_kept: int = 1000
    failure_count: int = 0  # all failures, also those beyond max_failures_kept
    started_at: datetime | None = None  # UTC, when the run's first session started

    @property
    def first_failure_at(self) -> datetime | None:
        return self.failures[0].timestamp if self.failures else None

    @property
    def ops_per_second(self) -> float:
        return self.operations / self.seconds if self.seconds > 0 else 0.0

    @property
    def unreachable(self) -> bool:
        return bool(self.failures) and self.failure_count == self.operations and all(
            f.status is None for f in self.failures)

    @property
    def empties_text(self) -> str:
        """'9.8 % (5 of 51 EmptyCart calls failed in this run only, 09:50:30–09:51:40 UTC)', as the
        verdict shows a rate, with this run's window: the verdict counts every call since the change,
        so its number differs and the words say why; "" without any."""
        total = self.by_operation.get("empty", 0)
        failed = self.failures_by_operation.get("empty", 0)
        if not total:
            return ""
        when = "in this run only" + (f", {span_text(self.started_at, self.started_at + timedelta(seconds=self.seconds))}"
                                     if self.started_at else "")
        return share_text(Count(failed, total), "EmptyCart calls", when)

    def summary(self) -> str:
        text = (f"{self.sessions} sessions, {self.operations} operations in {self.seconds:.1f} s "
                f"({self.ops_per_second:.0f}/s), {self.failure_count} failed")
        if self.empties_text:
            text += f"; EmptyCart: {self.empties_text}"
        if self.first_failure_at:
            text += f", first failure at {self.first_failure_at:%H:%M:%S} UTC"
        if self.interrupted:
            text += ", interrupted"
        return text + "".join(f". {n}" for n in self.notes)

    __repr__ = __str__ = summary

    def _repr_html_(self) -> str:
        return cards.shop_result(self)


class _Tally:
    """Counts shared by the worker threads (one lock, cheap updates)."""

    def __init__(self, result: ShopResult):
        self.result = result
        self.lock = threading.Lock()
        self.ops = Counter()
        self.failed = Counter()

    def ok(self, op: str) -> None:
        with self.lock:
            self.ops[op] += 1
            self.result.operations += 1

    def fail(self, op: str, status: int | None, detail: str) -> None:
        failure = Failure(datetime.now(timezone.utc), op, status, detail[:300])
        with self.lock:
            self.ops[op] += 1
            self.failed[op] += 1
            self.result.operations += 1
            self.result.failure_count += 1
            if len(self.result.failures) < self.result.max_failures_kept:
                self.result.failures.append(failure)


class Shop:
    """The demo shop's frontend API, as a shopper who empties carts.

    `Shop(settings)` or `Shop("http://localhost:8080")`; `run(seconds, rate)` sends sessions of
    add -> view -> empty. One keep-alive httpx.Client per worker thread.
    """

    def __init__(self, settings_or_url: Settings | str | None = None, timeout: float = TIMEOUT):
        if settings_or_url is None:
            settings_or_url = Settings.load()
        url = settings_or_url.frontend_url if isinstance(settings_or_url, Settings) else str(settings_or_url)
        url = (url or DEFAULT_FRONTEND_URL).strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise BadInput(f"The frontend URL must start with http:// or https://; got {url[:80]!r}. "
                           "Set FRONTEND_URL (the lab's port-forward is http://localhost:8080).")
        self.url = url
        self.timeout = float(timeout)
        self._products: list[str] | None = None
        self._lock = threading.Lock()
        self.last_result: ShopResult | None = None

    def __repr__(self) -> str:
        return f"Shop({self.url!r})"

    def _client(self, pool: int = 1) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=httpx.Timeout(self.timeout),
                            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
                            trust_env=False, headers={"User-Agent": "labkit-shop"})

    # ---- one session

    def _product(self, client: httpx.Client, tally: _Tally, n: int) -> tuple[str | None, bool]:
        """(a product id from the cached catalogue, reached); id None when the catalogue failed."""
        products = self._products
        if products is None:
            with self._lock:  # one worker fetches the catalogue, the others wait for it
                products = self._products
                if products is None:
                    resp, reached = self._call(client, tally, "products", "GET", "/api/products")
                    if resp is None:
                        return None, reached
                    try:
                        body = resp.json()
                        items = body.get("products", []) if isinstance(body, dict) else body
                        products = [str(p["id"]) for p in items if isinstance(p, dict) and p.get("id")]
                    except (ValueError, TypeError, KeyError, AttributeError):
                        products = []
                    products = self._products = products or [FALLBACK_PRODUCT]
        return products[n % len(products)], True

    def _call(self, client: httpx.Client, tally: _Tally, op: str, method: str, path: str,
              **kwargs) -> tuple[httpx.Response | None, bool]:
        """(response when it succeeded, whether the frontend answered at all)."""
        try:
            resp = client.request(method, path, **kwargs)
        except httpx.ConnectError:
            tally.fail(op, None, f"connection refused: the frontend at {self.url} is not reachable")
            return None, False
        except httpx.TimeoutException:
            tally.fail(op, None, f"no answer within {self.timeout:g} s")
            return None, True
        except httpx.HTTPError as exc:
            tally.fail(op, None, f"{type(exc).__name__}: the connection broke off")
            return None, True
        if resp.status_code >= 400:
            tally.fail(op, resp.status_code, _detail(resp))
            return None, True
        tally.ok(op)
        return resp, True

    def session(self, client: httpx.Client, tally: _Tally, n: int) -> bool:
        """add -> view -> empty for one new user. False when the frontend could not be reached."""
        product, reached = self._product(client, tally, n)
        if product is None:
            return reached
        user = uuid.uuid4().hex
        _, reached = self._call(client, tally, "add", "POST", "/api/cart",
                                    json={"userId": user, "item": {"productId": product, "quantity": 1}})
        if not reached:
            return False
        # view and empty even when add failed: EmptyCart is what the lab needs exercised
        _, reached = self._call(client, tally, "view", "GET", "/api/cart",
                                params={"sessionId": user, "currencyCode": "USD"})
        if not reached:
            return False
        _, reached = self._call(client, tally, "empty", "DELETE", "/api/cart", json={"userId": user})
        return reached

    # ---- a run

    def run(self, seconds: float = 60, rate: float = 5.0, progress: Progress | None = None,
            stop: threading.Event | None = None, max_sessions: int | None = None,
            workers: int | None = None, until_failures: int | None = None) -> ShopResult:
        """Cart sessions for `seconds` at `rate` sessions/s (0 = as fast as possible).

        Bounded by `seconds` (at most an hour) and `max_sessions`; ends early once `until_failures`
        requests have failed (enough to show the change worked). Returns a ShopResult; failures
        (5xx, refused connections, timeouts) are counted, not raised.
        """
        seconds, rate = _checked_pace(seconds, rate)
        if workers is None:  # enough keep-alive connections to hide per-request latency
            workers = 12 if rate == 0 else max(1, min(16, math.ceil(rate / 5)))
        run = _Run(self, seconds, rate, stop or threading.Event(), max_sessions)
        run.result.started_at = datetime.now(timezone.utc)
        threads = [threading.Thread(target=run.worker, name=f"labkit-shop-{i}", daemon=True)
                   for i in range(max(1, int(workers)))]
        for t in threads:
            t.start()
        try:
            run.watch(threads, progress, until_failures)
        except KeyboardInterrupt:
            run.stop.set()
            for t in threads:
                t.join(timeout=self.timeout + 1)
            run.result.interrupted = True
            self._end(run, progress, "interrupted: {}", None)
            raise
        return self._end(run, progress, "{}", 1.0)

    def _end(self, run: "_Run", progress: Progress | None, say: str, fraction) -> ShopResult:
        self._finish(run.result, run.tally, run.state, run.start, run.unreachable)
        self.last_result = run.result
        if progress:
            progress(say.format(run.result.summary()), fraction)
        return run.result

    def _finish(self, result: ShopResult, tally: _Tally, state: dict, start: float,
                unreachable: threading.Event) -> None:
        with tally.lock:
            result.sessions = state["sessions"]
            result.by_operation = dict(tally.ops)
            result.failures_by_operation = dict(tally.failed)
        result.failures.sort(key=lambda f: f.timestamp)
        result.seconds = time.monotonic() - start
        if unreachable.is_set():
            result.notes.append(f"The frontend at {self.url} could not be reached: {PORT_FORWARD_HINT}")


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except (ValueError, UnicodeDecodeError):
        text = resp.text.strip()
        return f"HTTP {resp.status_code}" + (f": {text[:200]}" if text and not text.startswith("<") else "")
    if isinstance(body, dict):
        err = body.get("error", body.get("message", ""))
        if isinstance(err, dict):
            err = err.get("message", "")
        return f"HTTP {resp.status_code}: {err}" if err else f"HTTP {resp.status_code}"
    return f"HTTP {resp.status_code}"


def _checked_pace(seconds, rate) -> tuple[float, float]:
    """(seconds, rate) as floats within their bounds, or a BadInput saying what is allowed."""
    try:
        seconds, rate = float(seconds), float(rate)
    except (TypeError, ValueError):
        raise BadInput(f"seconds and rate must be numbers; got {seconds!r}, {rate!r}.") from None
    if not (0 < seconds <= MAX_SECONDS):
        raise BadInput(f"seconds must be between 0 and {MAX_SECONDS:g}; got {seconds:g}.")
    if not math.isfinite(rate) or rate < 0:
        raise BadInput(f"rate must be >= 0 sessions per second (0 = as fast as possible); got {rate:g}.")
    return seconds, rate


class _Run:
    """One Shop.run(): the session counter the workers share, paced at `rate`, until the deadline."""

    def __init__(self, shop: Shop, seconds: float, rate: float, stop: threading.Event,
                 max_sessions: int | None):
        self.shop, self.seconds, self.rate, self.stop = shop, seconds, rate, stop
        self.max_sessions = max_sessions
        self.result = ShopResult(url=shop.url)
        self.tally = _Tally(self.result)
        self.state = {"next": 0, "sessions": 0}
        self.lock = threading.Lock()
        self.start = time.monotonic()
        self.deadline = self.start + seconds
        self.unreachable = threading.Event()

    def claim(self) -> int | None:
        """The next session number once it may start, or None when the run is over."""
        with self.lock:
            n = self.state["next"]
            if self.max_sessions is not None and n >= self.max_sessions:
                return None
            self.state["next"] = n + 1
        if self.rate > 0:
            due = self.start + n / self.rate
            if due >= self.deadline:
                return None
            if due > time.monotonic() and self.stop.wait(due - time.monotonic()):
                return None
        return n

    def worker(self) -> None:
        with self.shop._client() as client:
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                n = self.claim()
                if n is None or self.stop.is_set():
                    return
                reached = self.shop.session(client, self.tally, n)
                with self.lock:
                    self.state["sessions"] += 1
                if not reached:  # a pause, not a busy loop, while the frontend is unreachable
                    self.unreachable.set()
                    self.stop.wait(min(0.5, max(0.0, self.deadline - time.monotonic())))

    def watch(self, threads: list[threading.Thread], progress: Progress | None,
              until_failures: int | None) -> None:
        """Wait for the workers, ending early at `until_failures`, reporting progress."""
        result = self.result
        while any(t.is_alive() for t in threads):
            threads[0].join(timeout=0.5 if progress else 0.2)
            if until_failures and result.failure_count >= until_failures:
                self.stop.set()
            for t in threads:
                if not t.is_alive():
                    t.join()
            if progress and any(t.is_alive() for t in threads):
                elapsed = time.monotonic() - self.start
                progress(f"{self.state['sessions']} sessions, {result.operations} operations, "
                         f"{result.failure_count} failed", min(1.0, elapsed / self.seconds))
