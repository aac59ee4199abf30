"""labkit.cluster against the sandbox Kubernetes API, with the real kubernetes client over loopback.

Each test gets its own sandbox API server (kube part only), so flag changes, RBAC knobs and slow pod
timings never leak into other tests. One test also checks the full local lab through its lab.env.
"""
from __future__ import annotations

import json
import threading
import time

import pytest

from labkit.cluster import Cluster, RestartResult
from labkit.errors import BadInput, Forbidden, LabTimeout, NotFound, Unreachable
from kube_sandbox import KubeSandbox
from labkit.sandbox import kubeconfig_text
from labkit.settings import Settings

CM_PATH = "/api/v1/namespaces/default/configmaps/flagd-config"
PODS_PATH = "/api/v1/namespaces/default/pods"



@pytest.fixture
def sandbox(kube_sandbox):
    sb = kube_sandbox()
    sb.wait_ready(1)
    return sb


@pytest.fixture
def make_sandbox(kube_sandbox):
    def make(**timings):
        from labkit.sandbox import Timings

        t = Timings.fast()
        for k, v in timings.items():
            setattr(t, k, v)
        return kube_sandbox(timings=t)

    return make


# ---- the flag change ---------------------------------------------------------------------------------
def test_set_variant_changes_the_configmap_in_one_place_and_flagd_serves_it_after_restart(sandbox):
    lab = sandbox.labkit()
    before = sandbox.flags_json()
    assert lab.served_value("cartFailure").variant == "off"

    change = lab.set_default_variant("cartFailure", "on")

    after = sandbox.flags_json()
    assert change.changed and change.after.to_json() == after
    idx = before.index('"cartFailure"')
    expected = before[:idx] + before[idx:].replace('"defaultVariant": "off"', '"defaultVariant": "on"', 1)
    assert after == expected, "only cartFailure's defaultVariant may change"
    # flagd loaded its flags when its pod started: it still serves the old value
    served = lab.served_value("cartFailure")
    assert (served.variant, served.value) == ("off", False)

    steps = []
    result = lab.restart_flagd(timeout=20, progress=lambda m, f: steps.append((m, f)))
    assert isinstance(result, RestartResult) and result.how == "scale" and result.replicas == 1
    assert len(result.pods) == 1 and sandbox.replicas() == 1
    assert any("no flagd pod left" in m for m, _ in steps) and steps[-1][1] == 1.0
    served = lab.wait_served("cartFailure", "on", timeout=5)
    assert (served.key, served.variant, served.value) == ("cartFailure", "on", True)
    assert lab.flag_file().flag("cartFailure").default_variant == "on"


def test_dry_run_and_no_op_change_write_nothing(sandbox):
    lab = sandbox.labkit()
    rv = sandbox.configmap().metadata.resource_version
    change = lab.set_default_variant("cartFailure", "on", dry_run=True)
    assert change.changed and '+      "defaultVariant": "on"' in change.diff
    same = lab.set_default_variant("cartFailure", "off")
    assert not same.changed
    assert sandbox.configmap().metadata.resource_version == rv


def test_concurrent_edit_to_another_flag_survives(sandbox):
    """Someone edits paymentFailure between our read and our write: 409, re-read, both changes kept."""
    from kubernetes import client

    lab = sandbox.labkit()
    core = client.CoreV1Api(sandbox.api())
    # hold our PUT for a moment so the other writer lands first (real interleaving over HTTP)
    fault = sandbox.server.faults.add(latency=0.6, count=1, path_prefix=CM_PATH, method="PUT")
    seen = sandbox.server.faults.seen

    def other_writer():
        deadline = time.monotonic() + 5
        while sandbox.server.faults.seen == seen and time.monotonic() < deadline:
            time.sleep(0.01)
        cm = core.read_namespaced_config_map("flagd-config", "default")
        data = cm.data["demo.flagd.json"].replace(
            '"defaultVariant": "off"\n    },\n    "paymentUnreachable"',
            '"defaultVariant": "50%"\n    },\n    "paymentUnreachable"')
        assert data != cm.data["demo.flagd.json"]
        core.patch_namespaced_config_map("flagd-config", "default", {"data": {"demo.flagd.json": data}})

    t = threading.Thread(target=other_writer)
    t.start()
    change = lab.set_default_variant("cartFailure", "on")
    t.join()
    assert fault.count == 0 and lab.conflicts >= 1
    flags = json.loads(sandbox.flags_json())["flags"]
    assert flags["cartFailure"]["defaultVariant"] == "on"
    assert flags["paymentFailure"]["defaultVariant"] == "50%", "the other edit was overwritten"
    assert change.new_variant == "on"


