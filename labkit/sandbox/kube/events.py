"""Events as the controllers and the kubelet write them (core v1), and their events.k8s.io/v1 view."""
from __future__ import annotations

import copy
import time

from labkit.sandbox.kube.discovery import NODE, NS
from labkit.sandbox.kube.store import now_rfc3339

MAX_EVENTS = 600  # a real cluster drops them after an hour; here the oldest go first
COMPONENTS = {"Pod": "kubelet", "ReplicaSet": "replicaset-controller", "Deployment": "deployment-controller"}


_last_stamp = 0


def _stamp() -> int:
    """client-go names an Event <object>.<UnixNano in hex>: names sort in the order they happened
    (each one later than the last, even within one clock tick)."""
    global _last_stamp
    _last_stamp = max(time.time_ns(), _last_stamp + 1)
    return _last_stamp


def involved(obj: dict, field_path: str | None = None) -> dict:
    meta = obj["metadata"]
    ref = {"kind": obj["kind"], "namespace": meta.get("namespace", NS), "name": meta["name"],
           "uid": meta["uid"], "apiVersion": obj["apiVersion"], "resourceVersion": meta["resourceVersion"]}
    if field_path:
        ref["fieldPath"] = field_path
    return ref


def core_event(obj: dict, reason: str, message: str, now: str, type_: str = "Normal",
               field_path: str | None = None, component: str | None = None) -> dict:
    """A new core v1 Event about `obj`, named as client-go's recorder names them."""
    component = component or COMPONENTS.get(obj["kind"], "kubelet")
    source = {"component": component}
    if component == "kubelet":
        source["host"] = NODE
    return {"metadata": {"name": f"{obj['metadata']['name']}.{_stamp():x}", "namespace": NS},
            "involvedObject": involved(obj, field_path), "reason": reason, "message": message,
            "source": source, "firstTimestamp": now, "lastTimestamp": now, "count": 1, "type": type_,
            "eventTime": None, "reportingComponent": component,
            "reportingInstance": NODE if component == "kubelet" else ""}


def same(a: dict, b: dict) -> bool:
    """The recorder's aggregation key: a repeat only bumps count and lastTimestamp."""
    return (a["involvedObject"]["uid"] == b["involvedObject"]["uid"] and a["reason"] == b["reason"]
            and a["message"] == b["message"] and a["type"] == b["type"])


def to_events_v1(ev: dict) -> dict:
    """The same Event as events.k8s.io/v1 serves it (regarding, note, reportingController, ...)."""
    out = {"kind": "Event", "apiVersion": "events.k8s.io/v1", "metadata": ev["metadata"],
           "eventTime": ev.get("eventTime") or _micro(ev.get("firstTimestamp")), "reportingController": ev.get("reportingComponent", ""),
           "reportingInstance": ev.get("reportingInstance", ""), "action": ev["reason"],
           "reason": ev["reason"], "regarding": ev["involvedObject"], "note": ev["message"],
           "type": ev["type"], "deprecatedSource": ev.get("source", {}),
           "deprecatedFirstTimestamp": ev.get("firstTimestamp"),
           "deprecatedLastTimestamp": ev.get("lastTimestamp"), "deprecatedCount": ev.get("count", 1)}
    return out


def _micro(stamp: str | None) -> str | None:
    """events.k8s.io requires eventTime (MicroTime); a core Event without one shows its first time."""
    return stamp[:-1] + ".000000Z" if stamp else None


def v1_field(name: str) -> str:
    """An events.k8s.io field selector in terms of the stored core Event."""
    if name.startswith("regarding."):
        return "involvedObject." + name[len("regarding."):]
    return {"reportingController": "reportingComponent", "note": "message"}.get(name, name)


class Recorder:
    """LocalCluster's event recorder (it provides _objects and _write)."""

    def _record(self, obj: dict, reason: str, message: str, type_: str = "Normal",
                field_path: str | None = None, component: str | None = None) -> None:
        """Write an Event about obj, or count a repeat of the same one (client-go's recorder)."""
        ev = core_event(obj, reason, message, now_rfc3339(), type_, field_path, component)
        for old in self._objects["events"].values():
            if same(old, ev):
                old = copy.deepcopy(old)
                old["count"] += 1
                old["lastTimestamp"] = ev["lastTimestamp"]
                self._write("events", old, "MODIFIED")
                return
        self._write("events", ev, "ADDED")
        if len(self._objects["events"]) > MAX_EVENTS:
            oldest = min(self._objects["events"].values(), key=lambda e: int(e["metadata"]["resourceVersion"]))
            self._write("events", copy.deepcopy(oldest), "DELETED")
