"""A real tenant the first time (issue 12): a platform token alone, which token each call takes, the
preflight per token and scope, error logs by status, times each API accepts, Grail's 410/403/429 and
FAILED/CANCELLED, and links into the UI that open on the local lab.

Against the session's local lab over loopback (tests arrange through the sandbox: tokens with
scopes, an injected CRITICAL log); respx only for Grail answers the local lab does not give.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest
import respx

from hardening_report import exception_text, fault_record  # noqa: F401  (fixture)
from labkit.dynatrace import Dynatrace
from labkit.errors import Forbidden, LabError, Unreachable
from labkit.sandbox import make_token
from labkit.settings import Secret, Settings
from labkit.tenant import PROBLEM_TITLE

ROOT = Path(__file__).resolve().parents[1]
CLASSIC_ON_PLATFORM = "/platform/classic/environment-api/v2"


@pytest.fixture
def platform_only(local_lab) -> dict:
    """The local lab's variables with the platform token and no API token."""
    return {k: v for k, v in local_lab.env.items() if k != "DT_API_TOKEN"}


def client(env: dict, **kw) -> Dynatrace:
    return Dynatrace(Settings.load(environ=env, dotenv=None), **{"backoff": 0.0, **kw})


@pytest.fixture
def limited(local_lab):
    """A platform token that may only write events (and read buckets): no reads, no logs."""
    token = make_token("dt0s16")
    local_lab.tenant.platform_tokens.add(token, {"environment-api:events:write", "storage:buckets:read"})
    yield token
    local_lab.tenant.platform_tokens.discard(token)


def open_link(url: str) -> httpx.Response:
    resp = httpx.get(url, timeout=10)
    assert resp.status_code == 200, url
    assert "Local lab" in resp.text and "not a real Dynatrace tenant" in resp.text
    return resp


def run_linked_query(url: str) -> list[dict]:
    """What the Logs/Notebook page's script does with the fragment a browser never sends."""
    state = json.loads(unquote(urlsplit(url).fragment))
    query = state.get("dt.query") or state["data"]["queryConfig"]["query"]
    base = f"{urlsplit(url).scheme}://{urlsplit(url).netloc}"
    resp = httpx.post(base + "/ui/local-lab/query", json={"query": query,
                                                           "timeframe": state.get("dt.timeframe")})
    assert resp.status_code == 200, resp.text
    return resp.json()["records"]


# ---------------------------------------------------------------- the local lab, as a tenant


def test_the_local_lab_serves_the_classic_api_on_the_platform_path(local_lab, limited):
    url = local_lab.env["DT_URL"] + CLASSIC_ON_PLATFORM
    bearer = {"Authorization": f"Bearer {local_lab.platform_token}"}
    ok = httpx.get(url + "/entities", params={"entitySelector": "type(SERVICE),entityName.equals(cart)"},
                   headers=bearer)
    assert ok.status_code == 200 and ok.json()["entities"][0]["displayName"] == "cart"
    api_token = httpx.get(url + "/problems", headers={"Authorization": f"Api-Token {local_lab.api_token}"})
    assert api_token.status_code == 401 and "Bearer" in api_token.json()["error"]["message"]
    missing = httpx.get(url + "/problems", headers={"Authorization": f"Bearer {limited}"})
    assert missing.status_code == 403  # the classic envelope, as a real tenant answered (answers §2)
    assert missing.json() == {"error": {"code": 403, "message": "OAuth token is missing required scope. "
                                                                "Use one of: [environment-api:problems:read]"}}


def test_get_one_event_and_the_time_rule(local_lab, platform_only):
    with client(platform_only) as dt:
        run_id = uuid.uuid4().hex[:12]
        dt.send_change_event("cart", "cartFailure", "on", old="off", run_id=run_id)
        events = dt.change_events("cart", since="now-30s")  # seconds: sent as epoch ms
        mine = events[events["run_id"] == run_id]
        assert len(mine) == 1
        one = dt.change_event(mine.iloc[0]["event_id"])
    assert one.iloc[0]["run_id"] == run_id and one.iloc[0]["flag"] == "cartFailure"
    refused = httpx.get(local_lab.env["DT_URL"] + "/api/v2/events", params={"from": "now-30s"},
                        headers={"Authorization": f"Api-Token {local_lab.api_token}"})
    assert refused.status_code == 400 and "m, h, d, w, M and y" in refused.text


