"""labkit.shop against the local lab's demo frontend, over loopback with real httpx."""
from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from labkit.errors import BadInput
from labkit.settings import Settings
from labkit.shop import Shop


@pytest.fixture
def shop(lab_env):
    return Shop(Settings.load(environ=lab_env, dotenv=None))


@pytest.fixture
def cart_flag(lab_env):
    """Make the local lab's flagd serve cartFailure = a variant of its release (3.0.0: off, 10%, ...
    100%) as the lab does it: ConfigMap, restart, served; back to off after the test."""
    from labkit.cluster import Cluster

    cluster = Cluster(Settings.load(environ=lab_env, dotenv=None))

    def set_variant(variant: str):
        cluster.set_default_variant("cartFailure", variant)
        cluster.restart_flagd()
        cluster.wait_served("cartFailure", variant, timeout=10)

    yield set_variant
    if cluster.served_value("cartFailure").variant != "off":
        set_variant("off")


def test_sessions_add_view_and_empty_without_failures_when_the_flag_is_off(shop, cart_flag):
    cart_flag("off")
    progress = []
    result = shop.run(seconds=1.0, rate=10, progress=lambda m, f: progress.append((m, f)))
    assert 9 <= result.sessions <= 11  # rate-limited, bounded by time
    assert result.by_operation["add"] == result.by_operation["view"] == result.by_operation["empty"] \
        == result.sessions
    assert result.by_operation.get("products") == 1  # the catalogue is fetched once, then cached
    assert result.operations == sum(result.by_operation.values())
    assert result.failure_count == 0 and result.failures == [] and result.first_failure_at is None
    assert progress and progress[-1][1] == 1.0
    assert "0 failed" in result.summary() and f"{result.sessions} sessions" in result.summary()


def test_failures_are_seen_and_timed_when_the_cart_fails(shop, cart_flag):
    cart_flag("100%")  # every EmptyCart fails
    before = time.time()
    result = shop.run(seconds=1.0, rate=10)
    assert result.sessions >= 5
    assert result.failures_by_operation == {"empty": result.sessions}
    assert result.failure_count == result.sessions
    first = result.failures[0]
    assert first.operation == "empty" and first.status == 500
    assert "redis" in first.detail
    assert first.timestamp.tzinfo is not None and first.timestamp.timestamp() >= before - 1
    assert result.first_failure_at == first.timestamp
    n = result.sessions  # the rate as the verdict and the chart print one
    # with its own window: this run only, from its start to its end (the verdict counts since the change)
    start, end = result.started_at, result.started_at + timedelta(seconds=result.seconds)
    assert start.timestamp() >= before - 1 and start <= first.timestamp <= end + timedelta(seconds=1)
    said = (f"100.0 % ({n} of {n} EmptyCart calls failed in this run only, "
            f"{start:%H:%M:%S}–{end:%H:%M:%S} UTC)")
    assert f"; EmptyCart: {said}" in result.summary()
    assert said in result._repr_html_()


def test_the_releases_on_fails_some_empties(shop, cart_flag, local_lab):
    cart_flag(local_lab.release.lab_on_variant)  # 3.0.0's 10%: the lab page's "about 1 in 10"
    result = shop.run(seconds=20, rate=0, max_sessions=200)
    failed = result.failures_by_operation.get("empty", 0)
    assert result.sessions == 200
    assert 3 <= failed <= 50


def test_unreachable_frontend_is_counted_with_a_hint(cart_flag, closed_port):
    port = closed_port
    start = time.monotonic()
    result = Shop(f"http://127.0.0.1:{port}").run(seconds=1.0, rate=50)
    assert time.monotonic() - start < 2.5
    assert result.failure_count >= 1 and result.unreachable
    assert all(f.status is None for f in result.failures)
    assert "port-forward svc/frontend-proxy 8080:8080" in result.summary()
    assert result.failure_count < 50  # backs off instead of hammering a closed port


def test_frontend_5xx_is_counted_not_raised(shop, local_lab):
    local_lab.frontend_server.faults.add(status=503, path_prefix="/api/cart", method="POST", count=3)
    result = shop.run(seconds=0.5, rate=20, max_sessions=5)
    assert result.sessions == 5
    assert result.failures_by_operation.get("add") == 3
    assert all(f.status == 503 for f in result.failures if f.operation == "add")


def test_stop_event_ends_the_run_early(shop):
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    start = time.monotonic()
    result = shop.run(seconds=30, rate=5, stop=stop)
    assert time.monotonic() - start < 2
    assert 1 <= result.sessions <= 4


def test_as_fast_as_possible(shop, cart_flag):
    cart_flag("off")
    result = shop.run(seconds=1.5, rate=0)
    print(f"\nshop throughput: {result.summary()}")
    assert result.operations > 50 and result.failure_count == 0


def test_bad_arguments():
    with pytest.raises(BadInput):
        Shop("localhost:8080")
    shop = Shop("http://127.0.0.1:9")
    for kwargs in ({"seconds": 0}, {"seconds": 10_000}, {"rate": -1}, {"seconds": "soon"}):
        with pytest.raises(BadInput):
            shop.run(**kwargs)