def test_forbidden_update_names_verb_and_resource_and_changes_nothing(sandbox):
    before = sandbox.flags_json()
    sandbox.cluster.forbid("update", "configmaps")
    with pytest.raises(Forbidden) as err:
        sandbox.labkit().set_default_variant("cartFailure", "on")
    msg = str(err.value)
    assert "update configmaps in namespace default" in msg and "local-lab" not in msg
    sandbox.cluster.allow_all()
    assert sandbox.flags_json() == before


def test_forbidden_scale_is_reported(sandbox):
    sandbox.cluster.forbid("patch", "deployments/scale")
    with pytest.raises(Forbidden, match="patch deployments/scale in namespace default"):
        sandbox.labkit().restart_flagd(timeout=5)
    sandbox.cluster.allow_all()
    assert sandbox.replicas() == 1


def test_malformed_live_json_is_refused_and_nothing_written(sandbox):
    from kubernetes import client

    core = client.CoreV1Api(sandbox.api())
    broken = sandbox.flags_json().replace('"on": true,', '"on": true', 1)
    core.patch_namespaced_config_map("flagd-config", "default", {"data": {"demo.flagd.json": broken}})
    rv = sandbox.configmap().metadata.resource_version
    with pytest.raises(BadInput) as err:
        sandbox.labkit().set_default_variant("cartFailure", "on")
    assert "line 9, column 9" in str(err.value) and "refusing to write" in str(err.value)
    cm = sandbox.configmap()
    assert cm.metadata.resource_version == rv and cm.data["demo.flagd.json"] == broken


def test_bad_flag_and_variant(sandbox):
    lab = sandbox.labkit()
    with pytest.raises(BadInput, match="Did you mean 'cartFailure'"):
        lab.set_default_variant("cartFailur", "on")
    with pytest.raises(BadInput, match=r"Allowed variants: on \(true\), off \(false\)"):
        lab.set_default_variant("cartFailure", "maybe")
    with pytest.raises(BadInput, match="Did you mean 'cartFailure'"):
        lab.served_value("cartFailur")


def test_missing_configmap_key_and_deployment(sandbox):
    from kubernetes import client

    core = client.CoreV1Api(sandbox.api())
    core.patch_namespaced_config_map("flagd-config", "default", {"data": {"demo.flagd.json": None, "x": "1"}})
    with pytest.raises(NotFound, match="no data key 'demo.flagd.json'"):
        sandbox.labkit().flag_file()
    core.delete_namespaced_config_map("flagd-config", "default")
    with pytest.raises(NotFound, match="kubectl apply -f flags.yaml"):
        sandbox.labkit().flag_file()
    elsewhere = sandbox.labkit(namespace="elsewhere")
    with pytest.raises(NotFound, match="Deployment flagd not found in namespace elsewhere"):
        elsewhere.restart_flagd(timeout=5)


def test_unreachable_cluster_says_what_to_do(tmp_path, closed_port):
    kc = tmp_path / "kubeconfig"
    kc.write_text(kubeconfig_text(f"http://127.0.0.1:{closed_port}"))
    lab = Cluster(Settings(kubeconfig=str(kc)))
    t = time.monotonic()
    with pytest.raises(Unreachable) as err:
        lab.flag_file()
    assert "python -m labkit sandbox" in str(err.value) and "local-lab" not in str(err.value)
    assert time.monotonic() - t < 10


# ---- restarts -------------------------------------------------------------------------------------
def test_served_value_without_ready_flagd_is_unreachable(sandbox):
    sandbox.scale(0)
    deadline = time.monotonic() + 5
    while sandbox.labkit().flagd_pods() and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(Unreachable, match="flagd is not serving"):
        sandbox.labkit().served_value("cartFailure")
    # restart brings it back to at least 1
    result = sandbox.labkit().restart_flagd(timeout=10)
    assert result.replicas == 1 and sandbox.replicas() == 1


def test_restart_keeps_the_previous_replica_count(sandbox):
    sandbox.scale(2)
    sandbox.wait_ready(2)
    result = sandbox.labkit().restart_flagd(timeout=20)
    assert result.replicas == 2 and len(result.pods) == 2 and sandbox.replicas() == 2
    pods = sandbox.labkit().flagd_pods()
    assert {p["name"] for p in pods} == set(result.pods) and all(p["ready"] for p in pods)


def test_restart_timeout_while_pods_terminate_scales_back(make_sandbox):
    sb = make_sandbox(pod_terminate=30.0)
    sb.wait_ready(1)
    t = time.monotonic()
    with pytest.raises(LabTimeout, match="still terminating"):
        sb.labkit().restart_flagd(timeout=1.5)
    assert time.monotonic() - t < 5
    assert sb.replicas() == 1, "flagd must not be left at 0 replicas"


def test_restart_timeout_while_pods_start_ends_at_previous_count(make_sandbox):
    sb = make_sandbox()
    sb.wait_ready(1)
    sb.timings.pod_start = 30.0  # the next pod takes long to be Ready
    with pytest.raises(LabTimeout, match="not Ready"):
        sb.labkit().restart_flagd(timeout=1.5)
    assert sb.replicas() == 1