def test_grail_log_storage_refuses_log_search_with_an_api_token(local_lab):
    url = local_lab.env["DT_URL"] + "/api/v2/logs/search"
    refused = httpx.get(url, headers={"Authorization": f"Api-Token {local_lab.api_token}"})
    assert refused.status_code == 403 and "platform token" in refused.json()["error"]["message"]
    allowed = httpx.get(url, params={"limit": 1}, headers={"Authorization": f"Bearer {local_lab.platform_token}"})
    assert allowed.status_code == 200


# ---------------------------------------------------------------- a platform token alone


def test_a_platform_token_alone_runs_every_call(local_lab, platform_only):
    assert Settings.load(environ=platform_only, dotenv=None).has_tenant
    with client(platform_only) as dt:
        event = dt.send_change_event("cart", "cartFailure", "off", old="off")
        assert event.ok and not event.warnings  # the entity lookup worked too
        assert dt.failed_requests("cart", since="now-10m")["requests"].sum() > 0
        assert dt.find_service("cart").id.startswith("SERVICE-")
        dt.problems("cart")
        dt.error_logs("cart", since="now-5m")


def test_with_both_tokens_each_call_takes_the_one_that_fits(local_lab):
    """The lab's own API token may only ingest: the event goes with it, the reads with the platform token."""
    env = dict(local_lab.env, DT_API_TOKEN=local_lab.ingest_token)
    with client(env) as dt:
        event = dt.send_change_event("cart", "cartFailure", "off", old="off")
        assert event.ok and not event.warnings
        assert dt._http.route("classic", "/api/v2/events/ingest", "events.ingest").client == "api"
        assert dt._http.route("classic", "/api/v2/problems", "problems.read").client == "platform"
        assert len(dt.failed_requests("cart", since="now-10m")) > 0
        assert dt.find_service("cart") is not None


def test_a_critical_or_fatal_cart_log_counts_as_an_error_log(local_lab, platform_only):
    marker = uuid.uuid4().hex[:8]
    for level in ("CRITICAL", "FATAL", "WARN"):
        local_lab.telemetry.log_cart(level, f"{level} cart storage gone {marker}")
    with client(platform_only) as dt:
        frame = dt.error_logs("cart", since="now-5m")
    mine = frame[frame["content"].str.contains(marker)]
    assert sorted(mine["loglevel"]) == ["CRITICAL", "FATAL"]
    assert set(mine["status"]) == {"ERROR"}


# ---------------------------------------------------------------- the preflight, every combination


def preflight(env: dict) -> dict[str, tuple[bool, str]]:
    from labkit.lab import Lab

    lab = Lab(Settings.load(environ=env, dotenv=None))
    try:
        return {c.item: (c.ok, c.detail) for c in lab.check()}
    finally:
        lab.close()


def test_preflight_with_a_platform_token_alone(platform_only):
    checks = preflight(platform_only)
    assert all(ok for ok, _ in checks.values()), checks
    assert "DT_PLATFORM_TOKEN" in checks["read problems"][1]
    assert "/ui/apps/dynatrace.services/explorer?detailsId=SERVICE-" in checks["service 'cart'"][1]


def test_preflight_names_the_missing_platform_scopes(platform_only, limited, fault_record):
    rec = fault_record("tenant", "403 with details.missingScopes: a platform token lacking read scopes")
    checks = preflight(dict(platform_only, DT_PLATFORM_TOKEN=limited))
    rec.leaked = repr(checks).count(limited.rsplit(".", 1)[1])
    assert checks["send the change event"][0]
    for item, scope in (("read change events", "environment-api:events:read"),
                        ("read failed requests", "environment-api:metrics:read"),
                        ("read problems", "environment-api:problems:read"),
                        ("look up the service", "environment-api:entities:read"),
                        ("read error logs (Grail)", "storage:logs:read")):
        ok, detail = checks[item]
        assert not ok and scope in detail and "Platform tokens" in detail, (item, detail)
    assert "waiting for error logs fails" in checks["read error logs (Grail)"][1]
    assert limited.rsplit(".", 1)[1] not in repr(checks)


