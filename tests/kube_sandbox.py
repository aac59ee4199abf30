"""The local lab's Kubernetes API by itself (flagd, the ConfigMap) with a kubeconfig for it: the one
Kubernetes harness (conftest's `kube_sandbox` fixture makes them).

Tests that scale, forbid or break the cluster use their own, so the session's local lab stays intact.
Reads go through the real kubernetes client (not labkit.cluster), so they check labkit independently.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

from labkit.sandbox import SHARED_FLAGS, Timings, kube, kubeconfig_text
from labkit.sandbox.http import LabServer
from labkit.settings import Settings

FLAGS_YAML = SHARED_FLAGS.read_text()  # the lab page's flags.yaml (cartFailure on: true / off: false)


def release_flags_yaml(version: str | None = None, cart_failure: str | None = None) -> str:
    """A demo release's own ConfigMap, as its chart installs it; `cart_failure` its default variant."""
    from labkit import releases

    text = releases.get(version).configmap_yaml()
    return text if cart_failure is None else with_cart_failure(text, cart_failure)


def with_cart_failure(flags_yaml: str, variant: str) -> str:
    """The ConfigMap manifest with cartFailure's defaultVariant set (as an attendee's edit does)."""
    import json

    import yaml

    manifest = yaml.safe_load(flags_yaml)
    flags = json.loads(manifest["data"]["demo.flagd.json"])
    flags["flags"]["cartFailure"]["defaultVariant"] = variant
    manifest["data"]["demo.flagd.json"] = json.dumps(flags, indent=2)
    return json.dumps(manifest)


class KubeSandbox:
    def __init__(self, tmp: Path, timings: Timings | None = None, flags_yaml: str = FLAGS_YAML,
                 **cluster_kw):
        self.tmp = tmp
        self.timings = timings or Timings.fast()
        self.cluster = kube.LocalCluster(self.timings, flags_yaml, **cluster_kw)
        self.server = LabServer(kube.app(self.cluster))
        self.kubeconfig = tmp / "kubeconfig"

    def start(self) -> "KubeSandbox":
        self.server.start()
        self.cluster.start()
        self.kubeconfig.write_text(kubeconfig_text(self.server.url))
        return self

    def stop(self) -> None:
        self.cluster.stop()
        self.server.stop()

    def labkit(self, **settings):
        """labkit's Cluster pointed at this sandbox."""
        from labkit.cluster import Cluster

        return Cluster(Settings(kubeconfig=str(self.kubeconfig), **settings))

    # ---- reads through the real kubernetes client
    def api(self):
        from kubernetes import config

        return config.new_client_from_config(str(self.kubeconfig))

    def configmap(self):
        """flagd's ConfigMap (a V1ConfigMap: .data, .metadata.resource_version)."""
        from kubernetes import client

        return client.CoreV1Api(self.api()).read_namespaced_config_map("flagd-config", "default")

    def flags_json(self) -> str:
        return self.configmap().data["demo.flagd.json"]

    def replicas(self) -> int:
        from kubernetes import client

        return client.AppsV1Api(self.api()).read_namespaced_deployment_scale("flagd", "default").spec.replicas

    def ready(self) -> int:
        """flagd pods the Service sends to: Ready and not Terminating."""
        from kubernetes import client

        pods = client.CoreV1Api(self.api()).list_namespaced_pod("default", label_selector=ReadyGauge.SELECTOR)
        return sum(1 for p in pods.items if _ready(p))

    def scale(self, n: int) -> None:
        from kubernetes import client

        client.AppsV1Api(self.api()).patch_namespaced_deployment_scale("flagd", "default", {"spec": {"replicas": n}})

    def wait_ready(self, n: int, timeout: float = 10) -> None:
        """Until flagd has exactly `n` pods, all Ready (a test-side check; labkit itself watches)."""
        from kubernetes import client

        core, deadline = client.CoreV1Api(self.api()), time.monotonic() + timeout
        while time.monotonic() < deadline:
            pods = core.list_namespaced_pod("default", label_selector=ReadyGauge.SELECTOR).items
            if len(pods) == n and all(_ready(p) for p in pods):
                return
            time.sleep(0.05)
        raise AssertionError(f"flagd not at {n} ready pods")

    def wait_serving(self, flag: str = "cartFailure", timeout: float = 10) -> bool:
        """Until a Ready flagd pod serves `flag` (the lab starts with flagd starting)."""
        deadline = time.monotonic() + timeout
        while self.cluster.flagd_value(flag) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.cluster.flagd_value(flag) is not None


class ReadyGauge:
    """Watches flagd's pods from a thread with the kubernetes client's own watch (not labkit's): the
    fewest Ready pods seen and the seconds with none, between entering and leaving the `with` block.

    Ready means as the Service counts it: the Ready condition and not Terminating.
    """

    SELECTOR = "opentelemetry.io/name=flagd"

    def __init__(self, kubeconfig, namespace: str = "default", timeout: int = 120):
        from kubernetes import client, config

        self.core = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
        self.namespace, self.timeout = namespace, timeout
        self._lock = threading.Lock()
        self._ready: dict[str, bool] = {}
        self._open = False
        self.fewest: int | None = None
        self.dark = 0.0  # seconds with no Ready flagd pod
        self._dark_since: float | None = None

    def __enter__(self) -> "ReadyGauge":
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=self.SELECTOR)
        with self._lock:
            self._open = True
            self._ready = {p.metadata.name: _ready(p) for p in pods.items}
            self._count()
        threading.Thread(target=self._watch, args=(pods.metadata.resource_version,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            if self._dark_since is not None:
                self.dark += time.monotonic() - self._dark_since
            self._open = False

    def _watch(self, rv: str) -> None:
        from kubernetes import watch

        w = watch.Watch()
        for event in w.stream(self.core.list_namespaced_pod, self.namespace, label_selector=self.SELECTOR,
                              resource_version=rv, timeout_seconds=self.timeout):
            with self._lock:
                if not self._open:
                    break
                pod = event["object"]
                if event["type"] == "DELETED":
                    self._ready.pop(pod.metadata.name, None)
                else:
                    self._ready[pod.metadata.name] = _ready(pod)
                self._count()
        w.stop()

    def _count(self) -> None:
        ready = sum(self._ready.values())
        self.fewest = ready if self.fewest is None else min(self.fewest, ready)
        if ready == 0 and self._dark_since is None:
            self._dark_since = time.monotonic()
        elif ready and self._dark_since is not None:
            self.dark += time.monotonic() - self._dark_since
            self._dark_since = None


def _ready(pod) -> bool:
    if pod.metadata.deletion_timestamp:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
