"""Hardening (issue 6): faults injected into the local lab, and bad input at every entry point.

Each fault case asserts what a user would see AND that nothing was lost: the change event is stored
at most once (exactly once when labkit says it was sent), flag edits survive, flagd ends at its
replica count. Every case calls `fault_record(...)`; the session prints the results table at the
end (tests/hardening_report.py). Tenant cases run with a canary token and count where it shows up.

What other modules already prove in depth is not repeated at length here, only as one recorded
case each: respx-only failure shapes (tests/test_dynatrace_faults.py), the CLI's own exit codes
(tests/test_cli.py), the sandbox's Kubernetes semantics (tests/test_sandbox_kube.py).
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from hardening_report import Canary, exception_text, fault_record  # noqa: F401  (fixture)
from labkit.dynatrace import READ_SCOPES, Dynatrace
from labkit.errors import BadInput, Forbidden, LabError, LabTimeout, NotFound, Unreachable
from labkit.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
FLAGS_YAML = (ROOT / "labkit" / "sandbox" / "flags.yaml").read_text()
EVENTS = "/api/v2/events/ingest"
PODS = "/api/v1/namespaces/default/pods"
CM_PATH = "/api/v1/namespaces/default/configmaps/flagd-config"


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def stored(local_lab, run_id: str) -> int:
    """How many change events with this run id the local lab's tenant keeps."""
    return sum(1 for e in local_lab.telemetry.events() if e.properties.get("labkit.run_id") == run_id)


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # test-side observation of the sandbox only
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture(scope="module")
def canary(local_lab):
    c = Canary().register(local_lab)
    yield c
    c.unregister()


@pytest.fixture
def canary_env(local_lab, canary, monkeypatch, tmp_path):
    """os.environ as a user's shell would have it, with the canary as the tokens (and no .env)."""
    env = canary.env(local_lab)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return env


def client(env, **kw) -> Dynatrace:
    kw = {"timeout": 2.0, "retries": 2, "backoff": 0.01, **kw}
    return Dynatrace(Settings.load(environ=env, dotenv=None), **kw)


# ================================================================================ the tenant
# (name, faults on the tenant, expected error or None, words the message must have,
#  POST attempts expected (None: not counted), events stored expected)
TENANT_EVENT_CASES = [
    ("401 token rejected", [dict(status=401, path_prefix="/api/v2/")],
     Forbidden, ["401", "DT_API_TOKEN"], None, 0),
    ("403 scope missing on the POST", [dict(status=403, path_prefix=EVENTS, method="POST")],
     Forbidden, ["403", "events.ingest"], 1, 0),
    ("404 on the POST", [dict(status=404, path_prefix=EVENTS, method="POST")],
     NotFound, ["404", "DT_URL"], 1, 0),
    ("429 with Retry-After, then accepted", [dict(status=429, retry_after="0.3", count=1, path_prefix=EVENTS)],
     None, [], 2, 1),
    ("429 without Retry-After, then accepted", [dict(status=429, count=1, path_prefix=EVENTS)],
     None, [], 2, 1),
    ("429 until retries run out", [dict(status=429, path_prefix=EVENTS)],
     Unreachable, ["429", "not recorded"], 3, 0),
    ("502 on the POST (never resent)", [dict(status=502, path_prefix=EVENTS)],
     Unreachable, ["may or may not have been recorded"], 1, 0),
    ("503 on the POST (never resent)", [dict(status=503, path_prefix=EVENTS)],
     Unreachable, ["may or may not have been recorded"], 1, 0),
    ("malformed JSON answer to the POST", [dict(status=200, body=b'{"reportCount": 1, "eventIn', path_prefix=EVENTS)],
     Unreachable, ["not JSON", "may or may not"], 1, 0),
    ("502 then 503 on the entity lookup, then fine", [dict(status=502, count=1, path_prefix="/api/v2/entities"),
                                                      dict(status=503, count=1, path_prefix="/api/v2/entities")],
     None, [], 1, 1),
]