def test_preflight_without_a_platform_token_says_what_error_logs_need(local_lab):
    checks = preflight({k: v for k, v in local_lab.env.items() if k != "DT_PLATFORM_TOKEN"})
    ok, detail = checks["read error logs (Grail)"]
    assert not ok and "DT_PLATFORM_TOKEN" in detail and "storage:logs:read" in detail
    assert checks["read problems"][0]


def test_preflight_with_the_labs_ingest_only_api_token(local_lab):
    env = {k: v for k, v in local_lab.env.items() if k != "DT_PLATFORM_TOKEN"}
    checks = preflight(dict(env, DT_API_TOKEN=local_lab.ingest_token))
    assert checks["send the change event"][0]
    ok, detail = checks["read failed requests"]
    assert not ok and "metrics.read" in detail and "DT_PLATFORM_TOKEN" in detail
    both = preflight(dict(local_lab.env, DT_API_TOKEN=local_lab.ingest_token))
    assert all(ok for ok, _ in both.values()), both  # the platform token covers the reads


def test_preflight_with_a_wrong_platform_token(platform_only, fault_record):
    rec = fault_record("tenant", "401: a wrong platform token in the preflight")
    wrong = "dt0s16.AAAAAAAAAAAAAAAAAAAAAAAA." + "D" * 64
    checks = preflight(dict(platform_only, DT_PLATFORM_TOKEN=wrong))
    rec.leaked = repr(checks).count("D" * 64)
    ok, detail = checks["read problems"]
    assert not ok and "401" in detail and "DT_PLATFORM_TOKEN" in detail and "D" * 64 not in detail


# ---------------------------------------------------------------- links that open on the local lab


def test_every_link_opens_on_the_local_lab(local_lab, platform_only):
    marker = uuid.uuid4().hex[:8]
    local_lab.telemetry.log_cart("CRITICAL", f"cart storage gone {marker}")
    for _ in range(2):  # the first routed record opens it; the second refreshes its event
        local_lab.collector.log_cart_redis_error("0" * 32, "0" * 16, "pod-test")
    with client(platform_only) as dt:
        run_id = uuid.uuid4().hex[:12]
        event = dt.send_change_event("cart", "cartFailure", "on", old="off", run_id=run_id)
        problems = dt.problems("cart")
        service = dt.find_service("cart")
        logs = dt.error_logs("cart", since="now-5m")
        events = dt.change_events("cart", since="now-10m")
    assert len(problems) and problems["link"].str.contains("/ui/apps/dynatrace.davis.problems/problem/").all()
    page = open_link(problems.iloc[0]["link"]).text
    assert problems.iloc[0]["display_id"] in page and "cart" in page
    assert "cart" in open_link(service.link).text
    open_link(event.link)
    assert any(r.get("labkit.run_id") == run_id for r in run_linked_query(event.link))
    row = events[events["run_id"] == run_id].iloc[0]
    assert [r["event.id"] for r in run_linked_query(row["link"])] == [row["event_id"]]
    open_link(logs.attrs["link"])
    assert any(marker in r["content"] for r in run_linked_query(logs.attrs["link"]))
    assert "/ui/apps/dynatrace.logs/" in logs.attrs["link"]
    for link in (event.link, service.link, logs.attrs["link"], *problems["link"]):
        assert local_lab.platform_token not in link and local_lab.api_token not in link


# ---------------------------------------------------------------- Grail answers (respx)

CLASSIC = "https://abc12345.live.dynatrace.com"
PLATFORM = "https://abc12345.apps.dynatrace.com"
EXECUTE = f"{PLATFORM}/platform/storage/query/v1/query:execute"
POLL = f"{PLATFORM}/platform/storage/query/v1/query:poll"
PTOKEN = "dt0s16.ZYXWVUTSRQPONMLKJIHGFEDC.ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210ZYXWVUTSRQPONMLKJIHG0000000"
RUNNING = {"state": "RUNNING", "requestToken": "tok", "ttlSeconds": 500}
DONE = {"state": "SUCCEEDED", "result": {"records": [{"x": "1"}]}}
GONE = {"error": {"code": 410, "message": "Result gone", "details": {"errorType": "RESULT_GONE"}}}


