"""The lab page's kubectl commands, run with the real /usr/bin/kubectl against the local lab's API."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kube_sandbox import KubeSandbox
from labkit.sandbox import SHARED_FLAGS, Timings

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None,
                                reason="kubectl is not installed; these tests run the real kubectl binary")

OFREP = "/api/v1/namespaces/default/services/flagd:8016/proxy/ofrep/v1/evaluate/flags/cartFailure"


@pytest.fixture
def kubectl(tmp_path):
    """Run kubectl against a fresh cluster; flagd pods stay Terminating long enough to be seen."""
    timings = Timings.fast()
    timings.pod_terminate = 1.0
    sandbox = KubeSandbox(tmp_path, timings).start()
    env = dict(os.environ, KUBECONFIG=str(sandbox.kubeconfig), HOME=str(tmp_path))

    def run(*args, timeout=30) -> subprocess.CompletedProcess:
        return subprocess.run(["kubectl", "--cache-dir", str(tmp_path / "cache"), *args], env=env,
                              capture_output=True, text=True, timeout=timeout)

    run.cluster = sandbox.cluster
    run.tmp = tmp_path
    yield run
    sandbox.stop()


def changed_flags_yaml(tmp: Path, variant: str) -> Path:
    """flags.yaml with cartFailure's defaultVariant changed, as the attendee edits it."""
    import yaml

    manifest = yaml.safe_load(SHARED_FLAGS.read_text())
    doc = json.loads(manifest["data"]["demo.flagd.json"])
    doc["flags"]["cartFailure"]["defaultVariant"] = variant
    manifest["data"]["demo.flagd.json"] = json.dumps(doc, indent=2) + "\n"
    path = tmp / "flags.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def served(kubectl) -> dict:
    body = kubectl.tmp / "body.json"
    body.write_text('{"context":{}}')
    r = kubectl("create", "--raw", OFREP, "-f", str(body))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_lab_page_with_real_kubectl(kubectl):
    flags = changed_flags_yaml(kubectl.tmp, "on")
    r = kubectl("apply", "-f", str(flags))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "configmap/flagd-config configured"
    assert "missing the kubectl.kubernetes.io/last-applied-configuration annotation" in r.stderr
    r = kubectl("apply", "-f", str(flags))
    assert r.stdout.strip() == "configmap/flagd-config unchanged"

    r = kubectl("get", "cm", "flagd-config", "-o", "yaml")
    assert r.returncode == 0 and "kubectl.kubernetes.io/last-applied-configuration" in r.stdout
    assert '"defaultVariant": "on"' in r.stdout
    assert served(kubectl)["value"] is False  # flagd still serves what it loaded at start

    r = kubectl("scale", "deploy", "flagd", "--replicas=0")
    assert r.stdout.strip() == "deployment.apps/flagd scaled"
    r = kubectl("get", "pods")
    assert r.stdout.split("\n")[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert "Terminating" in r.stdout
    r = kubectl("wait", "--for=delete", "pod", "-l", "opentelemetry.io/name=flagd", "--timeout=10s")
    assert r.returncode == 0, r.stderr
    r = kubectl("get", "pods")  # flagd is gone from the list; the demo's other pods stay
    assert r.returncode == 0 and "flagd-" not in r.stdout and "cart-" in r.stdout

    r = kubectl("scale", "deploy", "flagd", "--replicas=1")
    assert r.stdout.strip() == "deployment.apps/flagd scaled"
    r = kubectl("wait", "--for=condition=Ready", "pod", "-l", "opentelemetry.io/name=flagd", "--timeout=10s")
    assert r.returncode == 0 and "condition met" in r.stdout, r.stderr
    assert served(kubectl) == {"key": "cartFailure", "value": True, "variant": "on", "reason": "STATIC",
                               "metadata": {}}


def test_rollout_restart_and_status(kubectl):
    kubectl("apply", "-f", str(changed_flags_yaml(kubectl.tmp, "on")))
    r = kubectl("rollout", "restart", "deploy", "flagd")
    assert r.stdout.strip() == "deployment.apps/flagd restarted"
    r = kubectl("rollout", "status", "deploy", "flagd", "--timeout=20s")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith('deployment "flagd" successfully rolled out')
    assert kubectl.cluster.flagd_value("cartFailure")["value"] is True

    r = kubectl("get", "deploy", "flagd")
    header, row = r.stdout.strip().split("\n")
    assert header.split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert row.split()[:4] == ["flagd", "1/1", "1", "1"]


def test_get_things_and_errors(kubectl):
    r = kubectl("get", "cm", "nope")
    assert r.returncode == 1
    assert 'Error from server (NotFound): configmaps "nope" not found' in r.stderr
    r = kubectl("get", "cm")
    assert r.stdout.split("\n")[1].split()[:2] == ["flagd-config", "1"]
    r = kubectl("get", "svc", "flagd")
    assert "8013/TCP,8016/TCP" in r.stdout
    r = kubectl("get", "pods", "--show-labels")
    assert "opentelemetry.io/name=flagd" in r.stdout and "Running" in r.stdout
    kubectl.cluster.forbid("patch", "configmaps")
    r = kubectl("apply", "-f", str(changed_flags_yaml(kubectl.tmp, "on")))
    assert r.returncode == 1
    assert 'cannot patch resource "configmaps" in API group "" in the namespace "default"' in r.stderr


def test_get_pods_watch_follows_a_restart(kubectl):
    """`kubectl get pods -w` streams Table rows (no degraded `NAME AGE` header) as pods change."""
    import queue
    import threading

    proc = subprocess.Popen(["kubectl", "--cache-dir", str(kubectl.tmp / "cache"), "get", "pods", "-w",
                             "-l", "opentelemetry.io/name=flagd"],
                            env=dict(os.environ, KUBECONFIG=str(kubectl.tmp / "kubeconfig"), HOME=str(kubectl.tmp)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        assert lines.get(timeout=10).split()[:3] == ["NAME", "READY", "STATUS"]
        assert "Running" in lines.get(timeout=10)
        kubectl("rollout", "restart", "deploy", "flagd")
        rows = [lines.get(timeout=10) for _ in range(3)]
        assert any("Terminating" in row or "Init:0/1" in row for row in rows), rows
        assert not any(row.split()[0] == "NAME" for row in rows if row.strip())
    finally:
        proc.kill()
        proc.wait(timeout=5)