@pytest.mark.parametrize("name,faults,expected,words,attempts,events", TENANT_EVENT_CASES,
                         ids=[c[0] for c in TENANT_EVENT_CASES])
def test_tenant_fault_on_the_change_event(name, faults, expected, words, attempts, events, local_lab,
                                          canary, canary_env, fault_record, caplog):
    caplog.set_level(logging.DEBUG)
    rec = fault_record("tenant", name)
    knobs = local_lab.tenant_server.faults
    run_id = uuid.uuid4().hex[:12]
    with client(canary_env) as dt:
        dt.find_service("cart")  # the entity lookup is cached: attempts below count the POST only
        dt._entity_cache.clear() if "entity" in name else None
        for f in faults:
            knobs.add(**f)
        knobs.add(path_prefix=EVENTS, method="POST")  # no fault: counts the POSTs that got through
        seen = knobs.seen
        started = time.monotonic()
        try:
            event = dt.send_change_event("cart", "cartFailure", "on", old="off", run_id=run_id)
            error = None
        except LabError as exc:
            event, error = None, exc
        elapsed = time.monotonic() - started
    knobs.clear()
    n = stored(local_lab, run_id)
    visible = exception_text(error) if error else event.summary()
    rec.lost = int(n > 1) + int(error is None and n != 1)  # a duplicate, or "sent" but not stored
    rec.leaked = canary.hits(visible, caplog.text)
    if expected is None:
        assert error is None, visible
        assert event.ok and n == 1
    else:
        assert isinstance(error, expected), visible
        for word in words:
            assert word in str(error), str(error)
        assert n == events
        assert "Traceback" not in str(error)
    if attempts is not None and "entity" not in name:
        assert knobs.seen - seen == attempts, f"{knobs.seen - seen} POST attempts"
    if "with Retry-After" in name:
        assert elapsed >= 0.3, "Retry-After was not honoured"
    assert rec.lost == 0 and rec.leaked == 0


def test_tenant_timeout_on_the_event_post_is_sent_once(local_lab, canary, canary_env, fault_record, caplog):
    """The tenant is slower than the client's timeout: one attempt, and the event is stored once."""
    caplog.set_level(logging.DEBUG)
    rec = fault_record("tenant", "timeout on the POST (slower than the client)")
    knobs = local_lab.tenant_server.faults
    run_id = uuid.uuid4().hex[:12]
    with client(canary_env, timeout=0.3) as dt:
        dt.find_service("cart")
        knobs.add(latency=0.7, path_prefix=EVENTS, method="POST")
        seen = knobs.seen
        with pytest.raises(Unreachable) as err:
            dt.send_change_event("cart", "cartFailure", "on", run_id=run_id)
    knobs.clear()
    assert knobs.seen - seen == 1
    assert "may or may not have been recorded" in str(err.value) and "0.3 s" in str(err.value)
    wait_until(lambda: stored(local_lab, run_id) >= 1, 3.0)  # the slow request completes server-side
    time.sleep(0.1)
    n = stored(local_lab, run_id)
    rec.lost = int(n != 1)
    rec.leaked = canary.hits(exception_text(err.value), caplog.text)
    assert n == 1 and rec.leaked == 0


def test_tenant_timeout_on_reads_is_retried_then_clear(local_lab, canary, canary_env, fault_record, caplog):
    caplog.set_level(logging.DEBUG)
    rec = fault_record("tenant", "timeout on reads (retried, then a clear error)")
    knobs = local_lab.tenant_server.faults
    with client(canary_env, timeout=0.3, retries=1) as dt:
        knobs.add(latency=0.6, path_prefix="/api/v2/problems", count=1)
        frame = dt.problems(since="now-10m")  # first attempt timed out, second answered
        knobs.add(latency=0.6, path_prefix="/api/v2/problems", count=2)
        with pytest.raises(Unreachable) as err:
            dt.problems(since="now-10m")
    assert "problem_id" in frame.columns
    assert "within 0.3 s" in str(err.value) and "2 attempts" in str(err.value)
    rec.leaked = canary.hits(exception_text(err.value), caplog.text)
    assert rec.leaked == 0


