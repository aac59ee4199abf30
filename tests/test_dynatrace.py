"""labkit.dynatrace against the local lab's tenant, over loopback with real httpx.

Tests poke the sandbox only to arrange (faults, the flag value the cart sees) and to inspect what
the tenant stored (events); labkit itself reaches it over HTTP.
"""
from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from labkit.dynatrace import READ_SCOPES, Dynatrace
from labkit.errors import Forbidden, LabError, LabTimeout, Unreachable
from labkit.settings import Secret, Settings
from labkit.shop import Shop
from labkit.tenant import PROBLEM_TITLE

EVENTS = "/api/v2/events/ingest"


@pytest.fixture
def settings(lab_env) -> Settings:
    return Settings.load(environ=lab_env, dotenv=None)


@pytest.fixture
def dt(settings):
    client = Dynatrace(settings, timeout=5.0, retries=3, backoff=0.05)
    yield client
    client.close()


@pytest.fixture
def secrets(local_lab):
    return [local_lab.api_token, local_lab.ingest_token, local_lab.platform_token] + [
        t.rsplit(".", 1)[1] for t in (local_lab.api_token, local_lab.ingest_token, local_lab.platform_token)]


def no_secret(secrets, *texts):
    for text in texts:
        for s in secrets:
            assert s not in text


def stored(local_lab, run_id: str) -> int:
    return sum(1 for e in local_lab.telemetry.events() if e.properties.get("labkit.run_id") == run_id)


@pytest.fixture
def cart_fails(local_lab, lab_on):
    """cartFailure on (the release's `on`), the way the lab turns it on (ConfigMap, flagd restarted),
    and off again after."""
    from labkit.cluster import Cluster

    k8s = Cluster(Settings.load(environ=local_lab.env, dotenv=None))
    for variant in (lab_on, "off"):
        if k8s.flag_file().flag("cartFailure").default_variant != variant:
            k8s.set_default_variant("cartFailure", variant)
            k8s.restart_flagd(timeout=30, how="rollout")
            k8s.wait_served("cartFailure", variant, timeout=10)
        if variant == lab_on:
            yield


# ---------------------------------------------------------------- the change event


def test_the_labs_exact_curl_payload_is_accepted(local_lab):
    """runtime_change.py's body, byte for byte (JSON boolean included), with a bare httpx POST."""
    body = ('{"title":"feature flag changed","entitySelector":"type(SERVICE),entityName.equals(cart)",'
            '"eventType":"CUSTOM_CONFIGURATION","properties":{"dt.event.is_rootcause_relevant":true,'
            '"action":"changed","feature_flag.key":"cartFailure","defaultValue":"on"}}')
    resp = httpx.post(f"{local_lab.env['DT_URL']}{EVENTS}", content=body, headers={
        "Authorization": f"Api-Token {local_lab.ingest_token}",
        "Content-Type": "application/json; charset=utf-8"})
    assert resp.status_code == 201
    result = resp.json()
    assert result["reportCount"] == 1
    assert [r["status"] for r in result["eventIngestResults"]] == ["OK"]


def test_change_event_round_trip(dt, local_lab):
    run_id = uuid.uuid4().hex[:12]
    before = datetime.now(timezone.utc)
    event = dt.send_change_event("cart", "cartFailure", "on", old="off", run_id=run_id)
    assert event.ok and event.statuses == ["OK"] and event.report_count == 1
    assert event.correlation_ids and event.warnings == []
    assert event.sent_at.tzinfo is not None and event.sent_at >= before - timedelta(seconds=1)
    assert "recorded on 1 entity" in event.summary()
    events = dt.change_events("cart", since="now-10m")
    mine = events[events["run_id"] == run_id]
    assert len(mine) == 1
    row = mine.iloc[0]
    assert (row["flag"], row["old"], row["new"], row["title"]) == ("cartFailure", "off", "on",
                                                                   "feature flag changed")
    assert str(events["timestamp"].dt.tz) == "UTC"
    assert abs(row["timestamp"].to_pydatetime() - event.sent_at) < timedelta(seconds=5)
    props = next(e.properties for e in local_lab.telemetry.events()
                 if e.properties.get("labkit.run_id") == run_id)
    assert props["dt.event.is_rootcause_relevant"] == "true" and props["action"] == "changed"
    assert props["previousValue"] == "off"


def test_non_string_variants_are_sent_as_strings(dt, local_lab):
    run_id = uuid.uuid4().hex[:12]
    event = dt.send_change_event("cart", "cartFailure", 0.25, old=False, run_id=run_id)
    assert (event.new, event.old) == ("0.25", "false")
    props = next(e.properties for e in local_lab.telemetry.events()
                 if e.properties.get("labkit.run_id") == run_id)
    assert props["defaultValue"] == "0.25" and props["previousValue"] == "false"