def test_interrupt_after_scale_down_scales_back(sandbox):
    sandbox.scale(2)
    sandbox.wait_ready(2)

    def progress(message, fraction):
        if message == "no flagd pod left":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sandbox.labkit().restart_flagd(timeout=20, progress=progress)
    assert sandbox.replicas() == 2
    sandbox.wait_ready(2)


def test_rollout_restart_replaces_the_pods(sandbox):
    lab = sandbox.labkit()
    lab.set_default_variant("cartFailure", "on")
    old = {p["name"] for p in lab.flagd_pods()}
    result = lab.restart_flagd(timeout=20, how="rollout")
    assert result.how == "rollout" and result.replicas == 1 and len(result.pods) == 1
    assert set(result.pods).isdisjoint(old)
    # done as `kubectl rollout status` is: the old pod may still be Terminating (out of the Service)
    pods = lab.flagd_pods()
    assert {p["name"] for p in pods if not p["terminating"]} == set(result.pods)
    assert all(p["terminating"] for p in pods if p["name"] in old)
    assert lab.served_value("cartFailure").variant == "on"
    again = lab.restart_flagd(timeout=20, how="rollout")  # at once: must roll again, not no-op
    assert len(again.pods) == 1 and set(again.pods).isdisjoint(result.pods)


def test_watch_from_a_compacted_resource_version_relists(tmp_path):
    """The history is compacted between labkit's pod list and its watch (410 Expired): labkit
    relists and the restart carries on to a Ready flagd."""
    from kubernetes import client
    from labkit.sandbox import Timings

    timings = Timings.fast()
    timings.pod_start = 1.5  # the new pod is still starting when labkit lists and watches
    sb = KubeSandbox(tmp_path, timings, history=3).start()
    try:
        sb.wait_ready(1)
        core = client.CoreV1Api(sb.api())
        faults, held = sb.server.faults, {}

        def other_writes():  # while labkit's watch is held: 5 ConfigMap writes, 3 events of history
            deadline = time.monotonic() + 5
            while faults.seen == held["seen"] and time.monotonic() < deadline:
                time.sleep(0.01)
            for i in range(5):
                core.patch_namespaced_config_map("flagd-config", "default",
                                                 {"metadata": {"annotations": {"touch": str(i)}}})
            held["written"] = faults.seen - held["seen"]

        def progress(message, fraction):
            # the new pod is listed; labkit's next pod request is its watch from that list: hold it
            if message.startswith("flagd pods ready 0/1") and not held:
                held["seen"] = faults.seen
                faults.add(latency=1.0, count=1, path_prefix=PODS_PATH, method="GET")
                faults.add(path_prefix=PODS_PATH, method="GET")  # counts the pod requests after it
                held["writer"] = threading.Thread(target=other_writes)
                held["writer"].start()

        result = sb.labkit().restart_flagd(timeout=20, progress=progress)
        held["writer"].join()
        assert held["written"] == 1, "the ConfigMap writes did not land while the watch was held"
        assert faults.seen - held["seen"] >= 3, "no relist after the 410: held watch, list, watch"
        assert result.replicas == 1 and len(result.pods) == 1 and sb.replicas() == 1
        assert [(p["name"], p["ready"]) for p in sb.labkit().flagd_pods()] == [(result.pods[0], True)]
    finally:
        sb.stop()


def test_wait_served_is_bounded(sandbox):
    lab = sandbox.labkit()
    lab.set_default_variant("cartFailure", "on")  # but no restart
    t = time.monotonic()
    with pytest.raises(LabTimeout, match="serves off"):
        lab.wait_served("cartFailure", "on", timeout=0.5)
    assert time.monotonic() - t < 2


def test_flagd_pods_for_display(sandbox):
    pods = sandbox.labkit().flagd_pods()
    assert len(pods) == 1
    assert set(pods[0]) == {"name", "phase", "ready", "age", "terminating"}
    assert pods[0]["name"].startswith("flagd-") and pods[0]["phase"] == "Running" and pods[0]["ready"]


def test_full_local_lab_through_its_environment(lab_env, kube_api):
    """The session local lab, found the way a user finds it: KUBECONFIG from lab.env (read only)."""
    lab = Cluster(Settings.load(dotenv=None))
    ff = lab.flag_file()
    assert "cartFailure" in ff.keys
    served = lab.served_value("cartFailure")
    assert served.variant == ff.flag("cartFailure").default_variant
    assert lab.served_values()["cartFailure"] == served
    # an ApiClient handed in (as a notebook might) works the same
    assert Cluster(Settings.load(dotenv=None), api_client=kube_api).flag_file().text == ff.text
