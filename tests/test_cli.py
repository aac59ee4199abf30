"""python -m labkit as a user runs it: subprocesses against a sandbox Kubernetes API on loopback."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kube_sandbox import KubeSandbox
from labkit.sandbox import kubeconfig_text

ROOT = Path(__file__).resolve().parents[1]



def base_env(tmp: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DT_", "KUBECONFIG", "LABKIT_", "LAB_", "FRONTEND_URL"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


class CliSandbox(KubeSandbox):
    """A sandbox Kubernetes API with flagd serving, and the CLI run against it as a user would."""

    def __init__(self, tmp: Path):
        super().__init__(tmp)
        self.start()
        self.wait_serving()

    def run(self, *args, timeout: float = 60, **env):
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "labkit", *args], cwd=self.tmp, capture_output=True,
                              text=True, timeout=timeout,
                              env=base_env(self.tmp, KUBECONFIG=str(self.kubeconfig), **env))
        proc.seconds = time.monotonic() - started
        return proc

    def popen(self, *args):
        return subprocess.Popen([sys.executable, "-m", "labkit", *args], cwd=self.tmp, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=base_env(self.tmp, KUBECONFIG=str(self.kubeconfig)))



@pytest.fixture
def kube(tmp_path):
    sb = CliSandbox(tmp_path)
    yield sb
    sb.stop()


def no_traceback(proc):
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout


# ---- flags ------------------------------------------------------------------------------------------
def test_flags_table_shows_variants_default_and_served_value(kube):
    # its speed (< 1.5 s) is a row of benchmarks/run.py: a shared machine makes a timed test flaky
    proc = kube.run("flags")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["FLAG", "VARIANTS", "DEFAULT", "SERVED"]
    cart = next(l for l in lines if l.startswith("cartFailure "))
    assert cart.split() == ["cartFailure", "on=true", "off=false", "off", "off", "(false)"]
    payment = next(l for l in lines if l.startswith("paymentFailure "))
    assert "10%=0.1" in payment and "off=0" in payment


def test_flags_one_flag_and_unknown_flag(kube):
    proc = kube.run("flags", "cartFailure", "-v")
    assert proc.returncode == 0 and "Fail cart service" in proc.stdout and len(proc.stdout.splitlines()) == 3
    assert proc.stdout.splitlines()[-1].startswith("the cart (demo ")  # what the cart reads, asked as it asks
    proc = kube.run("flags", "cartFailur")
    assert proc.returncode == 2 and "Did you mean 'cartFailure'?" in proc.stderr
    no_traceback(proc)


def test_flags_when_flagd_is_down_shows_dash(kube):
    kube.cluster.set_scale("flagd", "application/merge-patch+json", {"spec": {"replicas": 0}})
    deadline = time.monotonic() + 5
    while kube.cluster.flagd_value("cartFailure") is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc = kube.run("flags")
    assert proc.returncode == 0
    cart = next(l for l in proc.stdout.splitlines() if l.startswith("cartFailure "))
    assert cart.split()[-1] == "-"
    assert "flagd is not serving" in proc.stderr


# ---- set --------------------------------------------------------------------------------------------
def test_set_changes_restarts_and_verifies(kube):
    kube.set_cart_image("2.2.0")  # the lab page's flags.yaml is 2.2.0's shape: its cart reads on = true
    before = kube.flags_json()
    proc = kube.run("set", "cartFailure", "on", "--no-event", "--restart", "scale")
    assert proc.returncode == 0, proc.stderr
    assert "serves cartFailure = on (true)" in proc.stdout
    assert "no flagd pod left" in proc.stderr  # progress lines on stderr
    after = kube.flags_json()
    idx = before.index('"cartFailure"')
    assert after == before[:idx] + before[idx:].replace('"defaultVariant": "off"', '"defaultVariant": "on"', 1)
    assert kube.cluster.flagd_value("cartFailure")["variant"] == "on"
    assert kube.replicas() == 1
    assert "no change event sent" not in proc.stderr  # --no-event
    assert proc.stdout.splitlines()[-1].endswith("the cart reads cartFailure = true (on), so every "
                                                 "EmptyCart call fails: the verdict should show about "
                                                 "100.0 % of EmptyCart calls failed since the change (fewer "
                                                 "of all cart requests, as only empties fail)")

    proc = kube.run("set", "cartFailure", "off", "--how", "rollout")
    assert proc.returncode == 0, proc.stderr
    assert "rollout" in proc.stdout and "serves cartFailure = off (false)" in proc.stdout
    assert "no change event sent" in proc.stderr  # the hook ran, and said why it sent nothing


def test_set_bad_flag_exits_2_with_suggestion(kube):
    proc = kube.run("set", "cartFailur", "on")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Did you mean 'cartFailure'?" in proc.stderr
    no_traceback(proc)


def test_set_bad_variant_exits_2_listing_variants(kube):
    rv = kube.configmap().metadata.resource_version
    proc = kube.run("set", "cartFailure", "maybe")
    assert proc.returncode == 2
    assert "Allowed variants: on (true), off (false)" in proc.stderr
    no_traceback(proc)
    assert kube.configmap().metadata.resource_version == rv


def test_set_dry_run_prints_diff_and_changes_nothing(kube):
    before = kube.configmap().metadata.resource_version
    proc = kube.run("set", "cartFailure", "on", "--dry-run")
    assert proc.returncode == 0
    assert '-      "defaultVariant": "off"' in proc.stdout and '+      "defaultVariant": "on"' in proc.stdout
    assert "nothing changed" in proc.stdout
    assert kube.configmap().metadata.resource_version == before  # not even rewritten
    assert kube.cluster.flagd_value("cartFailure")["variant"] == "off"


def test_set_no_restart_leaves_flagd_on_the_old_value(kube):
    proc = kube.run("set", "paymentFailure", "50%", "--no-restart", "--no-event")
    assert proc.returncode == 0
    assert json.loads(kube.flags_json())["flags"]["paymentFailure"]["defaultVariant"] == "50%"
    assert kube.cluster.flagd_value("paymentFailure")["variant"] == "off"
    proc = kube.run("flags", "paymentFailure")
    assert "off (0) *" in proc.stdout and "flagd still serves an older default" in proc.stdout


def test_set_forbidden_exits_1(kube):
    kube.cluster.forbid("update", "configmaps")
    proc = kube.run("set", "cartFailure", "on", "--no-event")
    assert proc.returncode == 1
    assert "error: Not allowed to update configmaps in namespace default" in proc.stderr
    no_traceback(proc)
    proc = kube.run("set", "cartFailure", "on", "--no-event", "-v")
    assert "Traceback" in proc.stderr  # -v shows where
    assert "local-lab" not in proc.stderr  # the kubeconfig token never appears


def test_ctrl_c_during_restart_exits_130_and_flagd_is_scaled_back(kube):
    kube.timings.pod_terminate = 5.0  # pods linger Terminating: time to interrupt
    proc = kube.popen("set", "cartFailure", "on", "--no-event", "--restart", "scale")
    deadline = time.monotonic() + 15
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if "waiting for" in line:
            break
    assert "waiting for" in seen, seen
    proc.send_signal(signal.SIGINT)
    rest_out, rest_err = proc.communicate(timeout=15)
    assert proc.returncode == 130, seen + rest_err
    assert "interrupted" in rest_err and "Traceback" not in rest_err
    assert kube.replicas() == 1


def test_usage_errors_exit_2(kube):
    assert kube.run("set", "cartFailure").returncode == 2
    assert kube.run("nonsense").returncode == 2
    assert kube.run("set", "cartFailure", "on", "--how", "teleport").returncode == 2


def test_unreachable_cluster_exits_1_with_a_hint(tmp_path, closed_port):
    kc = tmp_path / "kubeconfig"
    kc.write_text(kubeconfig_text(f"http://127.0.0.1:{closed_port}"))
    proc = subprocess.run([sys.executable, "-m", "labkit", "--kubeconfig", str(kc), "flags"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=30, env=base_env(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: Cannot reach the Kubernetes API") and "python -m labkit sandbox" in proc.stderr
    no_traceback(proc)


# ---- sandbox ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("release, off, bare", [(None, "off (0)", False), ("2.2.0", "off (false)", True)])
def test_sandbox_command_serves_until_ctrl_c(tmp_path, release, off, bare):
    """`labkit sandbox` runs demo 3.0.0 (cartFailure off = 0) unless --release picks 2.2.0 (off = false);
    its tenant starts set up unless --bare-tenant."""
    state = tmp_path / "lab"
    env = base_env(tmp_path, LABKIT_POD_START="0.3", LABKIT_POD_TERMINATE="0.3", LABKIT_SEED_HOURS="0.2")
    chosen = (["--release", release] if release else []) + (["--bare-tenant"] if bare else [])
    proc = subprocess.Popen([sys.executable, "-m", "labkit", "sandbox", "--state-dir", str(state), *chosen],
                            cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        started = time.monotonic()
        first = proc.stdout.readline()
        ready_after = time.monotonic() - started
        assert "ready" in first and str(state / "lab.env") in first, first + proc.stderr.read()
        assert ready_after < 10
        banner = [proc.stdout.readline()]  # what it serves, up to "Ctrl-C stops the local lab."
        while banner[-1] and "Ctrl-C" not in banner[-1]:
            banner.append(proc.stdout.readline())
        assert any(f"demo release    {release or '3.0.0'}" in line for line in banner), banner
        setup = next(line for line in banner if "tenant setup" in line)
        assert ("none: no runbook, pipeline or route" in setup) is bare, setup
        lab_env = {}
        for line in (state / "lab.env").read_text().splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            lab_env[key] = value
        assert (state / "kubeconfig").is_file() and "KUBECONFIG" in lab_env
        deadline = time.monotonic() + 10
        while True:  # flagd's first pod starts like a real one
            flags = subprocess.run([sys.executable, "-m", "labkit", "flags", "cartFailure"], cwd=tmp_path,
                                   capture_output=True, text=True, timeout=30, env=dict(env, **lab_env))
            assert flags.returncode == 0, flags.stderr
            if off in flags.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert off in flags.stdout
        for token in (lab_env["DT_API_TOKEN"], lab_env["DT_PLATFORM_TOKEN"]):
            assert token not in first and token not in flags.stdout + flags.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopped" in err
    assert not (state / "lab.env").exists()


def test_problems_command_shows_the_problem_on_the_carts_pod(lab_env, local_lab, tmp_path):
    from labkit.tenant import PROBLEM_TITLE

    local_lab.collector.log_cart_redis_error("1" * 32, "2" * 16, "pod")
    (pod,) = local_lab.cluster.list("pods", "opentelemetry.io/name=cart", None)[0]
    proc = subprocess.run([sys.executable, "-m", "labkit", "problems", "cart"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env={**base_env(tmp_path), **lab_env})
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if PROBLEM_TITLE in x)
    assert pod["metadata"]["name"] in line


def test_tenant_commands_on_the_local_lab_say_so(lab_env, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "labkit", "failures", "cart", "--since", "30m"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**base_env(tmp_path), **lab_env})
    assert proc.returncode == 0, proc.stderr
    assert "requests failed in the last 30m" in proc.stdout
    # every rate printed outside the table names its window by its times
    assert re.search(r"^cart: \d+\.\d % \(\d+ of \d+ cart requests failed in the last 30m, "
                     r"\d\d:\d\d:\d\d–\d\d:\d\d:\d\d UTC\)$", proc.stdout, re.M), proc.stdout
    for line in (x for x in proc.stdout.splitlines() if " % (" in x):
        assert re.search(r"\d\d:\d\d:\d\d", line), line
    assert "local lab: sandbox data, not a real tenant" in proc.stderr