def test_unknown_service_is_a_clear_error_and_stores_nothing(dt, local_lab):
    before = len(local_lab.telemetry.events())
    with pytest.raises(LabError) as err:
        dt.send_change_event("kart", "cartFailure", "on")
    text = str(err.value)
    assert "No entity matched" in text and "kart" in text and "24 hours" in text
    assert len(local_lab.telemetry.events()) == before


def test_a_service_name_cannot_inject_selector_criteria(dt, local_lab):
    before = len(local_lab.telemetry.events())
    with pytest.raises(LabError):
        dt.send_change_event('cart"),type(SERVICE', "cartFailure", "on")
    assert len(local_lab.telemetry.events()) == before
    assert dt.find_service("a(b),c") is None


def test_event_post_503_is_sent_once_and_says_it_may_be_recorded(dt, local_lab, secrets):
    dt.find_service("cart")  # warm the entity cache: the fault below must hit the POST only
    faults = local_lab.tenant_server.faults
    seen = faults.seen
    faults.add(status=503, path_prefix=EVENTS, method="POST", count=5)
    run_id = uuid.uuid4().hex[:12]
    with pytest.raises(Unreachable) as err:
        dt.send_change_event("cart", "cartFailure", "on", run_id=run_id)
    assert faults.seen - seen == 1  # exactly one attempt
    text = str(err.value)
    assert "may or may not have been recorded" in text and "don't resend blindly" in text
    assert stored(local_lab, run_id) == 0
    no_secret(secrets, text, repr(err.value))


def test_event_post_timeout_is_never_retried_so_never_duplicated(settings, local_lab):
    faults = local_lab.tenant_server.faults
    with Dynatrace(settings, timeout=0.3, retries=3, backoff=0.0) as dt:
        dt.find_service("cart")
        seen = faults.seen
        faults.add(latency=0.8, path_prefix=EVENTS, method="POST", count=5)
        run_id = uuid.uuid4().hex[:12]
        with pytest.raises(Unreachable) as err:
            dt.send_change_event("cart", "cartFailure", "on", run_id=run_id)
    assert faults.seen - seen == 1
    assert "may or may not have been recorded" in str(err.value)
    time.sleep(0.8)  # the slow request completes on the server
    assert stored(local_lab, run_id) == 1  # it WAS recorded: a retry would have made two


def test_event_post_429_is_rejected_so_it_is_retried_and_recorded_once(dt, local_lab):
    dt.find_service("cart")
    faults = local_lab.tenant_server.faults
    seen = faults.seen
    faults.add(status=429, retry_after="1", path_prefix=EVENTS, method="POST", count=1)
    run_id = uuid.uuid4().hex[:12]
    start = time.monotonic()
    event = dt.send_change_event("cart", "cartFailure", "on", run_id=run_id)
    assert time.monotonic() - start >= 0.9  # Retry-After honoured
    assert faults.seen - seen == 1 and event.ok
    assert stored(local_lab, run_id) == 1


# ---------------------------------------------------------------- tokens and scopes


def test_the_labs_ingest_only_token(lab_env, local_lab, secrets, caplog):
    caplog.set_level(logging.DEBUG)
    env = dict(lab_env, DT_API_TOKEN=local_lab.ingest_token)
    env.pop("DT_PLATFORM_TOKEN")
    with Dynatrace(Settings.load(environ=env, dotenv=None), backoff=0.0) as dt:
        assert dt.missing_scopes() == set(READ_SCOPES)
        assert "events.ingest" in dt.token_scopes()
        event = dt.send_change_event("cart", "cartFailure", "off", old="on")  # ingest works
        assert event.ok
        assert any("entities.read" in w for w in event.warnings)
        errors = []
        for call, scope in ((lambda: dt.failed_requests("cart"), "metrics.read"),
                            (lambda: dt.change_events("cart"), "events.read"),
                            (lambda: dt.find_service("cart"), "entities.read"),
                            (lambda: dt.problems(), "problems.read")):
            with pytest.raises(Forbidden) as err:
                call()
            assert scope in str(err.value) and "403" in str(err.value)
            errors.append(str(err.value))
        with pytest.raises(Forbidden) as err:
            dt.error_logs("cart")
        assert "DT_PLATFORM_TOKEN" in str(err.value) and "storage:logs:read" in str(err.value)
        no_secret(secrets, *errors, str(err.value), repr(dt), caplog.text)


