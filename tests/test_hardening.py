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
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from kube_sandbox import KubeSandbox
from hardening_report import canary, exception_text, fault_record  # noqa: F401  (fixtures)
from labkit import releases
from labkit.dynatrace import READ_SCOPES, Dynatrace
from labkit.errors import BadInput, Forbidden, LabError, LabTimeout, NotFound, Unreachable
from labkit.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
EVENTS = "/api/v2/events/ingest"
PODS = "/api/v1/namespaces/default/pods"
CM_PATH = "/api/v1/namespaces/default/configmaps/flagd-config"
# The local lab's demo release (LABKIT_DEMO_RELEASE, default 3.0.0): its `on`, and variants as labkit shows them
RELEASE = releases.get()
ON = RELEASE.lab_on_variant
ON_SHOWN, OFF_SHOWN = (f"{v} ({json.dumps(RELEASE.flag()['variants'][v])})" for v in (ON, "off"))


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
        dt.entities.forget() if "entity" in name else None
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
    assert len(frame) > 0 and list(frame.columns) == ["timestamp", "failed", "requests", "failure_rate", "partial"]
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


def test_tenant_connection_refused(canary, canary_env, local_lab, fault_record, caplog, closed_port):
    caplog.set_level(logging.DEBUG)
    rec = fault_record("tenant", "connection refused (nothing listening)")
    env = dict(canary_env, DT_URL=f"http://127.0.0.1:{closed_port}")
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


