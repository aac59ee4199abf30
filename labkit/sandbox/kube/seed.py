"""The lab's namespace as it starts: flagd's Deployment, its flag ConfigMap and the Services (the demo chart's)."""
from __future__ import annotations

import yaml

from labkit.sandbox.kube.discovery import NS

FLAGD = "flagd"
CONFIGMAP = "flagd-config"
SELECTOR = {"opentelemetry.io/name": "flagd"}
FLAGD_IMAGE = "ghcr.io/open-feature/flagd:v0.11.1"


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


def service(name: str, ports: list[tuple[str, int]], ip: str) -> dict:
    return {
        "metadata": {"name": name, "labels": {"opentelemetry.io/name": name,
                                              "app.kubernetes.io/name": name}},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"name": n, "port": p, "targetPort": p, "protocol": "TCP"} for n, p in ports],
                 "selector": {"opentelemetry.io/name": name}, "sessionAffinity": "None",
                 "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                 "internalTrafficPolicy": "Cluster"},
        "status": {"loadBalancer": {}},
    }


def flagd_deployment() -> dict:
    return {
        "metadata": {"name": FLAGD, "generation": 1,
                     "labels": {"app.kubernetes.io/name": FLAGD, "app.kubernetes.io/component": FLAGD,
                                "opentelemetry.io/name": FLAGD,
                                "app.kubernetes.io/part-of": "opentelemetry-demo"},
                     "annotations": {"deployment.kubernetes.io/revision": "1",
                                     "meta.helm.sh/release-name": "my-otel-demo",
                                     "meta.helm.sh/release-namespace": NS}},
        "spec": {"replicas": 1, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
                 "selector": {"matchLabels": dict(SELECTOR)},
                 "strategy": {"type": "RollingUpdate",
                              "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                 "template": flagd_template()},
        "status": {},
    }


def initial_objects(flags_yaml_text: str) -> list[tuple[str, dict]]:
    """(resource, object) in the order they are written; flagd's first pod is the controller's."""
    manifest = yaml.safe_load(flags_yaml_text)
    manifest.setdefault("metadata", {})["namespace"] = NS
    return [("configmaps", manifest), ("deployments", flagd_deployment()),
            ("services", service(FLAGD, [("rpc", 8013), ("ofrep", 8016)], "10.96.40.13")),
            ("services", service("frontend-proxy", [("tcp-service", 8080)], "10.96.80.80"))]
