"""One lab's OpenTelemetry collector, as the lab's collector-values.yaml configures it.

What the shop writes reaches the tenant's Telemetry with the lab's `k8s.cluster.name`, and each log
line passes the collector's two log processors first:
- `k8sattributes`: the emitting pod's name (the cluster's current pod of the service, so a rolled
  cart gives new names) and five of its annotations under the lab's tag names;
- `transform`: `alertmessage` and `priority` on a cart log of a production pod whose body matches
  `(?i)wasn't able to connect to redis.*`, the fields the tenant's "Critical Logs" route matches.
No annotation maps to `dt.cost.product` (the lab's file dropped it), so the records carry none.
"""
from __future__ import annotations

import functools
import inspect
import re

from labkit.sandbox.dynatrace.telemetry import REDIS_ERROR, Telemetry

# k8sattributes' extract.annotations: pod annotation key -> the attribute it becomes
ANNOTATIONS = {"costCentre": "dt.cost.costcenter", "deployment.release_stage": "deployment.release_stage",
               "product": "deployment.release_product", "ownedBy": "dt.owner", "supportInfo": "supportInfo"}
REDIS_BODY = re.compile(r"(?i)wasn't able to connect to redis.*")
ALERT = {"alertmessage": "Critical Redis connection error!", "priority": "1"}
LOG_WRITES = ("log_info", "log_cart", "log_cart_redis_error")


def transform(service: str, attributes: dict, body: str) -> dict:
    """The lab's OTTL log statements: the alert fields where all three conditions hold (IsMatch
    is a regex search)."""
    if (service == "cart" and attributes.get("deployment.release_stage") == "production"
            and REDIS_BODY.search(body)):
        return {**attributes, **ALERT}
    return attributes


class Collector:
    """Every write that takes a `cluster` gets this lab's; a log write gets the pod's tags.
    `kube` is the lab's Kubernetes store (anything with its `list`); without one, pods are named
    `<service>-<pod>` and carry no annotations (a collector without k8sattributes)."""

    def __init__(self, telemetry: Telemetry, cluster: str, kube=None):
        self.telemetry, self.cluster, self.kube = telemetry, cluster, kube
        telemetry.join(cluster)

    def __getattr__(self, name: str):
        attr = getattr(self.telemetry, name)
        if name in LOG_WRITES:
            return functools.partial(self._log, attr)
        if callable(attr) and _takes_cluster(type(self.telemetry), name):
            return functools.partial(attr, cluster=self.cluster)
        return attr

    def _log(self, write, *args, **kwargs):
        """A log write with its pod resolved and tagged: log_info(service, content, ..., pod),
        log_cart(level, content, pod=...), log_cart_redis_error(trace, span, pod, ...)."""
        names = _params(type(self.telemetry), write.__name__)
        bound = dict(zip(names, args), **kwargs)
        service = bound.get("service", "cart")
        pod, annotations = self.pod(service, bound.get("pod") or "pod")
        attributes = {ANNOTATIONS[k]: v for k, v in annotations.items() if k in ANNOTATIONS}
        body = bound.get("content", REDIS_ERROR)
        bound.update(pod=pod, cluster=self.cluster, attributes=transform(service, attributes, body))
        return write(**bound)

    def pod(self, service: str, suffix: str) -> tuple[str, dict]:
        """(name, annotations) of the service's pod that emits now: the newest running one."""
        if self.kube is None:
            return f"{service}-{suffix}", {}
        pods, _ = self.kube.list("pods", f"opentelemetry.io/name={service}", None)
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")
                and p.get("status", {}).get("phase") == "Running"] or pods
        if not live:
            return f"{service}-{suffix}", {}
        newest = max(live, key=lambda p: (p["metadata"].get("creationTimestamp", ""),
                                          int(p["metadata"].get("resourceVersion", 0))))
        return newest["metadata"]["name"], dict(newest["metadata"].get("annotations") or {})

    def __repr__(self) -> str:
        return f"<Collector k8s.cluster.name={self.cluster!r}>"


@functools.lru_cache(maxsize=None)
def _params(cls: type, name: str) -> list[str]:
    return list(inspect.signature(getattr(cls, name)).parameters)[1:]  # without self


@functools.lru_cache(maxsize=None)
def _takes_cluster(cls: type, name: str) -> bool:
    try:
        return "cluster" in inspect.signature(getattr(cls, name)).parameters
    except (TypeError, ValueError, AttributeError):
        return False
