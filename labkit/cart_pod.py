"""The cart pod's annotations: the `supportInfo` that links the runbook, read from the cart's pods and
put into its Deployment's pod template (the cart rolls; the wait is a watch, with progress).

The lab's collector copies the pod's annotations onto every log of the pod (k8sattributes), so the
problem's description shows the supportInfo the RUNNING pod was started with: a template change
counts once the new pods are Ready and the old ones are going.
"""
from __future__ import annotations

import time

from labkit import settings as names
from labkit.cluster import Cluster
from labkit.cluster.pods import ready, terminating, watch_pods
from labkit.errors import NotFound
from labkit.progress import Progress, quiet

SUPPORT_INFO = "supportInfo"


def _cart_deployment(cluster: Cluster) -> dict:
    found, _ = cluster.kube.list_objects("deployments", names.CART_SELECTOR)
    if not found:
        raise NotFound(f"No cart Deployment (label {names.CART_SELECTOR}) in namespace {cluster.namespace}: "
                       "is the demo installed there? (kubectl get deploy -l " + names.CART_SELECTOR + ")")
    return next(iter(found.values()))


def support_info(cluster: Cluster) -> str | None:
    """The supportInfo of the cart's running pods (a Ready one first), or None when they have none."""
    pods, _ = cluster.kube.list_objects("pods", names.CART_SELECTOR)
    running = sorted((p for p in pods.values() if not terminating(p)), key=lambda p: not ready(p))
    for pod in running:
        value = ((pod.get("metadata") or {}).get("annotations") or {}).get(SUPPORT_INFO)
        if value:
            return value
    return None


def patch(cluster: Cluster, value: str, deployment: dict | None = None) -> tuple[str, dict]:
    """(path, body) of the strategic merge patch that puts `value` as the cart pods' supportInfo."""
    name = (deployment or _cart_deployment(cluster))["metadata"]["name"]
    return (cluster.kube.path("deployments", name),
            {"spec": {"template": {"metadata": {"annotations": {SUPPORT_INFO: value}}}}})


def annotate(cluster: Cluster, value: str, *, timeout: float = 180, progress: Progress | None = None) -> str:
    """Put `value` as supportInfo into the cart Deployment's pod template (a strategic merge patch, as
    `kubectl patch` sends; every other annotation kept) and wait until the cart's running pods carry
    it. Returns the Deployment's name; LabTimeout when the rollout does not finish in `timeout` s."""
    report = progress or quiet
    deployment = _cart_deployment(cluster)
    name = deployment["metadata"]["name"]
    replicas = (deployment.get("spec") or {}).get("replicas", 1)
    path, body = patch(cluster, value, deployment)
    cluster.kube.call("PATCH", path, "patch", "deployments", name, body=body,
                      content_type="application/strategic-merge-patch+json")
    report(f"supportInfo set on deployment {name}: the cart rolls ({replicas} replica(s))", 0.0)

    def carries(pod):
        return ((pod.get("metadata") or {}).get("annotations") or {}).get(SUPPORT_INFO) == value

    def done(pods):
        staying = [p for p in pods.values() if not terminating(p)]
        return replicas == 0 or (all(carries(p) for p in staying)
                                 and sum(ready(p) for p in staying) >= replicas)

    def on_change(pods):
        new = sum(1 for p in pods.values() if carries(p) and ready(p))
        report(f"cart pods with the new supportInfo ready {new}/{replicas}", 0.1 + 0.9 * min(new, replicas) / max(replicas, 1))

    watch_pods(cluster.kube, done, time.monotonic() + timeout, on_change,
               lambda pods: f"the cart's rollout did not finish within {timeout:g} s after its supportInfo "
                            f"changed; check: kubectl -n {cluster.namespace} rollout status deploy/{name}",
               selector=names.CART_SELECTOR)
    report("the cart's pods carry the new supportInfo", 1.0)
    return name