def test_a_wrong_token_gets_401(lab_env, secrets):
    env = dict(lab_env, DT_API_TOKEN="dt0c01.AAAAAAAAAAAAAAAAAAAAAAAA." + "B" * 64)
    with Dynatrace(Settings.load(environ=env, dotenv=None), backoff=0.0) as dt:
        with pytest.raises(Forbidden) as err:
            dt.find_service("cart")
    text = str(err.value)
    assert "401" in text and "DT_API_TOKEN" in text
    assert "B" * 64 not in text
    no_secret(secrets, text)


def test_a_wrong_platform_token_is_named_not_hidden_behind_log_search(lab_env, secrets):
    """Grail log storage refuses log search with the API token, so falling back would only hide
    the real problem: the platform token is wrong."""
    env = dict(lab_env, DT_PLATFORM_TOKEN="dt0s16.AAAAAAAAAAAAAAAAAAAAAAAA." + "C" * 64)
    with Dynatrace(Settings.load(environ=env, dotenv=None), backoff=0.0) as dt:
        with pytest.raises(Forbidden) as err:
            dt.error_logs("cart", since="now-10m")
    text = str(err.value)
    assert "401" in text and "DT_PLATFORM_TOKEN" in text and "C" * 64 not in text
    no_secret(secrets, text)


def test_error_log_frame_columns(dt):
    frame = dt.error_logs("cart", since="now-10m")
    assert list(frame.columns) == ["timestamp", "loglevel", "status", "content", "trace_id",
                                   "span_id", "service", "statuscode", "detail",
                                   "dt.owner", "dt.cost.product", "dt.cost.costcenter"]


# ---------------------------------------------------------------- metrics, problems, logs


def test_failed_requests_frame(dt):
    frame = dt.failed_requests("cart", since="now-1h")
    assert list(frame.columns) == ["timestamp", "failed", "requests", "failure_rate", "partial"]
    assert str(frame["timestamp"].dt.tz) == "UTC"
    # each row is the minute it covers (the API stamps the slot's end), only the running one partial
    import pandas as pd

    last, now = frame.iloc[-1], pd.Timestamp.now(tz="UTC")
    assert last["timestamp"] <= now < last["timestamp"] + pd.Timedelta(minutes=1, seconds=5)
    assert last["partial"] and not frame["partial"].iloc[:-1].any()
    assert frame["failed"].dtype == "int64" and frame["requests"].dtype == "int64"
    assert frame["failure_rate"].dtype == "float64"
    assert frame["timestamp"].is_monotonic_increasing
    assert 55 <= len(frame) <= 62
    assert frame["requests"].sum() > 0  # the seeded baseline and the background shopper
    rate = frame["failure_rate"].dropna()
    assert ((rate >= 0) & (rate <= 1)).all()
    assert frame.loc[frame["requests"] == 0, "failure_rate"].isna().all()


def test_24h_at_1m_in_under_half_a_second(dt):
    dt.failed_requests("cart", since="now-10m")  # pandas imported, connection open
    start = time.perf_counter()
    frame = dt.failed_requests("cart", since="now-24h", resolution="1m")
    elapsed = time.perf_counter() - start
    assert 1439 <= len(frame) <= 1442
    assert elapsed < 0.5, f"24 h at 1 m took {elapsed:.3f} s"


def test_failures_logs_and_problem_after_the_flag_is_on(dt, local_lab, cart_fails):
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    # the lab's `on` fails about 1 empty in 10: shop until a problem's worth of failures
    result = Shop(local_lab.env["FRONTEND_URL"]).run(seconds=20, rate=0, until_failures=8)
    assert result.failures_by_operation.get("empty", 0) >= 5

    frame = dt.failed_requests("cart", since="now-5m")
    assert frame["failed"].sum() >= result.failures_by_operation["empty"]
    assert frame["failure_rate"].max() > 0

    progress = []
    logs = dt.wait_for_error_logs("cart", since=since, timeout=10,
                                  progress=lambda m, f: progress.append((m, f)))
    assert len(logs) >= 1 and progress
    assert (logs["timestamp"] >= since).all()
    assert logs["content"].str.contains("redis").all()
    assert (logs["service"] == "cart").all() and (logs["loglevel"] == "ERROR").all()
    assert logs["timestamp"].is_monotonic_decreasing

    trace = dt.logs_for_trace(logs.loc[0, "trace_id"])
    assert len(trace) >= 1 and trace["timestamp"].is_monotonic_increasing
    assert (trace["trace_id"] == logs.loc[0, "trace_id"]).all()

    problems = dt.wait_for_problem("cart", since=since, timeout=10)
    row = problems.iloc[0]
    (pod,) = [p["metadata"]["name"] for p in local_lab.cluster.list("pods", "opentelemetry.io/name=cart", None)[0]]
    assert row["title"] == PROBLEM_TITLE and row["affected"] == row["pod"] == pod  # where Davis puts it
    assert row["severity"] == "ERROR" and row["root_cause"] == pod
    assert row["display_id"].startswith("P-") and row["start"].tzinfo is not None
    open_only = dt.problems("cart", since="now-1h", status="open")
    assert len(open_only) and set(open_only["status"]) == {"OPEN"}


