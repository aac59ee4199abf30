"""The lab's namespace as it starts: flagd's Deployment, its flag ConfigMap and the Services (the demo chart's)."""
from __future__ import annotations

import time

import yaml

from labkit import releases
from labkit.sandbox.kube.discovery import NODE, NS
from labkit.sandbox.kube import workloads
from labkit.sandbox.kube.workloads import service

FLAGD = "flagd"
CONFIGMAP = "flagd-config"
SELECTOR = {"opentelemetry.io/name": "flagd"}
FLAGD_IMAGE = "ghcr.io/open-feature/flagd:v0.16.1"


def flagd_template() -> dict:
    labels = {"opentelemetry.io/name": FLAGD, "app.kubernetes.io/name": FLAGD,
              "app.kubernetes.io/component": FLAGD}
    return {
        "metadata": {"labels": labels},
        "spec": {
            "serviceAccountName": "my-otel-demo",
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "schedulerName": "default-scheduler",
            "securityContext": {},
            # the chart copies the ConfigMap into an emptyDir once, at pod start: why edits need a restart
            "initContainers": [{
                "name": "init-config", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "cp /config-ro/*.json /config-rw/ && ls /config-rw/"],
                "volumeMounts": [{"name": "config-ro", "mountPath": "/config-ro"},
                                 {"name": "config-rw", "mountPath": "/config-rw"}],
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File", "resources": {}}],
            "containers": [{
                "name": FLAGD, "image": FLAGD_IMAGE, "imagePullPolicy": "IfNotPresent",
                "args": ["start", "--port", "8013", "--ofrep-port", "8016",
                         "--uri", "file:./etc/flagd/demo.flagd.json"],
                "ports": [{"name": "rpc", "containerPort": 8013, "protocol": "TCP"},
                          {"name": "ofrep", "containerPort": 8016, "protocol": "TCP"}],
                "env": [{"name": "FLAGD_METRICS_EXPORTER", "value": "otel"},
                        {"name": "FLAGD_OTEL_COLLECTOR_URI", "value": "my-otel-demo-otelcol:4317"}],
                "resources": {"limits": {"memory": "75Mi"}},
                "volumeMounts": [{"name": "config-rw", "mountPath": "/etc/flagd"}],
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File"}],
            "volumes": [{"name": "config-ro", "configMap": {"name": CONFIGMAP, "defaultMode": 420}},
                        {"name": "config-rw", "emptyDir": {}}],
        },
    }


def flagd_deployment() -> dict:
    return {
        "metadata": {"name": FLAGD, "generation": 1,
                     "labels": {"app.kubernetes.io/name": FLAGD, "app.kubernetes.io/component": FLAGD,
                                "opentelemetry.io/name": FLAGD,
                                "app.kubernetes.io/part-of": "opentelemetry-demo"},
                     "annotations": {"meta.helm.sh/release-name": "my-otel-demo",
                                     "meta.helm.sh/release-namespace": NS}},
        "spec": {"replicas": 1, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
                 "selector": {"matchLabels": dict(SELECTOR)},
                 "strategy": {"type": "RollingUpdate",
                              "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                 "template": flagd_template()},
        "status": {},
    }


def initial_objects(flags_yaml_text: str, demo: bool = True, version: str = releases.DEFAULT,
                    support_info: str | None = None) -> list[tuple[str, dict]]:
    """(resource, object) in the order they are written; the pods are the controllers'. `version`:
    the demo release whose images the Deployments run; `support_info` is the cart's annotation (None: the lab file's)."""
    manifest = yaml.safe_load(flags_yaml_text)
    manifest.setdefault("metadata", {})["namespace"] = NS
    return [("configmaps", manifest), ("deployments", flagd_deployment()),
            ("services", service(FLAGD, [("rpc", 8013), ("ofrep", 8016)], "10.96.40.13")),
            *(workloads.objects(version, support_info) if demo else []), *cluster_objects()]


def cluster_objects() -> list[tuple[str, dict]]:
    """What every cluster has: kind's namespaces and its one Ready node."""
    out = [("namespaces", {"metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                           "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
           for ns in (NS, "kube-node-lease", "kube-public", "kube-system", "local-path-storage")]
    out.append(("nodes", node()))
    return out


def node() -> dict:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    ready = {"type": "Ready", "status": "True", "reason": "KubeletReady",
             "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}
    capacity = {"cpu": "2", "memory": "8039356Ki", "pods": "110", "ephemeral-storage": "32847680Ki"}
    return {"metadata": {"name": NODE, "labels": {
                "kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/control-plane": "", "beta.kubernetes.io/os": "linux"}},
            "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"],
                     "providerID": f"kind://docker/labkit-local/{NODE}"},
            "status": {"conditions": [ready], "addresses": [{"type": "InternalIP", "address": "172.18.0.2"},
                                                            {"type": "Hostname", "address": NODE}],
                       "capacity": capacity, "allocatable": dict(capacity),
                       "nodeInfo": {"kubeletVersion": "v1.32.4", "kubeProxyVersion": "", "osImage":
                                    "Debian GNU/Linux 12 (bookworm)", "kernelVersion": "6.8.0-1021-azure",
                                    "containerRuntimeVersion": "containerd://2.0.3", "architecture": "amd64",
                                    "operatingSystem": "linux", "machineID": "", "systemUUID": "", "bootID": ""}}}
