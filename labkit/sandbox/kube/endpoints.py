"""The endpoints controllers: each Service's Endpoints and EndpointSlice, from the pods its selector matches."""
from __future__ import annotations

import copy

from labkit.sandbox.kube.discovery import NODE, NS
from labkit.sandbox.kube.replicasets import owner_ref, safe_name
from labkit.sandbox.kube.selectors import labels_match


def _target(pod: dict) -> dict:
    meta = pod["metadata"]
    return {"kind": "Pod", "namespace": NS, "name": meta["name"], "uid": meta["uid"]}


def _ports(svc: dict) -> list[dict]:
    return [{"name": p.get("name", ""), "port": p.get("targetPort", p["port"]) if isinstance(
        p.get("targetPort"), int) else p["port"], "protocol": p.get("protocol", "TCP")}
        for p in svc["spec"].get("ports", [])]


def endpoints_of(svc: dict, pods: list[dict], ready) -> dict:
    name = svc["metadata"]["name"]
    up = [p for p in pods if ready(p)]
    down = [p for p in pods if not ready(p)]
    ep = {"metadata": {"name": name, "labels": dict(svc["metadata"].get("labels") or {})}}
    if up or down:
        subset = {"ports": _ports(svc)}
        if up:
            subset["addresses"] = [{"ip": p["status"]["podIP"], "nodeName": NODE, "targetRef": _target(p)}
                                   for p in up]
        if down:
            subset["notReadyAddresses"] = [{"ip": p["status"]["podIP"], "nodeName": NODE,
                                            "targetRef": _target(p)} for p in down]
        ep["subsets"] = [subset]
    return ep


def slice_of(svc: dict, pods: list[dict], ready) -> dict:
    name = svc["metadata"]["name"]
    labels = dict(svc["metadata"].get("labels") or {}, **{
        "kubernetes.io/service-name": name,
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"})
    return {"metadata": {"name": f"{name}-{safe_name(name.encode(), 5)}", "generateName": f"{name}-",
                         "labels": labels, "ownerReferences": [owner_ref(svc)]},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [p["status"]["podIP"]],
                           "conditions": {"ready": ready(p) and not p["metadata"].get("deletionTimestamp"),
                                          "serving": ready(p),
                                          "terminating": bool(p["metadata"].get("deletionTimestamp"))},
                           "nodeName": NODE, "targetRef": _target(p)} for p in pods],
            "ports": _ports(svc)}


class Endpoints:
    """LocalCluster's endpoints and endpointslice controllers (it provides _objects, _write, _is_ready)."""

    def _sync_endpoints(self) -> None:
        running = [p for p in self._objects["pods"].values()
                   if p["status"].get("phase") == "Running" and p["status"].get("podIP")]
        for svc in list(self._objects["services"].values()):
            selector = svc["spec"].get("selector")
            if not selector:
                continue
            pods = sorted((p for p in running if labels_match(p["metadata"].get("labels") or {},
                                                              [("=", k, v) for k, v in selector.items()])),
                          key=lambda p: p["metadata"]["name"])
            serving = lambda p: self._is_ready(p) and not p["metadata"].get("deletionTimestamp")  # noqa: E731
            self._keep("endpoints", endpoints_of(svc, pods, serving))
            self._keep("endpointslices", slice_of(svc, pods, self._is_ready))

    def _keep(self, resource: str, want: dict) -> None:
        live = self._objects[resource].get(want["metadata"]["name"])
        if live is not None:
            same = {k: v for k, v in live.items() if k not in ("metadata", "kind", "apiVersion")}
            if same == {k: v for k, v in want.items() if k != "metadata"}:
                return
            merged = copy.deepcopy(live)
            merged.update({k: v for k, v in want.items() if k != "metadata"})
            for k in [k for k in merged if k not in want and k not in ("metadata", "kind", "apiVersion")]:
                merged.pop(k)
            self._write(resource, merged, "MODIFIED")
            return
        self._write(resource, want, "ADDED")