@pytest.fixture
def grail():
    dt = Dynatrace(Settings(dt_url=CLASSIC, platform_url=PLATFORM, platform_token=Secret(PTOKEN)),
                   retries=2, backoff=0.0)
    with respx.mock(assert_all_called=False) as mock:
        yield dt, mock
    dt.close()


def test_a_410_poll_reruns_the_query_once(grail, fault_record):
    fault_record("tenant", "Grail poll 410 (result gone), rerun once")
    dt, mock = grail
    execute = mock.post(EXECUTE).mock(side_effect=[httpx.Response(202, json=RUNNING),
                                                   httpx.Response(200, json=DONE)])
    mock.get(POLL).respond(410, json=GONE)
    assert dt.dql("fetch logs | limit 1") == [{"x": "1"}]
    assert execute.call_count == 2


def test_a_result_gone_twice_says_it_expired(grail, fault_record):
    rec = fault_record("tenant", "Grail poll 410 twice: says the result expired")
    dt, mock = grail
    mock.post(EXECUTE).respond(202, json=RUNNING)
    mock.get(POLL).respond(410, json=GONE)
    with pytest.raises(LabError) as err:
        dt.dql("fetch logs | limit 1")
    rec.leaked = exception_text(err.value).count(PTOKEN.rsplit(".", 1)[1])
    assert "expired" in str(err.value) and "410" in str(err.value)


def test_a_403_names_the_missing_scopes_and_points_to_platform_tokens(grail, fault_record):
    rec = fault_record("tenant", "Grail 403 with details.missingScopes (echoing the token)")
    dt, mock = grail
    mock.post(EXECUTE).respond(403, json={"error": {"code": 403, "message": f"Forbidden {PTOKEN}",
                                                    "details": {"errorType": "FORBIDDEN",
                                                                "missingScopes": ["storage:logs:read"]}}})
    with pytest.raises(Forbidden) as err:
        dt.dql("fetch logs | limit 1")
    rec.leaked = exception_text(err.value).count(PTOKEN.rsplit(".", 1)[1])
    text = str(err.value)
    assert "storage:logs:read" in text and "DT_PLATFORM_TOKEN" in text and "Platform tokens" in text
    assert "storage:buckets:read" not in text  # the body said what is missing: only that


def test_a_429_waits_as_the_body_says(grail, fault_record):
    fault_record("tenant", "Grail 429 with error.retryAfterSeconds, then fine")
    dt, mock = grail
    mock.post(EXECUTE).mock(side_effect=[
        httpx.Response(429, json={"error": {"code": 429, "message": "Too many requests",
                                            "retryAfterSeconds": 0.3}}),
        httpx.Response(200, json=DONE)])
    start = time.monotonic()
    assert dt.dql("fetch logs | limit 1") == [{"x": "1"}]
    assert time.monotonic() - start >= 0.3


def test_a_429_to_the_end_says_how_long_to_wait(grail):
    dt, mock = grail
    mock.post(EXECUTE).respond(429, json={"error": {"code": 429, "message": "slow down",
                                                    "retryAfterSeconds": 0}})
    with pytest.raises(Unreachable) as err:
        dt.dql("fetch logs | limit 1")
    assert "429" in str(err.value)


@pytest.mark.parametrize("state,words", [("CANCELLED", ["CANCELLED", "not polled in time"]),
                                         ("FAILED", ["FAILED", "narrow its timeframe"])])
def test_failed_and_cancelled_explain_themselves(grail, state, words, fault_record):
    fault_record("tenant", f"Grail query state {state}")
    dt, mock = grail
    mock.post(EXECUTE).respond(202, json=RUNNING)
    mock.get(POLL).respond(200, json={"state": state})
    with pytest.raises(LabError) as err:
        dt.dql("fetch logs | limit 1")
    assert all(w in str(err.value) for w in words)