@pytest.mark.parametrize("status", [502, 503])
def test_tenant_5xx_on_reads_is_retried(status, local_lab, canary, canary_env, fault_record, caplog):
    caplog.set_level(logging.DEBUG)
    rec = fault_record("tenant", f"{status} on a metrics read (retried)")
    knobs = local_lab.tenant_server.faults
    with client(canary_env) as dt:
        knobs.add(status=status, count=2, path_prefix="/api/v2/metrics/query")
        frame = dt.failed_requests("cart", since="now-10m")
        knobs.add(status=status, path_prefix="/api/v2/metrics/query")
        with pytest.raises(Unreachable) as err:
            dt.failed_requests("cart", since="now-10m")
    knobs.clear()
    assert len(frame) > 0 and list(frame.columns) == ["timestamp", "failed", "requests", "failure_rate"]
    assert str(status) in str(err.value) and "3 attempts" in str(err.value)
    rec.leaked = canary.hits(exception_text(err.value), caplog.text)
    assert rec.leaked == 0


def test_tenant_malformed_json_on_a_read(local_lab, canary, canary_env, fault_record):
    rec = fault_record("tenant", "malformed JSON answer to a read")
    local_lab.tenant_server.faults.add(status=200, body=b'{"problems": [', path_prefix="/api/v2/problems")
    with client(canary_env) as dt, pytest.raises(Unreachable) as err:
        dt.problems(since="now-10m")
    assert "unexpected" in str(err.value) and "not JSON" in str(err.value)
    rec.leaked = canary.hits(exception_text(err.value))
    assert rec.leaked == 0


def test_tenant_connection_refused(canary, canary_env, local_lab, fault_record, caplog):
    caplog.set_level(logging.DEBUG)
    rec = fault_record("tenant", "connection refused (nothing listening)")
    env = dict(canary_env, DT_URL=f"http://127.0.0.1:{closed_port()}")
    before = len(local_lab.telemetry.events())
    started = time.monotonic()
    with client(env) as dt, pytest.raises(Unreachable) as err:
        dt.send_change_event("cart", "cartFailure", "on")
    assert time.monotonic() - started < 5
    assert "Could not reach Dynatrace" in str(err.value) and "connection refused" in str(err.value)
    assert len(local_lab.telemetry.events()) == before
    rec.leaked = canary.hits(exception_text(err.value), caplog.text)
    assert rec.leaked == 0


def test_tenant_403_with_the_labs_ingest_only_token(local_lab, lab_env, fault_record, caplog):
    """The lab's own token (ingest scopes only): the event still goes out once; reads name the scope."""
    caplog.set_level(logging.DEBUG)
    rec = fault_record("tenant", "403: the lab's ingest-only token")
    env = dict(lab_env, DT_API_TOKEN=local_lab.ingest_token)
    env.pop("DT_PLATFORM_TOKEN")
    run_id = uuid.uuid4().hex[:12]
    with client(env) as dt:
        assert dt.missing_scopes() == set(READ_SCOPES)
        event = dt.send_change_event("cart", "cartFailure", "on", old="off", run_id=run_id)
        with pytest.raises(Forbidden) as err:
            dt.failed_requests("cart")
    assert event.ok and any("entities.read" in w for w in event.warnings)
    assert "metrics.read" in str(err.value) and "403" in str(err.value)
    n = stored(local_lab, run_id)
    rec.lost = int(n != 1)
    secret = local_lab.ingest_token.rsplit(".", 1)[1]
    rec.leaked = (exception_text(err.value) + caplog.text + repr(dt)).count(secret)
    assert n == 1 and rec.leaked == 0
