"""Server-side printing: the Table kubectl asks for (`as=Table`), its columns and cells as kubectl shows them."""
from __future__ import annotations

import calendar
import time


def parse_rfc3339(s: str) -> float:
    return calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))


def age(created: str) -> str:
    """kubectl's HumanDuration, rendered by the server as real Tables are."""
    s = int(max(0, time.time() - parse_rfc3339(created)))
    m, h, d = s // 60, s // 3600, s // 86400
    if s < 120:
        return f"{s}s"
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if h < 3:
        return f"{m}m"
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    return f"{d}d"


def pod_status_text(pod: dict) -> str:
    """The STATUS column as kubectl's printer derives it."""
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase", "Unknown")
    inits = status.get("initContainerStatuses") or []
    if any((cs.get("state", {}).get("terminated") or {}).get("exitCode", 1) != 0 for cs in inits):
        reason = f"Init:0/{len(inits)}"  # the init container has not copied the flag file yet
    else:
        for cs in status.get("containerStatuses") or []:
            state = cs.get("state", {})
            if state.get("waiting", {}).get("reason"):
                reason = state["waiting"]["reason"]
            elif state.get("terminated", {}).get("reason"):
                reason = state["terminated"]["reason"]
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    return reason


COLUMNS = {
    "pods": [("Name", "string", "name", 0), ("Ready", "string", "", 0), ("Status", "string", "", 0),
             ("Restarts", "string", "", 0), ("Age", "string", "", 0), ("IP", "string", "", 1),
             ("Node", "string", "", 1), ("Nominated Node", "string", "", 1), ("Readiness Gates", "string", "", 1)],
    "deployments": [("Name", "string", "name", 0), ("Ready", "string", "", 0), ("Up-to-date", "integer", "", 0),
                    ("Available", "integer", "", 0), ("Age", "string", "", 0), ("Containers", "string", "", 1),
                    ("Images", "string", "", 1), ("Selector", "string", "", 1)],
    "configmaps": [("Name", "string", "name", 0), ("Data", "integer", "", 0), ("Age", "string", "", 0)],
    "services": [("Name", "string", "name", 0), ("Type", "string", "", 0), ("Cluster-IP", "string", "", 0),
                 ("External-IP", "string", "", 0), ("Port(s)", "string", "", 0), ("Age", "string", "", 0),
                 ("Selector", "string", "", 1)],
}


def cells(resource: str, obj: dict) -> list:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    if resource == "pods":
        cs = status.get("containerStatuses") or []
        restarts = sum(c.get("restartCount", 0) for c in cs)
        return [meta["name"], f"{sum(c.get('ready', False) for c in cs)}/{len(spec.get('containers', []))}",
                pod_status_text(obj), str(restarts), age(meta["creationTimestamp"]),
                status.get("podIP", "<none>"), spec.get("nodeName", "<none>"), "<none>", "<none>"]
    if resource == "deployments":
        containers = spec["template"]["spec"]["containers"]
        return [meta["name"], f"{status.get('readyReplicas', 0)}/{spec['replicas']}",
                status.get("updatedReplicas", 0), status.get("availableReplicas", 0),
                age(meta["creationTimestamp"]), ",".join(c["name"] for c in containers),
                ",".join(c["image"] for c in containers),
                ",".join(f"{k}={v}" for k, v in spec["selector"]["matchLabels"].items())]
    if resource == "configmaps":
        return [meta["name"], len(obj.get("data") or {}) + len(obj.get("binaryData") or {}),
                age(meta["creationTimestamp"])]
    ports = ",".join(f"{p['port']}/{p.get('protocol', 'TCP')}" for p in spec.get("ports", []))
    return [meta["name"], spec.get("type", "ClusterIP"), spec.get("clusterIP", "None"), "<none>", ports,
            age(meta["creationTimestamp"]),
            ",".join(f"{k}={v}" for k, v in (spec.get("selector") or {}).items()) or "<none>"]


def table(resource: str, objects: list, rv: str) -> dict:
    rows = []
    for obj in objects:
        meta = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
        rows.append({"cells": cells(resource, obj),
                     "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}})
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
            "columnDefinitions": [{"name": n, "type": t, "format": f, "description": "", "priority": p}
                                  for n, t, f, p in COLUMNS[resource]],
            "rows": rows}