def test_a_platform_token_alone_uses_bearer_on_the_platform_path(grail):
    dt, mock = grail
    route = mock.get(f"{PLATFORM}{CLASSIC_ON_PLATFORM}/problems").respond(
        200, json={"totalCount": 0, "problems": []})
    dt.problems()
    assert route.calls.last.request.headers["authorization"] == f"Bearer {PTOKEN}"


# ---------------------------------------------------------------- the CLI, platform token only


def cli(env: dict, *args) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("DT_", "KUBECONFIG", "LABKIT_", "LAB_", "FRONTEND_URL"))}
    return subprocess.run([sys.executable, "-m", "labkit", *args], cwd=ROOT / "tests",
                          capture_output=True, text=True, timeout=120,
                          env={**clean, **env, "PYTHONPATH": str(ROOT)})


def test_the_cli_with_only_the_platform_token(local_lab, platform_only, tmp_path):
    marker = uuid.uuid4().hex[:8]
    local_lab.telemetry.log_cart("FATAL", f"cart storage gone {marker}")
    links = []
    for args in (["check"], ["event", "cart", "cartFailure", "off", "--old", "off"],
                 ["failures", "--since", "10m"], ["problems"], ["logs", "--since", "10m"]):
        proc = cli(platform_only, *args)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
        links += [w for w in proc.stdout.split() if "/ui/" in w and w.startswith("http")]
        if args[0] == "logs":
            assert marker in proc.stdout and "FATAL" in proc.stdout
    assert len(links) >= 4
    for link in links:
        open_link(link)
        assert local_lab.platform_token.rsplit(".", 1)[1] not in link


def test_cli_messages_for_missing_tokens_and_scopes(local_lab, platform_only, limited):
    none = cli({k: v for k, v in platform_only.items() if k != "DT_PLATFORM_TOKEN"}, "problems")
    assert none.returncode == 1 and "DT_PLATFORM_TOKEN" in none.stderr
    scoped = dict(platform_only, DT_PLATFORM_TOKEN=limited)
    for args, scope in ((["failures"], "environment-api:metrics:read"),
                        (["problems"], "environment-api:problems:read"),  # problems first: the pod's
                        (["logs"], "storage:logs:read")):
        proc = cli(scoped, *args)
        assert proc.returncode == 1, proc.stdout
        assert scope in proc.stderr and "DT_PLATFORM_TOKEN" in proc.stderr, proc.stderr
        assert "Platform tokens" in proc.stderr and limited.rsplit(".", 1)[1] not in proc.stderr
    api_only = {k: v for k, v in local_lab.env.items() if k != "DT_PLATFORM_TOKEN"}
    logs = cli(api_only, "logs")
    assert logs.returncode == 1 and "DT_PLATFORM_TOKEN" in logs.stderr and "storage:logs:read" in logs.stderr
    check = cli(dict(scoped), "check")
    assert check.returncode == 1 and "storage:logs:read" in check.stdout


@pytest.mark.notebooks
def test_the_workbook_runs_with_a_platform_token_alone(kernel_env, tmp_path):
    """00 and 01 headless with DT_PLATFORM_TOKEN only, on a local lab of their own: preflight, the
    change event, the switch, traffic, error logs from Grail and the problem all work."""
    import nbformat

    from labkit.sandbox import LocalLab, Timings
    from labkit.workbook import NOTEBOOKS, run_notebook

    lab = LocalLab(tmp_path / "lab", Timings.fast()).start()
    env = {**{k: v for k, v in lab.env.items() if k != "DT_API_TOKEN"}, **kernel_env,
           "LABKIT_STATIC_CHARTS": "1"}
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv("DT_API_TOKEN", raising=False)
            mp.delenv("PYTHONPATH", raising=False)
            books = [nbformat.read(run_notebook(NOTEBOOKS / f"{name}.ipynb", tmp_path / "out", env,
                                                timeout=300), as_version=4)
                     for name in ("00-setup", "01-introduce-change")]
    finally:
        lab.stop()
    text = json.dumps([cell.get("outputs", []) for book in books for cell in book.cells])
    assert '"output_type": "error"' not in text
    assert PROBLEM_TITLE in text and "Can't access cart storage" in text
    assert lab.api_token not in text and lab.platform_token not in text


