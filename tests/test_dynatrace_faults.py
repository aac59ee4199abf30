"""labkit.dynatrace against HTTP failure shapes the local lab cannot produce (respx).

Everything the sandbox can do (401/403/429/503, latency, malformed JSON) is tested against it in
test_dynatrace.py; here only: refused connections, read timeouts before any byte, HTML and empty
error bodies, tokens echoed by a server, HTTP-date Retry-After, and pure parsing of the reference's
example payloads.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx
import pytest
import respx

from labkit.dynatrace import (Dynatrace, _parse_retry_after, quote_selector_value, service_selector)
from labkit.errors import BadInput, Forbidden, LabError, NotFound, Unreachable
from labkit.settings import Secret, Settings

EXAMPLES = Path("/work/shared/reference/dynatrace-examples")
CLASSIC = "https://abc12345.live.dynatrace.com"
PLATFORM = "https://abc12345.apps.dynatrace.com"
TOKEN = "dt0c01.ABCDEFGHIJKLMNOPQRSTUVWX.0123456789ABCDEFGHIJ0123456789ABCDEFGHIJ0123456789ABCDEFGHIJKL"
PTOKEN = "dt0s16.ZYXWVUTSRQPONMLKJIHGFEDC.ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210ZYXWVUTSRQPONMLKJIHG0000000"
SECRET_PARTS = (TOKEN, TOKEN.rsplit(".", 1)[1], PTOKEN, PTOKEN.rsplit(".", 1)[1])


def example(name: str):
    return json.loads((EXAMPLES / name).read_text())


def settings(**kw) -> Settings:
    base = dict(dt_url=CLASSIC, platform_url=PLATFORM, api_token=Secret(TOKEN),
                platform_token=Secret(PTOKEN))
    base.update(kw)
    return Settings(**base)


def assert_no_secret(text: str) -> None:
    for part in SECRET_PARTS:
        assert part not in text


@pytest.fixture
def dt():
    client = Dynatrace(settings(), timeout=2.0, retries=2, backoff=0.0)
    yield client
    client.close()


@pytest.fixture
def mock():
    with respx.mock(assert_all_called=False) as router:
        # both tokens set: labkit asks which scopes the API token has (a test may answer otherwise)
        router.post(f"{CLASSIC}/api/v2/apiTokens/lookup").respond(
            200, json=example("apitokens_lookup_200.json"))
        yield router


def entity_ok(mock):
    return mock.get(f"{CLASSIC}/api/v2/entities").respond(200, json=example("entities_list_200.json"))


# ---------------------------------------------------------------- configuration and secrets


def test_missing_settings_say_what_to_set():
    with pytest.raises(LabError) as err:
        Dynatrace(Settings())
    assert "DT_URL" in str(err.value) and "DT_API_TOKEN" in str(err.value)
    assert "local lab" in str(err.value)


def test_plain_http_to_a_remote_host_is_refused_before_any_request(mock):
    route = mock.route().respond(200, json={})
    with pytest.raises(BadInput) as err:
        Dynatrace(settings(dt_url="http://abc12345.live.dynatrace.com"))
    assert "https" in str(err.value)
    assert not route.called


def test_repr_and_headers_never_show_the_token(dt, mock):
    entity_ok(mock)
    dt.find_service("cart")
    assert_no_secret(repr(dt))
    request = mock.calls.last.request
    assert request.headers["authorization"] == f"Api-Token {TOKEN}"
    assert_no_secret(repr(request.headers))


def test_grail_uses_the_platform_host_and_bearer_token(dt, mock):
    route = mock.post(f"{PLATFORM}/platform/storage/query/v1/query:execute").respond(
        200, json={"state": "SUCCEEDED", "result": {"records": [{"x": "1"}]}})
    assert dt.dql("fetch logs | limit 1") == [{"x": "1"}]
    assert route.calls.last.request.headers["authorization"] == f"Bearer {PTOKEN}"


def test_a_server_echoing_the_token_is_scrubbed(dt, mock, caplog):
    caplog.set_level(logging.DEBUG)
    mock.post(f"{CLASSIC}/api/v2/apiTokens/lookup").respond(
        400, json={"error": {"code": 400, "message": f"Token {TOKEN} is malformed"}})
    with pytest.raises(BadInput) as err:
        dt.token_scopes()
    assert "malformed" in str(err.value)
    assert_no_secret(str(err.value))
    assert_no_secret(repr(err.value))
    assert not isinstance(err.value.__cause__, httpx.HTTPError)
    assert_no_secret(caplog.text)


# ---------------------------------------------------------------- connection failures


def test_refused_connection_on_get_is_retried_then_unreachable(dt, mock, caplog):
    caplog.set_level(logging.DEBUG)
    route = mock.get(f"{CLASSIC}/api/v2/entities").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(Unreachable) as err:
        dt.find_service("cart")
    assert route.call_count == 3  # 1 + retries=2
    text = str(err.value)
    assert "abc12345.live.dynatrace.com" in text and "DT_URL" in text
    assert err.value.__cause__ is None  # the httpx exception (which holds the request) is dropped
    assert_no_secret(text + caplog.text)


def test_event_post_refused_before_sending_is_retried_once_and_recorded_once(dt, mock):
    entity_ok(mock)
    route = mock.post(f"{CLASSIC}/api/v2/events/ingest").mock(side_effect=[
        httpx.ConnectError("refused"), httpx.Response(201, json=example("events_ingest_201.json"))])
    event = dt.send_change_event("cart", "cartFailure", "on", old="off")
    assert route.call_count == 2
    assert event.statuses == ["OK"] and event.report_count == 1


def test_event_post_read_timeout_is_never_retried(dt, mock):
    entity_ok(mock)
    route = mock.post(f"{CLASSIC}/api/v2/events/ingest").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(Unreachable) as err:
        dt.send_change_event("cart", "cartFailure", "on")
    assert route.call_count == 1
    assert "may or may not have been recorded" in str(err.value)
    assert "don't resend blindly" in str(err.value)


def test_event_post_connection_dropped_after_sending_is_never_retried(dt, mock):
    entity_ok(mock)
    route = mock.post(f"{CLASSIC}/api/v2/events/ingest").mock(
        side_effect=httpx.RemoteProtocolError("Server disconnected without sending a response."))
    with pytest.raises(Unreachable) as err:
        dt.send_change_event("cart", "cartFailure", "on")
    assert route.call_count == 1
    assert "may or may not" in str(err.value)


def test_get_read_timeout_is_retried(dt, mock):
    route = mock.get(f"{CLASSIC}/api/v2/entities").mock(side_effect=[
        httpx.ReadTimeout("slow"), httpx.Response(200, json=example("entities_list_200.json"))])
    assert dt.find_service("cart").id == "SERVICE-1234567890ABCDEF"
    assert route.call_count == 2


# ---------------------------------------------------------------- error bodies


def test_html_401_body_still_names_the_token_variable(dt, mock):
    mock.get(f"{CLASSIC}/api/v2/entities").respond(
        401, text="<html><body>Unauthorized</body></html>", headers={"content-type": "text/html"})
    with pytest.raises(Forbidden) as err:
        dt.find_service("cart")
    text = str(err.value)
    assert "401" in text and "DT_API_TOKEN" in text and "entities.read" in text
    assert "<html>" not in text


def test_empty_404_body_on_token_lookup(dt, mock):
    mock.post(f"{CLASSIC}/api/v2/apiTokens/lookup").respond(404, content=b"")
    with pytest.raises(NotFound) as err:
        dt.token_scopes()
    assert "DT_API_TOKEN" in str(err.value)


def test_403_without_a_scope_in_the_message_names_the_endpoint_scope(dt, mock):
    mock.get(f"{CLASSIC}/api/v2/metrics/query").respond(403, json={"error": {"code": 403}})
    with pytest.raises(Forbidden) as err:
        dt.failed_requests("cart")
    assert "metrics.read" in str(err.value)


def test_400_shows_message_and_constraint_violations(dt, mock):
    mock.get(f"{CLASSIC}/api/v2/events").respond(400, json=example("error_envelope_400.json"))
    with pytest.raises(BadInput) as err:
        dt.change_events("cart")
    assert "Constraints violated." in str(err.value)
    assert "entitySelector: Invalid entity selector" in str(err.value)


def test_non_json_success_body_is_reported_as_unexpected(dt, mock):
    mock.get(f"{CLASSIC}/api/v2/problems").respond(
        200, text="<html>login</html>", headers={"content-type": "text/html"})
    with pytest.raises(Unreachable) as err:
        dt.problems()
    assert "unexpected" in str(err.value) and "DT_URL" in str(err.value)


def test_redirect_is_not_followed(dt, mock):
    problems = mock.get(f"{CLASSIC}/api/v2/problems").respond(
        302, headers={"Location": "https://sso.example/login"})
    with pytest.raises(LabError) as err:
        dt.problems()
    assert "redirected" in str(err.value)
    assert problems.call_count == 1
    assert not any("sso.example" in str(c.request.url) for c in mock.calls)


def test_platform_error_details_are_shown(dt, mock):
    mock.post(f"{PLATFORM}/platform/storage/query/v1/query:execute").respond(400, json={
        "error": {"code": 400, "message": "PARSE_ERROR",
                  "details": {"errorType": "PARSE_ERROR", "errorMessage": "Unknown command 'fetchx'"}}})
    with pytest.raises(BadInput) as err:
        dt.dql("fetchx logs")
    assert "Unknown command 'fetchx'" in str(err.value)


# ---------------------------------------------------------------- parsing


def test_retry_after_seconds_and_http_date():
    assert _parse_retry_after("3") == 3.0
    assert _parse_retry_after(None) is None
    assert _parse_retry_after("soon") is None
    from email.utils import format_datetime
    from datetime import datetime, timedelta, timezone
    date = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=5), usegmt=True)
    assert 3.0 <= _parse_retry_after(date) <= 5.5


def test_selector_values_cannot_inject_criteria():
    assert service_selector("cart") == "type(SERVICE),entityName.equals(cart)"
    assert quote_selector_value("a(b),c") == '"a(b),c"'
    assert quote_selector_value('x"),type(HOST') == '"x~"),type(HOST"'
    assert quote_selector_value("t~x y") == '"t~~x y"'
    with pytest.raises(BadInput):
        service_selector("  ")


def test_reference_metrics_example_becomes_the_documented_frame(dt, mock):
    import pandas as pd

    route = mock.get(f"{CLASSIC}/api/v2/metrics/query").respond(200, json=example("metrics_query_200.json"))
    frame = dt.failed_requests("cart", since="now-6m")
    assert route.call_count == 1  # both keys in ONE call
    sel = route.calls.last.request.url.params["metricSelector"]
    assert sel.startswith("builtin:service.request.failure_count:") and ",builtin:service.request.count:" in sel
    assert list(frame.columns) == ["timestamp", "failed", "requests", "failure_rate", "partial"]
    assert str(frame["timestamp"].dt.tz) == "UTC"
    assert frame["failed"].tolist() == [0, 0, 2, 1, 0, 3]
    assert frame["requests"].tolist() == [21, 19, 22, 18, 0, 24]
    assert frame["failure_rate"].iloc[2] == pytest.approx(2 / 22)
    assert pd.isna(frame["failure_rate"].iloc[4])  # the null slot: no requests, rate undefined
    # Dynatrace stamps a slot by its end; the frame shows the minute it covers (its start)
    assert frame["timestamp"].iloc[-1] == pd.Timestamp(1754553600000 - 60_000, unit="ms", tz="UTC")


def test_oneagent_keys_are_the_fallback_when_unified_ones_are_empty(dt, mock):
    empty = {"totalCount": 0, "nextPageKey": None, "result": [
        {"metricId": "builtin:service.request.failure_count:splitBy():value:default(0)", "data": []},
        {"metricId": "builtin:service.request.count:splitBy():value:default(0)", "data": []}]}
    legacy = example("metrics_query_200.json")
    legacy["result"][0]["metricId"] = "builtin:service.errors.total.count:splitBy():value:default(0)"
    legacy["result"][1]["metricId"] = "builtin:service.requestCount.total:splitBy():value:default(0)"
    route = mock.get(f"{CLASSIC}/api/v2/metrics/query").mock(side_effect=[
        httpx.Response(200, json=empty), httpx.Response(200, json=legacy)])
    frame = dt.failed_requests("cart")
    assert route.call_count == 2
    assert "builtin:service.errors.total.count" in route.calls.last.request.url.params["metricSelector"]
    assert frame["failed"].sum() == 6


def test_24h_at_1m_parses_fast(dt, mock):
    now = 1754553600000
    ts = [now - (1439 - i) * 60000 for i in range(1440)]
    body = {"result": [
        {"metricId": "builtin:service.request.failure_count:splitBy():value:default(0)",
         "data": [{"dimensions": [], "dimensionMap": {}, "timestamps": ts, "values": [i % 3 for i in range(1440)]}]},
        {"metricId": "builtin:service.request.count:splitBy():value:default(0)",
         "data": [{"dimensions": [], "dimensionMap": {}, "timestamps": ts, "values": [20] * 1440}]}]}
    mock.get(f"{CLASSIC}/api/v2/metrics/query").respond(200, json=body)
    dt.failed_requests("cart")  # warm up (pandas import)
    start = time.perf_counter()
    frame = dt.failed_requests("cart", since="now-24h")
    assert time.perf_counter() - start < 0.5
    assert len(frame) == 1440 and frame["requests"].sum() == 28800


def test_reference_examples_for_events_problems_and_classic_logs(mock):
    import pandas as pd

    dt = Dynatrace(settings(platform_token=None), retries=0)
    entity_ok(mock)
    mock.get(f"{CLASSIC}/api/v2/events").respond(200, json=example("events_list_200.json"))
    mock.get(f"{CLASSIC}/api/v2/problems").respond(200, json=example("problems_list_200.json"))
    logs = mock.get(f"{CLASSIC}/api/v2/logs/search").respond(200, json=example("logs_search_200.json"))
    events = dt.change_events("cart")
    assert events.loc[0, "flag"] == "cartFailure" and events.loc[0, "new"] == "on"
    assert events.loc[0, "event_id"] == "-4321987654321098765_1754552700000"
    problems = dt.problems("cart", status="open")
    row = problems.iloc[0]
    assert row["display_id"] == "P-25081234" and row["status"] == "OPEN"
    assert pd.isna(row["end"]) and row["affected"] == "cart" and row["root_cause"] == "cart"
    error_logs = dt.error_logs("cart")  # no platform token: the classic log search
    assert logs.called
    assert error_logs.loc[0, "trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert error_logs.loc[0, "timestamp"] == pd.Timestamp(1754553187412, unit="ms", tz="UTC")


def test_no_log_access_at_all_names_the_platform_token(mock):
    dt = Dynatrace(settings(platform_token=None), retries=0)
    mock.get(f"{CLASSIC}/api/v2/logs/search").respond(
        403, json={"error": {"code": 403, "message": "Token is missing required scope logs.read"}})
    with pytest.raises(Forbidden) as err:
        dt.error_logs("cart")
    assert "DT_PLATFORM_TOKEN" in str(err.value) and "storage:logs:read" in str(err.value)


def test_grail_failed_state_is_a_clear_error(dt, mock):
    mock.post(f"{PLATFORM}/platform/storage/query/v1/query:execute").respond(
        202, json=example("grail_execute_202.json"))
    mock.get(f"{PLATFORM}/platform/storage/query/v1/query:poll").respond(
        200, json={"state": "FAILED", "error": {"message": "query too expensive"}})
    with pytest.raises(LabError) as err:
        dt.dql("fetch logs")
    assert "FAILED" in str(err.value) and "query too expensive" in str(err.value)