# ================================================================================ the cluster
class KubeOnly(KubeSandbox):
    """A Kubernetes API of the local lab by itself (flagd, the ConfigMap), so a case can break it."""

    def __init__(self, tmp: Path, **timings):
        super().__init__(tmp, demo=False)  # flagd alone: the demo's other workloads are not the case
        for key, value in timings.items():
            setattr(self.timings, key, value)
        self.start()
        assert wait_until(lambda: self.ready() == 1)

    def configmap_bytes(self) -> str:
        return json.dumps(self.cluster.get("configmaps", "flagd-config"), sort_keys=True)

    def flags(self) -> dict:
        return json.loads(self.cluster.get("configmaps", "flagd-config")["data"]["demo.flagd.json"])["flags"]

    def scale(self, n: int) -> None:
        """Scale flagd and wait until exactly n pods are there, all Ready."""
        super().scale(n)
        assert wait_until(lambda: self.ready() == n and len(self.cluster.list("pods", None, None)[0]) == n)

    def break_first_watch(self, how: str) -> dict:
        """The next pod watch goes wrong: 'drop' after one event, or an ERROR 410 Expired event."""
        from labkit.sandbox.http import Response

        real, seen = self.server.app, {"broken": 0}

        def app(req):
            if req.query.get("watch") == "true" and req.path == PODS and not seen["broken"]:
                seen["broken"] += 1
                resp = real(req)
                if how == "drop":
                    def dropped():
                        yield next(resp.body)
                        raise ConnectionResetError("the watch connection dropped")
                    return Response(200, dropped(), "application/json")
                resp.body.close()
                gone = {"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "reason": "Expired", "code": 410, "message": "too old resource version: 1 (42)"}}
                return Response(200, iter([json.dumps(gone).encode() + b"\n"]), "application/json")
            return real(req)

        self.server.app = app
        return seen



@pytest.fixture
def kube(tmp_path):
    k = KubeOnly(tmp_path)
    yield k
    k.stop()


def test_cluster_409_concurrent_edit_lands_first_both_survive(kube, fault_record):
    """Someone edits paymentFailure between our read and our write: 409, re-read, both edits kept."""
    rec = fault_record("cluster", "409 on the ConfigMap, a concurrent edit landing first")
    lab = kube.labkit()
    kube.server.faults.add(latency=0.4, count=1, path_prefix=CM_PATH, method="PUT")  # hold our write
    seen = kube.server.faults.seen

    def other_writer():
        wait_until(lambda: kube.server.faults.seen > seen)
        live = kube.cluster.get("configmaps", "flagd-config")
        doc = json.loads(live["data"]["demo.flagd.json"])
        doc["flags"]["paymentFailure"]["defaultVariant"] = "50%"
        kube.cluster.patch("configmaps", "flagd-config", "application/merge-patch+json",
                           {"data": {"demo.flagd.json": json.dumps(doc, indent=2)}})

    writer = threading.Thread(target=other_writer)
    writer.start()
    change = lab.set_default_variant("cartFailure", "on")
    writer.join()
    flags = kube.flags()
    rec.lost = int(flags["cartFailure"]["defaultVariant"] != "on") + int(
        flags["paymentFailure"]["defaultVariant"] != "50%")
    assert lab.conflicts >= 1, "the concurrent write did not land first"
    assert change.new_variant == "on" and rec.lost == 0


def test_cluster_403_changes_nothing(kube, fault_record):
    rec = fault_record("cluster", "403 on the ConfigMap update and on the scale")
    before = kube.configmap_bytes()
    kube.cluster.forbid("update", "configmaps")
    with pytest.raises(Forbidden) as err:
        kube.labkit().set_default_variant("cartFailure", "on")
    assert "update configmaps in namespace default" in str(err.value) and "RBAC" in str(err.value)
    kube.cluster.allow_all()
    kube.cluster.forbid("patch", "deployments/scale")
    with pytest.raises(Forbidden, match="patch deployments/scale"):
        kube.labkit().restart_flagd(timeout=5)
    kube.cluster.allow_all()
    rec.lost = int(kube.configmap_bytes() != before) + int(kube.replicas() != 1)
    assert rec.lost == 0 and kube.ready() == 1


def test_cluster_403_on_the_watch_mid_restart_scales_back(kube, fault_record):
    rec = fault_record("cluster", "403 on the pod watch in the middle of a restart")
    kube.scale(2)
    kube.cluster.forbid("watch", "pods")
    with pytest.raises(Forbidden, match="watch pods"):
        kube.labkit().restart_flagd(timeout=5)
    kube.cluster.allow_all()
    rec.lost = int(kube.replicas() != 2)
    assert rec.lost == 0 and wait_until(lambda: kube.ready() == 2)


def test_cluster_404_configmap_missing(kube, fault_record, monkeypatch, tmp_path, capsys):
    from labkit import cli

    rec = fault_record("cluster", "404: the ConfigMap is missing")
    kube.cluster.delete("configmaps", "flagd-config")
    with pytest.raises(NotFound) as err:
        kube.labkit().set_default_variant("cartFailure", "on")
    assert "ConfigMap flagd-config not found in namespace default" in str(err.value)
    assert "kubectl apply -f flags.yaml" in str(err.value)
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith(("DT_", "LABKIT_", "FRONTEND_URL"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    code = cli.main(["set", "cartFailure", "on", "--no-event"])
    out, errtext = capsys.readouterr()
    assert code == 1 and "ConfigMap flagd-config not found" in errtext and "Traceback" not in errtext
    rec.lost = int(kube.cluster._objects["configmaps"].get("flagd-config") is not None) + int(kube.replicas() != 1)
    assert rec.lost == 0, "nothing may be created or restarted for a missing ConfigMap"


@pytest.mark.parametrize("how", ["drop", "410"])
def test_cluster_watch_broken_mid_restart(how, kube, fault_record):
    name = {"drop": "a pod watch dropped mid-restart", "410": "410 Gone on the pod watch mid-restart"}[how]
    rec = fault_record("cluster", name)
    kube.scale(2)
    seen = kube.break_first_watch(how)
    result = kube.labkit().restart_flagd(timeout=10)
    assert seen["broken"] == 1
    rec.lost = int(kube.replicas() != 2) + int(result.replicas != 2)
    assert rec.lost == 0 and len(result.pods) == 2 and kube.ready() == 2


def test_cluster_500_on_the_watch_mid_restart(kube, fault_record):
    rec = fault_record("cluster", "500 on the pod watch mid-restart")
    kube.scale(2)
    knobs = kube.server.faults

    def progress(message, fraction=None):
        if message.startswith("waiting for") and not knobs.seen:
            knobs.add(status=500, count=1, path_prefix=PODS, method="GET",
                      body={"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500,
                            "message": "etcdserver: leader changed"})

    result = kube.labkit().restart_flagd(timeout=10, progress=progress)
    assert knobs.seen == 1, "the fault was not hit"
    rec.lost = int(kube.replicas() != 2) + int(result.replicas != 2)
    assert rec.lost == 0 and kube.ready() == 2


def test_cluster_flagd_never_ready_times_out_at_its_replica_count(kube, fault_record):
    rec = fault_record("cluster", "a flagd pod that never becomes Ready")
    kube.scale(2)
    kube.timings.pod_start = 3600.0
    started = time.monotonic()
    with pytest.raises(LabTimeout) as err:
        kube.labkit().restart_flagd(timeout=1.5)
    assert time.monotonic() - started < 4
    assert "scaled back to 2 but not Ready" in str(err.value) and "kubectl" in str(err.value)
    rec.lost = int(kube.replicas() != 2)
    assert rec.lost == 0


@pytest.mark.parametrize("when", ["waiting for", "flagd pods ready"])
def test_cluster_interrupt_in_the_middle_of_restart_flagd(when, kube, fault_record):
    """Ctrl-C while old pods go (flagd at 0) or while new ones start: flagd ends at its count."""
    phase = "while pods terminate" if when == "waiting for" else "while pods start"
    rec = fault_record("cluster", f"KeyboardInterrupt in restart_flagd {phase}")
    kube.scale(2)

    def progress(message, fraction=None):
        if message.startswith(when):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        kube.labkit().restart_flagd(timeout=10, progress=progress)
    rec.lost = int(kube.replicas() != 2)
    assert rec.lost == 0 and wait_until(lambda: kube.ready() == 2)


# ---- two changes at once (issue 14): two `python -m labkit set` processes on one flagd -------------
def _set_at_once(kube: KubeOnly, *changes: tuple) -> list[tuple[int, str, str]]:
    """Start one `python -m labkit set FLAG VARIANT [options]` per change at the same moment."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DT_", "KUBECONFIG", "LABKIT_", "LAB_", "FRONTEND_URL"))}
    env.update(PYTHONPATH=str(ROOT), KUBECONFIG=str(kube.kubeconfig))
    procs = [subprocess.Popen([sys.executable, "-m", "labkit", "set", *change, "--no-event"], cwd=kube.tmp,
                              env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for change in changes]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=90)
        results.append((proc.returncode, out, err))
    return results


def _served_by_each(kube: KubeOnly) -> list[dict]:
    """The flags each Ready flagd pod loaded (the ones the Service and the pod proxy answer from)."""
    pods, _ = kube.cluster.list("pods", "opentelemetry.io/name=flagd", None)
    loaded = [kube.cluster.pod_flags(p["metadata"]["name"]) for p in pods]
    return [{k: f["defaultVariant"] for k, f in flags.doc["flags"].items()} for flags in loaded if flags]


def _settled(kube: KubeOnly, replicas: int) -> bool:
    """flagd at its count, every Ready pod serving the ConfigMap's final file."""
    final = {k: f["defaultVariant"] for k, f in kube.flags().items()}
    each = _served_by_each(kube)
    return kube.replicas() == replicas and len(each) == replicas and all(e == final for e in each)


@pytest.fixture
def kube2(tmp_path):
    """flagd at 2 replicas, pods slow enough for two restarts to overlap."""
    k = KubeOnly(tmp_path, pod_start=0.8, pod_terminate=0.8)
    k.scale(2)
    yield k
    k.stop()


@pytest.mark.parametrize("restart", ["rollout", "scale"])
def test_cluster_two_processes_change_different_flags_at_once(restart, kube2, fault_record):
    rec = fault_record("cluster", f"two `labkit set` processes at once, different flags ({restart})")
    results = _set_at_once(kube2, ("cartFailure", "on", "--restart", restart),
                           ("paymentFailure", "50%", "--restart", restart))
    flags = kube2.flags()
    rec.lost = int(flags["cartFailure"]["defaultVariant"] != "on") + int(
        flags["paymentFailure"]["defaultVariant"] != "50%")
    assert rec.lost == 0, "a change was lost from the ConfigMap"
    for (code, out, err), said in zip(results, ("cartFailure = on", "paymentFailure = 50%")):
        assert code == 0 and f"all 2 pods serve {said}" in out, out + err
    settled = _settled(kube2, 2)
    rec.lost += int(not settled)
    assert settled, f"flagd must end at 2 pods serving both changes: {_served_by_each(kube2)}"


def test_cluster_two_processes_change_the_same_flag_at_once(kube2, fault_record):
    """The later write wins; the other either finished first or says who won; neither reports a value
    that is not served, and flagd ends serving the winner on every pod."""
    rec = fault_record("cluster", "two `labkit set` processes at once on the same flag")
    wanted = ("50%", "100%")
    results = _set_at_once(kube2, ("paymentFailure", wanted[0]), ("paymentFailure", wanted[1]))
    final = kube2.flags()["paymentFailure"]["defaultVariant"]
    assert final in wanted
    false_reports = 0
    for (code, out, err), variant in zip(results, wanted):
        reported = re.findall(r"serves? paymentFailure = (\S+)", out)
        false_reports += sum(v != variant for v in reported)  # only ever its own value
        if variant == final:
            assert code == 0 and reported == [variant], out + err
        else:  # done before the winner wrote, or told that the later change wins
            assert (code == 0 and reported == [variant]) or (
                code == 1 and f"is '{final}' in ConfigMap flagd-config now" in err and "wins" in err), out + err
    settled = wait_until(lambda: _settled(kube2, 2), timeout=10)
    rec.lost = false_reports + int(not settled)
    assert rec.lost == 0


def test_cluster_rollout_on_two_replicas_keeps_a_ready_pod(kube2, fault_record):
    from kube_sandbox import ReadyGauge

    rec = fault_record("cluster", "a rollout change on 2 replicas: never 0 Ready flagd pods")
    with ReadyGauge(kube2.kubeconfig) as gauge:
        (code, out, err), = _set_at_once(kube2, ("cartFailure", "on", "--restart", "rollout"))
        each = _served_by_each(kube2)
    assert code == 0, err
    rec.lost = int(gauge.fewest < 1) + sum(e["cartFailure"] != "on" for e in each)
    assert gauge.dark == 0 and len(each) == 2 and rec.lost == 0


# ================================================================================ the sandbox process
def _sandbox_env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DT_", "KUBECONFIG", "LABKIT_", "LAB_", "FRONTEND_URL"))}
    env.update(PYTHONPATH=str(ROOT), LABKIT_POD_START="0.3", LABKIT_POD_TERMINATE="0.3",
               LABKIT_SEED_HOURS="0.2", LABKIT_SHOPPER_RATE="2")
    return env


def _start_sandbox(state: Path, tmp: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "labkit", "sandbox", "--state-dir", str(state)],
                            cwd=tmp, env=_sandbox_env(tmp), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    assert "local lab ready" in first, first + (proc.stderr.read() if proc.poll() is not None else "")
    return proc


def _cli(capsys, *args, seen: list | None = None) -> tuple[int, str, str]:
    from labkit import cli

    code = cli.main(list(args))
    out, err = capsys.readouterr()
    if seen is not None:
        seen.append(out + err)
    return code, out, err


def test_sandbox_killed_and_restarted_mid_run(tmp_path, monkeypatch, capsys, fault_record):
    """kill -9 of `python -m labkit sandbox`: a clear Unreachable while it is down (exit 1, no
    traceback); started again on the same state dir it keeps its ports, tokens and flags, so the
    lab.env a terminal sourced before works again, and the flag change made before the kill is there."""
    from labkit.settings import read_dotenv

    rec = fault_record("sandbox", "the local lab process killed (-9) and restarted mid-run")
    seen: list[str] = []
    state = tmp_path / "lab"
    proc = _start_sandbox(state, tmp_path)
    try:
        env = read_dotenv(state / "lab.env")
        monkeypatch.chdir(tmp_path)
        for key in [k for k in os.environ if k.startswith(("DT_", "LABKIT_", "FRONTEND_URL", "KUBECONFIG"))]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        code, out, err = _cli(capsys, "set", "cartFailure", ON, seen=seen)
        assert code == 0 and f"serves cartFailure = {ON}" in out, err
    finally:
        proc.kill()  # no clean stop: lab.env stays behind, nothing answers
        proc.communicate(timeout=10)

    down = subprocess.run([sys.executable, "-m", "labkit", "flags"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env=dict(_sandbox_env(tmp_path), **env))
    assert down.returncode == 1, down.stderr
    assert down.stderr.startswith("error: Cannot reach the Kubernetes API") and "labkit sandbox" in down.stderr
    assert "Traceback" not in down.stderr + down.stdout
    code, out, err = _cli(capsys, "set", "cartFailure", "off", "--no-event", seen=seen)
    assert code == 1 and err.startswith("error: Cannot reach") and "Traceback" not in err

    proc = _start_sandbox(state, tmp_path)
    try:
        assert read_dotenv(state / "lab.env") == env, "ports or tokens changed: the old lab.env broke"
        code, out, err = _cli(capsys, "flags", "cartFailure", seen=seen)
        assert code == 0, err
        row = next(line for line in out.splitlines() if line.startswith("cartFailure"))
        kept = row.split()[-3] == ON and row.endswith(ON_SHOWN)  # DEFAULT and SERVED columns
        code, out, err = _cli(capsys, "set", "cartFailure", "off", seen=seen)  # the event too: same tokens
        assert code == 0 and "serves cartFailure = off" in out and "change event sent" in out, err
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    rec.lost = int(not kept)
    secrets = [env[k].rsplit(".", 1)[1] for k in ("DT_API_TOKEN", "DT_PLATFORM_TOKEN")]
    shown = down.stdout + down.stderr + "".join(seen) + capsys.readouterr().err
    rec.leaked = sum(shown.count(s) for s in secrets)
    assert kept, f"the change made before the kill was lost: {row}"
    assert proc.returncode == 0 and rec.leaked == 0


# ================================================================================ the shop
def test_shop_refused_connections_are_counted_not_raised(fault_record, capsys, monkeypatch, tmp_path,
                                                        closed_port):
    from labkit.shop import Shop

    rec = fault_record("shop", "frontend refusing connections")
    url = f"http://127.0.0.1:{closed_port}"
    result = Shop(url).run(seconds=0.6, rate=20)
    assert result.unreachable and result.failure_count >= 1
    assert all(f.status is None and "connection refused" in f.detail for f in result.failures)
    assert "port-forward svc/frontend-proxy 8080:8080" in result.summary()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FRONTEND_URL", url)
    code, out, err = _cli(capsys, "shop", "--minutes", "0.01")
    assert code == 1 and "failed" in out and "port-forward" in err and "Traceback" not in out + err


def test_shop_5xx_and_slow_answers_are_counted_not_raised(local_lab, fault_record):
    from labkit.shop import Shop

    rec = fault_record("shop", "frontend answering 500/503 and slower than the timeout")
    knobs = local_lab.frontend_server.faults
    knobs.add(status=503, path_prefix="/api/cart", method="DELETE", count=3)
    knobs.add(status=500, body="<html>upstream error</html>", path_prefix="/api/cart", method="GET", count=2)
    knobs.add(latency=0.5, path_prefix="/api/cart", method="POST", count=1)
    result = Shop(local_lab.frontend_server.url, timeout=0.25).run(seconds=2, rate=0, max_sessions=8)
    statuses = sorted((f.operation, f.status) for f in result.failures)
    assert result.sessions == 8 and not result.unreachable
    assert statuses.count(("empty", 503)) == 3 and statuses.count(("view", 500)) == 2
    assert ("add", None) in statuses and any("no answer within 0.25 s" in f.detail for f in result.failures)
    assert result.failure_count == 6 and result.operations >= 8 * 3


# ================================================================================ bad input
BIG = "x" * 10_000
INJECT = "cart),type(HOST"           # would add a criterion to an unquoted entity selector
INJECT2 = 'cart",entityName.equals(checkout'

# (id, argv, exit code, words in the one-line error); every case: no traceback, nothing changed
CLI_CASES = [
    ("set: empty flag", ["set", "", "on"], 2, ["No flag ''"]),
    ("set: empty variant", ["set", "cartFailure", ""], 2, ["no variant ''", "Allowed variants"]),
    ("set: flag key with a dot", ["set", "cart.Failure", "on"], 2, ["Did you mean 'cartFailure'"]),
    ("set: variant ../../etc", ["set", "cartFailure", "../../etc"], 2, ["Allowed variants: ", ON_SHOWN, OFF_SHOWN]),
    ("set: 10k-character flag", ["set", BIG, "on"], 2, ["No flag"]),
    ("set: 10k-character variant", ["set", "cartFailure", BIG], 2, ["Allowed variants"]),
    ("set: unicode flag", ["set", "cartFailüre", "on"], 2, ["Did you mean 'cartFailure'"]),
    ("set: unicode variant", ["set", "cartFailure", "ön"], 2, ["Allowed variants"]),
    ("set: newline in --namespace", ["set", "cartFailure", "on", "--namespace", "de\nfault"], 2,
     ["is not a Kubernetes namespace name"]),
    ("set: 10k-character --namespace", ["set", "cartFailure", "on", "--namespace", BIG], 2,
     ["is not a Kubernetes namespace name"]),
    ("set: --timeout not a number", ["set", "cartFailure", "on", "--timeout", "soon"], 2, ["invalid float"]),
    ("set: --timeout negative", ["set", "cartFailure", "on", "--timeout", "-5"], 2, ["--timeout"]),
    ("set: --timeout nan", ["set", "cartFailure", "on", "--timeout", "nan"], 2, ["--timeout"]),
    ("set: --how unknown", ["set", "cartFailure", "on", "--how", "teleport"], 2, ["invalid choice"]),
    ("set: selector injection in --service", ["set", "cartFailure", ON, "--service", INJECT], 1,
     ["No entity matched", '"cart),type(HOST"']),
    ("event: empty service", ["event", "", "cartFailure", "on"], 2, ["service name is empty"]),
    ("event: selector injection ) ,", ["event", INJECT, "cartFailure", "on"], 1, ["No entity matched"]),
    ("event: selector injection quote", ["event", INJECT2, "cartFailure", "on"], 1, ["No entity matched"]),
    ("event: empty flag", ["event", "cart", "", "on"], 2, ["flag name is empty"]),
    ("event: empty value", ["event", "cart", "cartFailure", ""], 2, ["value"]),
    ("event: 10k-character value", ["event", "cart", "cartFailure", BIG], 2, ["4096"]),
    ("event: newline in the flag", ["event", "cart", "cart\nFailure", "on"], 2, ["flag"]),
    ("failures: empty --since", ["failures", "--since", ""], 2, ["--since"]),
    ("failures: --since with injection", ["failures", "--since", "1h)|fetch logs"], 2, ["--since"]),
    ("failures: --since too large", ["failures", "--since", "99999m"], 2, ["--since"]),
    ("failures: --resolution nonsense", ["failures", "--resolution", "1m)"], 2, ["resolution"]),
    ("failures: injection-shaped service", ["failures", INJECT], 0, []),
    ("problems: --since 1y", ["problems", "--since", "1y"], 2, ["--since"]),
    ("logs: --limit 0", ["logs", "--limit", "0"], 2, ["--limit"]),
    ("logs: --limit not a number", ["logs", "--limit", "many"], 2, ["invalid int"]),
    ("logs: DQL-injection-shaped service", ["logs", 'cart" or true or "'], 0, []),
    ("shop: --minutes 0", ["shop", "--minutes", "0"], 2, ["--minutes"]),
    ("shop: --minutes nan", ["shop", "--minutes", "nan"], 2, ["--minutes"]),
    ("shop: --rate negative", ["shop", "--minutes", "0.01", "--rate", "-1"], 2, ["rate"]),
    ("shop: --rate nan", ["shop", "--minutes", "0.01", "--rate", "nan"], 2, ["rate"]),
    ("flags: 10k-character flag", ["flags", BIG], 2, ["No flag"]),
    ("unknown command", ["teleport"], 2, ["invalid choice"]),
]


def _snapshot(local_lab) -> tuple[str, int, int]:
    """What must not change: the ConfigMap (bytes), stored events, flagd's replicas."""
    cm = json.dumps(local_lab.cluster.get("configmaps", "flagd-config"), sort_keys=True)
    return cm, len(local_lab.telemetry.events()), local_lab.cluster.scale("flagd")["spec"]["replicas"]


@pytest.mark.parametrize("name,argv,code,words", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_input_cli(name, argv, code, words, local_lab, canary, canary_env, capsys, fault_record):
    from labkit import cli

    rec = fault_record("bad input", f"CLI {name}")
    before = _snapshot(local_lab)
    try:
        got = cli.main(argv)
    except SystemExit as exc:  # argparse: usage and a one-line error, exit 2
        got = exc.code
    out, err = capsys.readouterr()
    after = _snapshot(local_lab)
    rec.lost = int(after != before)
    rec.leaked = canary.hits(out, err)
    assert got == code, f"exit {got}: {err[-600:]}"
    assert "Traceback" not in out + err
    if code:
        assert err.lstrip().startswith(("error:", "usage: python -m labkit")), err[-600:]
        assert len(err) < 2000, f"{len(err)} characters of error"
    for word in words:
        assert word in err, err[-600:]
    assert rec.lost == 0, "something changed"
    assert rec.leaked == 0


SWITCH_CASES = [("empty", ""), ("../../etc", "../../etc"), ("wrong type (int)", 1),
                ("wrong type (bool)", True), ("10k characters", BIG), ("unicode", "ön"),
                ("a dot", "o.n"), ("newline", "on\n")]


@pytest.fixture(scope="module")
def lab(local_lab, canary):
    from labkit.lab import Lab

    lab = Lab(Settings.load(environ=canary.env(local_lab), dotenv=None))
    lab.timeline.clear()
    yield lab
    lab.close()


@pytest.mark.parametrize("name,variant", SWITCH_CASES, ids=[c[0] for c in SWITCH_CASES])
def test_bad_input_flag_switch(name, variant, lab, local_lab, canary, fault_record):
    from labkit.widgets import FlagSwitch

    rec = fault_record("bad input", f"FlagSwitch.apply: {name}")
    switch = FlagSwitch(lab, "cartFailure")
    before = _snapshot(local_lab)
    assert switch.apply(variant) is None
    after = _snapshot(local_lab)
    rec.lost = int(after != before)
    rec.leaked = canary.hits(switch.status.value, repr(switch.error))
    assert isinstance(switch.error, BadInput), repr(switch.error)
    assert "Allowed variants: " in switch.status.value and ON_SHOWN in switch.status.value
    assert OFF_SHOWN in switch.status.value
    assert "Traceback" not in switch.status.value and len(switch.status.value) < 1000
    assert rec.lost == 0, "an event was stored or the ConfigMap changed"
    assert rec.leaked == 0


def test_bad_input_flag_switch_flag_key_with_a_dot(lab, local_lab, fault_record):
    from labkit.widgets import FlagSwitch

    rec = fault_record("bad input", "FlagSwitch for a flag key with a dot")
    before = _snapshot(local_lab)
    switch = FlagSwitch(lab, "cart.Failure")
    assert switch.apply_button.disabled and "Did you mean" in switch.status.value
    assert switch.apply("on") is None and isinstance(switch.error, BadInput)
    rec.lost = int(_snapshot(local_lab) != before)
    assert rec.lost == 0


# (id, variables, a .env file's text or None, the variable the message must name)
SETTINGS_CASES = [
    ("DT_URL not a URL", {"DT_URL": "abc12345.live.dynatrace.com"}, None, "DT_URL"),
    ("DT_URL plain http to a remote host", {"DT_URL": "http://example.com"}, None, "DT_URL"),
    ("DT_URL with a query", {"DT_URL": "https://abc12345.live.dynatrace.com/?next=evil"}, None, "DT_URL"),
    ("DT_URL 10k characters", {"DT_URL": f"https://{BIG}.live.dynatrace.com"}, None, "DT_URL"),
    ("DT_URL javascript:", {"DT_URL": "javascript:alert(1)"}, None, "DT_URL"),
    ("DT_API_TOKEN not a token", {"DT_API_TOKEN": "hunter2hunter2hunter2"}, None, "DT_API_TOKEN"),
    ("DT_API_TOKEN with a shell suffix", {"DT_API_TOKEN": "dt0c01.ABC.DEF;rm -rf ~"}, None, "DT_API_TOKEN"),
    ("DT_API_TOKEN unicode", {"DT_API_TOKEN": "dt0c01.ÄBC.DËF"}, None, "DT_API_TOKEN"),
    ("DT_API_TOKEN 10k characters", {"DT_API_TOKEN": "dt0c01.A." + BIG + "!"}, None, "DT_API_TOKEN"),
    ("DT_PLATFORM_TOKEN with a newline", {"DT_PLATFORM_TOKEN": "dt0s16.ABC\n.DEF"}, None, "DT_PLATFORM_TOKEN"),
    ("LAB_NAMESPACE with a newline", {"LAB_NAMESPACE": "de\nfault"}, None, "LAB_NAMESPACE"),
    ("LAB_NAMESPACE 10k characters", {"LAB_NAMESPACE": BIG}, None, "LAB_NAMESPACE"),
    ("LAB_NAMESPACE unicode", {"LAB_NAMESPACE": "défault"}, None, "LAB_NAMESPACE"),
    ("FRONTEND_URL not http", {"FRONTEND_URL": "ftp://localhost:8080"}, None, "FRONTEND_URL"),
    (".env: DT_URL plain http", {}, "DT_URL=http://abc12345.live.dynatrace.com\n", "DT_URL"),
    (".env: quoted bad token", {}, "export DT_API_TOKEN='not a token'\n", "DT_API_TOKEN"),
    (".env: binary junk and a bad namespace", {}, "\x00\xff garbage\nLAB_NAMESPACE=UPPER\n", "LAB_NAMESPACE"),
]


@pytest.mark.parametrize("name,environ,dotenv,variable", SETTINGS_CASES, ids=[c[0] for c in SETTINGS_CASES])
def test_bad_input_settings(name, environ, dotenv, variable, tmp_path, fault_record):
    rec = fault_record("bad input", f"settings: {name}")
    path = tmp_path / ".env"
    if dotenv is not None:
        path.write_text(dotenv, encoding="utf-8", errors="surrogateescape")
    with pytest.raises(BadInput) as err:
        Settings.load(environ=environ, dotenv=path)
    text = str(err.value)
    secret_ish = [v for v in list(environ.values()) + [dotenv or ""] if "TOKEN" in name and v]
    rec.leaked = sum(text.count(v.strip().strip("'")) for v in secret_ish if len(v) > 6) + int(
        "DEF" in text and "TOKEN" in name)
    assert variable in text and len(text) < 500, text[:600]
    assert rec.leaked == 0, "a token value was echoed"


def test_bad_input_timings_env(fault_record):
    from labkit.sandbox import Timings

    rec = fault_record("bad input", "LABKIT_POD_START not a number / negative")
    for raw in ("fast", "-1", "nan", BIG):
        with pytest.raises(BadInput, match="LABKIT_POD_START must be a number"):
            Timings.from_env({"LABKIT_POD_START": raw})
    assert Timings.from_env({"LABKIT_POD_START": "0.5"}).pod_start == 0.5


def test_tokens_are_refused_for_plain_http_to_a_remote_host(canary, fault_record):
    """A token never goes to http:// anywhere but loopback: refused before any request."""
    import respx

    from labkit.settings import Secret

    rec = fault_record("secrets", "token for an http:// non-loopback host refused, never sent")
    with respx.mock(assert_all_called=False) as router:
        route = router.route().respond(200, json={})
        errors = []
        for env in ({"DT_URL": "http://example.com", "DT_API_TOKEN": canary.api},
                    {"DT_URL": "https://abc12345.live.dynatrace.com", "DT_API_TOKEN": canary.api,
                     "DT_PLATFORM_URL": "http://abc12345.apps.dynatrace.com"}):
            with pytest.raises(BadInput) as err:
                Settings.load(environ=env, dotenv=None)
            errors.append(exception_text(err.value))
        for url in ("http://example.com", "http://10.0.0.8:8080", "http://localhost.example.com",
                    "http://0.0.0.0:8080"):
            with pytest.raises(BadInput) as err:
                Dynatrace(Settings(dt_url=url, api_token=Secret(canary.api)))
            errors.append(exception_text(err.value))
    rec.leaked = canary.hits(*errors)
    assert not route.called and rec.leaked == 0
    assert all("https" in e for e in errors)