def test_grail_query_that_runs_past_the_request_window_is_polled(dt, local_lab, monkeypatch):
    monkeypatch.setattr(local_lab.timings, "grail_delay", 2.3)
    progress = []
    records = dt.dql('fetch logs, from: now()-10m | limit 5',
                     progress=lambda m, f: progress.append(m))
    assert isinstance(records, list)
    assert any("running" in m for m in progress) and progress[-1] == "query finished"


def test_wait_for_error_logs_times_out_clearly(dt):
    with pytest.raises(LabTimeout) as err:
        dt.wait_for_error_logs("checkout", since=datetime.now(timezone.utc), timeout=0.5)
    assert "checkout" in str(err.value) and "labkit shop" in str(err.value)


# ---------------------------------------------------------------- faults


def test_429_with_retry_after_then_success(dt, local_lab):
    faults = local_lab.tenant_server.faults
    seen = faults.seen
    faults.add(status=429, retry_after="1", path_prefix="/api/v2/metrics/query", count=2)
    start = time.monotonic()
    frame = dt.failed_requests("cart", since="now-10m")
    assert time.monotonic() - start >= 1.9
    assert faults.seen - seen == 2 and len(frame) > 0


def test_503_then_success_on_get(dt, local_lab):
    faults = local_lab.tenant_server.faults
    seen = faults.seen
    faults.add(status=503, path_prefix="/api/v2/problems", count=2)
    frame = dt.problems(since="now-10m")
    assert faults.seen - seen == 2
    assert list(frame.columns)[:2] == ["display_id", "title"]  # what a person reads first
    assert list(frame.columns)[-1] == "problem_id"


def test_persistent_503_gives_up_after_bounded_retries(dt, local_lab):
    faults = local_lab.tenant_server.faults
    seen = faults.seen
    faults.add(status=503, path_prefix="/api/v2/problems")
    with pytest.raises(Unreachable) as err:
        dt.problems(since="now-10m")
    assert faults.seen - seen == 4  # 1 + retries=3
    assert "503" in str(err.value) and "4 attempts" in str(err.value)


def test_slow_tenant_get_times_out_then_retries(settings, local_lab):
    faults = local_lab.tenant_server.faults
    with Dynatrace(settings, timeout=0.3, retries=1, backoff=0.0) as dt:
        faults.add(latency=0.6, path_prefix="/api/v2/entities", count=1)
        assert dt.find_service("cart") is not None  # first attempt timed out, second answered
        faults.add(latency=0.6, path_prefix="/api/v2/entities", count=2)
        with pytest.raises(Unreachable) as err:
            dt.find_service("cart")
    assert "within 0.3 s" in str(err.value)


def test_malformed_json_body(dt, local_lab, secrets):
    local_lab.tenant_server.faults.add(status=200, body=b'{"problems": [', path_prefix="/api/v2/problems")
    with pytest.raises(Unreachable) as err:
        dt.problems(since="now-10m")
    assert "unexpected" in str(err.value)
    no_secret(secrets, str(err.value))


def test_no_token_in_logs_or_reprs(dt, local_lab, secrets, caplog):
    caplog.set_level(logging.DEBUG)
    local_lab.tenant_server.faults.add(status=503, path_prefix="/api/v2/entities", count=1)
    dt.find_service("cart")
    dt.error_logs("cart", since="now-5m")
    dt.token_scopes()
    no_secret(secrets, repr(dt), str(dt), repr(dt.settings), caplog.text)
    assert "retrying" in caplog.text  # the retry was logged, without the token


def test_tokens_only_over_https_or_loopback():
    from labkit.errors import BadInput

    with pytest.raises(BadInput):
        Dynatrace(Settings(dt_url="http://10.0.0.8:8080", api_token=Secret("dt0c01.A.B")))
    with pytest.raises(LabError) as err:
        Dynatrace(Settings())
    assert "DT_URL" in str(err.value)
