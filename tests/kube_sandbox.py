"""The local lab's Kubernetes API by itself (flagd, the ConfigMap) with a kubeconfig for it.

Tests that scale, forbid or break the cluster use their own, so the session's local lab stays intact.
"""
from __future__ import annotations

from pathlib import Path

from labkit.sandbox import SHARED_FLAGS, Timings, kube, kubeconfig_text
from labkit.sandbox.http import LabServer
from labkit.settings import Settings

FLAGS_YAML = SHARED_FLAGS.read_text()


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
