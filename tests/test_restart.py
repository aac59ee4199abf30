"""Restarting flagd either way, proven on every pod: a rollout never leaves flagd without a Ready pod,
the scale way (the lab page's) does, and a change returns only when each Ready pod serves it.

Each test has its own sandbox Kubernetes API; pods are watched with the kubernetes client's own watch
(tests/kube_sandbox.py ReadyGauge), and what each pod serves is read from the sandbox itself.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kube_sandbox import KubeSandbox, ReadyGauge
from labkit.errors import BadInput, LabError, LabTimeout
from labkit.sandbox import Timings

ROOT = Path(__file__).resolve().parents[1]


class Sandbox(KubeSandbox):
    def __init__(self, tmp: Path, replicas: int = 1, **timings):
        t = Timings.fast()
        for key, value in timings.items():
            setattr(t, key, value)
        super().__init__(tmp, t)
        self.start()
        if replicas != 1:
            self.cluster.set_scale("flagd", "application/merge-patch+json", {"spec": {"replicas": replicas}})
        assert self.wait(lambda: len(self.ready_pods()) == replicas == len(self.pods()))

    def pods(self) -> list[dict]:
        return self.cluster.list("pods", ReadyGauge.SELECTOR, None)[0]

    def ready_pods(self) -> list[str]:
        """Pods the Service sends to: Ready and not Terminating."""
        return [p["metadata"]["name"] for p in self.pods() if self.cluster.pod_flags(p["metadata"]["name"])]

    def served_by_each(self, flag: str) -> dict[str, str]:
        """What each Ready flagd pod serves for `flag`, read from the sandbox (what it loaded at start)."""
        loaded = {p["metadata"]["name"]: self.cluster.pod_flags(p["metadata"]["name"]) for p in self.pods()}
        return {pod: flags.doc["flags"][flag]["defaultVariant"] for pod, flags in loaded.items() if flags}

    def defaults(self) -> dict[str, str]:
        doc = json.loads(self.cluster.get("configmaps", "flagd-config")["data"]["demo.flagd.json"])
        return {k: f["defaultVariant"] for k, f in doc["flags"].items()}

    @staticmethod
    def wait(condition, timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # test-side check only; labkit itself watches
            if condition():
                return True
            time.sleep(0.02)
        return False


@pytest.fixture
def two(tmp_path):
    """flagd at two replicas, with pods slow enough that a gap would show."""
    sb = Sandbox(tmp_path, replicas=2, pod_start=0.6, pod_terminate=1.0)
    yield sb
    sb.stop()


@pytest.mark.parametrize("replicas", [1, 2])
def test_rollout_change_never_leaves_flagd_without_a_ready_pod(tmp_path, replicas):
    sb = Sandbox(tmp_path, replicas=replicas, pod_start=0.6, pod_terminate=1.0)
    try:
        k8s = sb.labkit()
        with ReadyGauge(sb.kubeconfig) as gauge:
            k8s.set_default_variant("cartFailure", "on")
            result = k8s.restart_flagd(timeout=20, how="rollout")
            served = k8s.wait_served("cartFailure", "on", timeout=10)
            at_return = sb.served_by_each("cartFailure")
        assert gauge.fewest >= 1 and gauge.dark == 0, f"flagd had no Ready pod for {gauge.dark:.2f}s"
        assert served.variant == "on" and result.how == "rollout" and result.replicas == replicas
        assert len(at_return) == replicas and set(at_return.values()) == {"on"}, at_return
        # returned while the old pods were still Terminating: no grace period waited for
        assert result.seconds < sb.timings.pod_start + sb.timings.pod_terminate
        assert sb.replicas() == replicas
    finally:
        sb.stop()


def test_scale_change_is_the_lab_pages_way_flagd_down_in_between(two):
    k8s = two.labkit()
    with ReadyGauge(two.kubeconfig) as gauge:
        k8s.set_default_variant("cartFailure", "on")
        result = k8s.restart_flagd(timeout=20, how="scale")
        k8s.wait_served("cartFailure", "on", timeout=10)
        at_return = two.served_by_each("cartFailure")
    lifecycle = two.timings.pod_start + two.timings.pod_terminate
    assert gauge.fewest == 0 and gauge.dark >= 0.8 * lifecycle, gauge.dark
    assert len(at_return) == 2 and set(at_return.values()) == {"on"} and two.replicas() == 2
    assert result.how == "scale" and result.seconds >= lifecycle


def test_wait_served_asks_every_pod_not_the_service(two):
    """One pod restarted by hand serves the new file, the other still the old one: the service may
    answer from either, so the change is not proven until both do."""
    from kubernetes import client, config

    k8s = two.labkit()
    k8s.set_default_variant("cartFailure", "on")
    stale, fresh = sorted(two.ready_pods())
    client.CoreV1Api(config.new_client_from_config(str(two.kubeconfig))).delete_namespaced_pod(fresh, "default")
    assert two.wait(lambda: sorted(two.served_by_each("cartFailure").values()) == ["off", "on"])
    with pytest.raises(LabTimeout) as err:
        k8s.wait_served("cartFailure", "on", timeout=0.5)
    assert f"off on {stale}" in str(err.value) and "not 'on' on every pod" in str(err.value)
    assert k8s.served_by_pod(stale, "cartFailure").variant == "off"
    k8s.restart_flagd(timeout=20, how="rollout")
    assert k8s.wait_served("cartFailure", "on", timeout=5).variant == "on"


def test_a_later_change_of_the_same_flag_wins_visibly(two):
    k8s = two.labkit()
    k8s.set_default_variant("paymentFailure", "50%")
    two.labkit().set_default_variant("paymentFailure", "100%")  # another terminal, just after
    with pytest.raises(LabError, match="'100%' in ConfigMap flagd-config now.*later change wins"):
        k8s.wait_served("paymentFailure", "50%", timeout=5)


def test_per_pod_answers(two):
    k8s = two.labkit()
    pod = two.ready_pods()[0]
    assert k8s.served_by_pod(pod, "cartFailure").variant == "off"
    assert k8s.served_by_pod("flagd-gone-12345", "cartFailure") is None  # no such pod: no answer
    with pytest.raises(BadInput, match="Did you mean 'cartFailure'"):
        k8s.served_by_pod(pod, "cartFailur")
    seen = k8s.served_by_ready_pods("cartFailure")
    assert set(seen) == set(two.ready_pods()) and {s.variant for s in seen.values()} == {"off"}


def test_without_rbac_for_pods_proxy_the_service_answers(two):
    two.cluster.forbid("create", "pods/proxy")
    seen = two.labkit().served_by_ready_pods("cartFailure")
    assert list(seen) == ["service/flagd"] and seen["service/flagd"].variant == "off"


def test_rollout_of_a_flagd_at_zero_starts_it_the_scale_way(two):
    two.cluster.set_scale("flagd", "application/merge-patch+json", {"spec": {"replicas": 0}})
    assert two.wait(lambda: not two.pods())
    steps = []
    result = two.labkit().restart_flagd(timeout=20, how="rollout", progress=lambda m, f=None: steps.append(m))
    assert result.how == "scale" and result.replicas == 1 and two.replicas() == 1
    assert any("scaled to 0: scaling it up instead" in m for m in steps)


def test_rollout_says_when_the_strategy_takes_every_pod_down(two):
    two.cluster.patch("deployments", "flagd", "application/merge-patch+json",
                      {"spec": {"strategy": {"type": "Recreate", "rollingUpdate": None}}})
    steps = []
    two.labkit().restart_flagd(timeout=20, how="rollout", progress=lambda m, f=None: steps.append(m))
    assert any("may leave flagd without a Ready pod: its strategy is Recreate" in m for m in steps)


def test_change_flag_refuses_an_unknown_restart_before_anything(lab_env):
    import labkit

    lab = labkit.connect()
    try:
        before = lab.cluster.flag_file().text
        with pytest.raises(BadInput, match="'rollout'.*'scale'"):
            lab.change_flag("on", restart="teleport")
        assert lab.cluster.flag_file().text == before
    finally:
        lab.close()


def test_cli_set_keeps_its_steps_on_the_labs_timeline(lab_env, lab_on, tmp_path):
    """A change made in a terminal shows on the notebooks' timeline (the local lab's run)."""
    from labkit.settings import TIMELINE_FILE
    from labkit.timeline import Timeline

    timeline = Timeline(Path(lab_env["LABKIT_STATE_DIR"]) / TIMELINE_FILE)
    timeline.clear()
    env = dict(lab_env, PYTHONPATH=str(ROOT))
    try:
        proc = subprocess.run([sys.executable, "-m", "labkit", "set", "cartFailure", lab_on], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert f"its pod serves cartFailure = {lab_on}" in proc.stdout
        kinds = [(s.kind, s.flag, s.new) for s in timeline.steps]
        assert kinds[:2] == [("event sent", "cartFailure", lab_on), ("flag applied", "cartFailure", lab_on)]
        assert kinds[2][0] == "flagd restarted" and kinds[3] == ("flagd serving the new value", "cartFailure", lab_on)
        assert "rollout" in timeline.steps[2].note
    finally:
        subprocess.run([sys.executable, "-m", "labkit", "set", "cartFailure", "off", "--no-event"], cwd=tmp_path,
                       env=env, capture_output=True, timeout=60)
        timeline.clear()


def test_flag_switch_offers_the_restart_way(lab_env, lab_on):
    pytest.importorskip("ipywidgets")
    from labkit import widgets
    from labkit.lab import Lab
    from labkit.settings import Settings

    lab = Lab(Settings.load(environ=dict(lab_env), dotenv=None))
    lab.timeline.clear()
    try:
        switch = widgets.FlagSwitch(lab, "cartFailure", send_event=False)
        assert switch.restart.value == "rollout" and list(switch.restart.options) == ["rollout", "scale"]
        switch.restart.value = "scale"  # the lab page's way, chosen beside Apply
        served = switch.apply(lab_on)
        assert served is not None and served.variant == lab_on, switch.error
        assert lab.timeline.last("flagd restarted").note.startswith("scale")
        assert widgets.FlagSwitch(lab, "cartFailure", restart="scale").restart.value == "scale"
    finally:
        if lab.served("cartFailure").variant != "off":
            lab.change_flag("off", send_event=False)
        lab.timeline.clear()
        lab.dynatrace.close()