# ---------------------------------------------------------------- a real tenant's answers (dynatrace-answers.md)


@pytest.fixture
def scoped(local_lab):
    """Make a platform token with exactly the given scopes (removed after the test)."""
    made = []

    def make(*scopes):
        token = make_token("dt0s16")
        local_lab.tenant.platform_tokens.add(token, set(scopes))
        made.append(token)
        return token

    yield make
    for token in made:
        local_lab.tenant.platform_tokens.discard(token)


def test_event_ingest_takes_any_of_the_sdks_three_scopes_and_labkit_asks_for_storage_events_write(
        local_lab, platform_only, scoped):
    for scope in ("storage:events:write", "openpipeline:events.davis:ingest", "environment-api:events:write"):
        checks = preflight(dict(platform_only, DT_PLATFORM_TOKEN=scoped(scope, "environment-api:entities:read")))
        assert checks["send the change event"][0], (scope, checks)
    ok, detail = preflight(dict(platform_only, DT_PLATFORM_TOKEN=scoped("storage:buckets:read")))["send the change event"]
    assert not ok and "lacks storage:events:write (or one of " in detail, detail


def test_a_grail_table_the_token_may_not_read_is_not_authorized_for_table(local_lab, platform_only, scoped):
    token = scoped("storage:buckets:read", "storage:events:read")  # events, but not logs
    raw = httpx.post(local_lab.env["DT_URL"] + "/platform/storage/query/v1/query:execute",
                     json={"query": "fetch logs | limit 1"}, headers={"Authorization": f"Bearer {token}"})
    error = raw.json()["error"]
    assert raw.status_code == 403 and error["message"] == "NOT_AUTHORIZED_FOR_TABLE"
    assert error["details"]["errorType"] == "NOT_AUTHORIZED_FOR_TABLE" and error["details"]["arguments"] == ["logs"]
    assert "missingScopes" not in error["details"]
    with client(dict(platform_only, DT_PLATFORM_TOKEN=token)) as dt, pytest.raises(Forbidden) as err:
        dt.error_logs("cart", since="now-5m")
    assert "may not read the Grail table logs" in str(err.value)
    with client(dict(platform_only, DT_PLATFORM_TOKEN=token)) as dt, pytest.raises(Forbidden) as err:
        dt.dql("fetch logs | limit 1")
    text = str(err.value)
    assert "may not read the Grail table logs" in text and "storage:logs:read and storage:buckets:read" in text


def test_classic_log_search_on_grail_needs_both_storage_scopes(local_lab, scoped):
    url = local_lab.env["DT_URL"] + "/api/v2/logs/search"
    half = httpx.get(url, params={"limit": 1}, headers={"Authorization": f"Bearer {scoped('storage:logs:read')}"})
    assert half.status_code == 403 and "storage:buckets:read" in half.text
    both = scoped("storage:logs:read", "storage:buckets:read")
    assert httpx.get(url, params={"limit": 1}, headers={"Authorization": f"Bearer {both}"}).status_code == 200


def test_the_observed_403_shapes_name_what_to_add(grail):
    dt, mock = grail
    mock.post(EXECUTE).respond(403, json={"error": {
        "code": 403, "message": "NOT_AUTHORIZED_FOR_TABLE",
        "details": {"exceptionType": "DQL-AUTHORIZATION", "errorType": "NOT_AUTHORIZED_FOR_TABLE",
                    "errorMessage": "Insufficient permission to access table (user.events).",
                    "arguments": ["user.events"]}}})
    with pytest.raises(Forbidden) as err:
        dt.dql("fetch user.events | limit 1")
    assert "may not read the Grail table user.events" in str(err.value) and "policy" in str(err.value)
    mock.get(f"{PLATFORM}{CLASSIC_ON_PLATFORM}/entities").respond(403, json={"error": {
        "code": 403, "message": "OAuth token is missing required scope. Use one of: [environment-api:entities:read]"}})
    with pytest.raises(Forbidden) as err:
        dt.find_service("cart")
    assert err.value.missing_scopes == ["environment-api:entities:read"] and "DT_PLATFORM_TOKEN" in str(err.value)


