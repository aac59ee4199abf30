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
    "replicasets": [("Name", "string", "name", 0), ("Desired", "integer", "", 0), ("Current", "integer", "", 0),
                    ("Ready", "integer", "", 0), ("Age", "string", "", 0), ("Containers", "string", "", 1),
                    ("Images", "string", "", 1), ("Selector", "string", "", 1)],
    "events": [("Last Seen", "string", "", 0), ("Type", "string", "", 0), ("Reason", "string", "", 0),
               ("Object", "string", "", 0), ("Subobject", "string", "", 1), ("Source", "string", "", 1),
               ("Message", "string", "", 0), ("First Seen", "string", "", 1), ("Count", "string", "", 1),
               ("Name", "string", "name", 1)],
    "endpoints": [("Name", "string", "name", 0), ("Endpoints", "string", "", 0), ("Age", "string", "", 0)],
    "endpointslices": [("Name", "string", "name", 0), ("AddressType", "string", "", 0),
                       ("Ports", "string", "", 0), ("Endpoints", "string", "", 0), ("Age", "string", "", 0)],
    "namespaces": [("Name", "string", "name", 0), ("Status", "string", "", 0), ("Age", "string", "", 0)],
    "nodes": [("Name", "string", "name", 0), ("Status", "string", "", 0), ("Roles", "string", "", 0),
              ("Age", "string", "", 0), ("Version", "string", "", 0), ("Internal-IP", "string", "", 1),
              ("External-IP", "string", "", 1), ("OS-Image", "string", "", 1), ("Kernel-Version", "string", "", 1),
              ("Container-Runtime", "string", "", 1)],
}


def _endpoints(obj: dict) -> str:
    pairs = [f"{a['ip']}:{p['port']}" for s in obj.get("subsets") or [] for p in s.get("ports", [])
             for a in s.get("addresses", [])]
    return (",".join(pairs[:3]) + (f" + {len(pairs) - 3} more..." if len(pairs) > 3 else "")) or "<none>"


def _more_cells(resource: str, obj: dict) -> list:
    """The kinds the lab only reads: ReplicaSets, Events, Endpoints(Slices), Namespaces, Nodes."""
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    created = age(meta["creationTimestamp"])
    if resource == "replicasets":
        containers = spec["template"]["spec"]["containers"]
        return [meta["name"], spec.get("replicas", 0), status.get("replicas", 0), status.get("readyReplicas", 0),
                created, ",".join(c["name"] for c in containers), ",".join(c["image"] for c in containers),
                ",".join(f"{k}={v}" for k, v in spec["selector"]["matchLabels"].items())]
    if resource == "events":
        ref = obj["involvedObject"]
        return [age(obj.get("lastTimestamp") or meta["creationTimestamp"]), obj["type"], obj["reason"],
                f"{ref['kind'].lower()}/{ref['name']}", ref.get("fieldPath", ""),
                ", ".join(v for v in (obj.get("source") or {}).values()), obj["message"],
                age(obj.get("firstTimestamp") or meta["creationTimestamp"]), str(obj.get("count", 1)), meta["name"]]
    if resource == "endpoints":
        return [meta["name"], _endpoints(obj), created]
    if resource == "endpointslices":
        ips = [a for e in obj.get("endpoints") or [] for a in e["addresses"]]
        return [meta["name"], obj["addressType"], ",".join(str(p["port"]) for p in obj.get("ports") or []),
                ",".join(ips) or "<unset>", created]
    if resource == "namespaces":
        return [meta["name"], status.get("phase", "Active"), created]
    roles = ",".join(k.split("/", 1)[1] for k in meta.get("labels", {}) if k.startswith("node-role.kubernetes.io/"))
    info = status.get("nodeInfo", {})
    return [meta["name"], "Ready", roles or "<none>", created, info.get("kubeletVersion", ""),
            status["addresses"][0]["address"], "<none>", info.get("osImage", ""), info.get("kernelVersion", ""),
            info.get("containerRuntimeVersion", "")]


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
    if resource != "services":
        return _more_cells(resource, obj)
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