def test_an_api_tokens_403_with_display_names_names_the_scope():
    from labkit.dynatrace._http import scopes_in_message

    assert scopes_in_message("Token is missing required scope. Use one of: CaptureRequestData "
                             "(Capture request data)") == ["CaptureRequestData"]
    assert scopes_in_message("Token is missing required scope. Use one of: ExternalSyntheticIntegration") == [
        "ExternalSyntheticIntegration"]
    assert scopes_in_message("OAuth token is missing required scope. Use one of: [a:b:read, c:d:write]") == [
        "a:b:read", "c:d:write"]


def test_links_use_the_formats_a_tenant_opens():
    from labkit.dynatrace._links import logs_link, service_link

    assert service_link(PLATFORM, "SERVICE-1").endswith("/explorer?detailsId=SERVICE-1&sidebarOpen=false")
    link = logs_link(PLATFORM, 'fetch logs, from: now()-1h | filter status == "ERROR"')
    assert link.startswith(f"{PLATFORM}/ui/apps/dynatrace.logs/intent/view_query#%7B%22dt.query%22")
    assert "+" not in link and "%20" in link  # spaces as %20 (a + stays a plus: PARSE_ERROR)


def test_a_log_link_from_the_change_still_starts_at_the_change_when_opened_later():
    """01's link once read `from: now()-34s`: opened five minutes later it started after the errors."""
    from datetime import datetime, timedelta, timezone

    from labkit.dynatrace._links import logs_link
    from labkit.dynatrace._query import dql_from
    from labkit.sandbox.dynatrace.dql import parse_dql

    change = datetime.now(timezone.utc) - timedelta(seconds=34)
    query = f'fetch logs, from: {dql_from(change)} | filter status == "ERROR"'
    dql = json.loads(unquote(logs_link(PLATFORM, query, change).split("#", 1)[1]))["dt.query"]
    later = int((datetime.now(timezone.utc) + timedelta(minutes=5)).timestamp() * 1000)
    assert parse_dql(dql).start(later) == int(change.timestamp() * 1000), dql  # the change's millisecond
    assert "now()" not in dql and dql.endswith('| filter status == "ERROR"')
    relative = json.loads(unquote(logs_link(PLATFORM, "fetch logs, from: now()-1h", "now-1h").split("#")[1]))
    assert relative["dt.query"] == "fetch logs, from: now()-1h"  # asked for the last hour: stays so


def grail_records(dt: Dynatrace, query: str, timeout: float = 10.0) -> list[dict]:
    """The records of `query` once Grail has some, asked again every 0.1 s for at most `timeout` s.

    Grail is eventually consistent: a record just ingested shows up in queries a moment later, and a
    query's timeframe ends, exclusive, at the moment it runs (a query in the same millisecond as the
    ingest does not see it; on the local tenant 6 of 700 back-to-back sends were missed by the first
    query and found by the next). A user runs the query again; so does this, bounded. Empty after
    `timeout`: the record never arrived."""
    deadline = time.monotonic() + timeout
    while not (records := dt.dql(query)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return records


def test_a_change_event_in_grail_has_the_davis_fields(local_lab, platform_only):
    with client(platform_only) as dt:
        run_id = uuid.uuid4().hex[:12]
        dt.send_change_event("cart", "cartFailure", "on", old="off", run_id=run_id)
        records = grail_records(dt, f'fetch events | filter labkit.run_id == "{run_id}"')
    assert records, f"the change event {run_id} never showed in Grail within 10 s"
    record = records[0]
    assert record["event.type"] == "CUSTOM_CONFIGURATION" and record["event.name"] == "feature flag changed"
    assert record["event.kind"] == "DAVIS_EVENT" and record["event.provider"] == "EVENTS_REST_API_INGEST"
    assert record["dt.entity.service.name"] == "cart" and record["dt.source_entity"].startswith("SERVICE-")
    assert record["feature_flag.key"] == "cartFailure" and record["defaultValue"] == "on"
    assert record["dt.davis.is_rootcause_relevant"] is True and "dt.event.is_rootcause_relevant" not in record
