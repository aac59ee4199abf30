"""The API server's state and verbs: objects under resourceVersions, watch history, permissions, validation.

The watch verb over that history is `watch.Watches`."""
from __future__ import annotations

import copy
import logging
import threading
import time
import uuid
from collections import deque
from typing import Callable

from labkit.sandbox.kube.discovery import CLUSTER_SCOPED, KINDS, NS
from labkit.sandbox.kube.errors import (StatusError, already_exists, bad_request, conflict, details,
                                        forbidden, invalid, not_allowed, not_found)
from labkit.sandbox.kube.patch import patched
from labkit.sandbox.kube.selectors import Selector
from labkit.sandbox.kube.validation import check_fields, check_name
from labkit.sandbox.kube.watch import Watches

log = logging.getLogger(__name__)
EVENT_HISTORY = 1000  # watch events kept for resourceVersion replay; older RVs get 410 Expired
SERVER_FIELDS = ("name", "namespace", "uid", "creationTimestamp", "resourceVersion", "generation",
                 "deletionTimestamp", "ownerReferences")  # metadata a client cannot change


def now_rfc3339(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


class Store(Watches):
    """Objects of namespace `default`, their watch events, and the verbs a client may not use."""

    def __init__(self, history: int = EVENT_HISTORY):
        self._cond = threading.Condition(threading.RLock())  # one lock for objects, events and waiters
        self._objects: dict[str, dict[str, dict]] = {r: {} for r in KINDS}
        self._rv = 0
        self._events: deque = deque(maxlen=history)  # (rv, resource, type, object)
        self._forbidden: set[tuple[str, str]] = set()
        self._stopped = False
        #: called as fn(configmap_or_None) after every write of a ConfigMap (LocalLab keeps the flags)
        self.on_configmap_change: Callable[[dict | None], None] | None = None

    # ---- writing -------------------------------------------------------------------------------
    def _write(self, resource: str, obj: dict, event: str) -> dict:
        """Store (or delete) an object under a new resourceVersion and record its watch event."""
        _, api_version, kind = KINDS[resource]
        self._rv += 1
        obj["kind"], obj["apiVersion"] = kind, api_version
        meta = obj["metadata"]
        if resource not in CLUSTER_SCOPED:
            meta.setdefault("namespace", NS)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now_rfc3339())
        meta["resourceVersion"] = str(self._rv)
        if event == "DELETED":
            self._objects[resource].pop(meta["name"], None)
        else:
            self._objects[resource][meta["name"]] = obj
        self._events.append((self._rv, resource, event, copy.deepcopy(obj)))
        self._cond.notify_all()
        if resource == "configmaps" and self.on_configmap_change is not None:
            try:
                self.on_configmap_change(None if event == "DELETED" else copy.deepcopy(obj))
            except Exception:  # keeping a copy must never fail the write itself
                log.exception("local lab: could not keep a copy of ConfigMap %s", meta["name"])
        return obj

    def _get(self, resource: str, name: str) -> dict:
        obj = self._objects[resource].get(name)
        if obj is None:
            raise not_found(resource, name)
        return obj

    def _sorted(self, resource: str) -> list[dict]:
        return sorted(self._objects[resource].values(), key=lambda o: o["metadata"]["name"])

    def _delete_gracefully(self, pod: dict) -> dict:
        """A pod shows Terminating (deletionTimestamp) until the kubelet has stopped it."""
        if pod["metadata"].get("deletionTimestamp"):
            return pod
        pod = copy.deepcopy(pod)
        pod["metadata"]["deletionTimestamp"] = now_rfc3339(time.time() + 30)
        pod["metadata"]["deletionGracePeriodSeconds"] = 30
        return self._write("pods", pod, "MODIFIED")

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()  # ends watch streams (and the controller)

    # ---- permissions (knobs for tests) ----------------------------------------------------------
    def forbid(self, verb: str, resource: str) -> None:
        with self._cond:
            self._forbidden.add((verb, resource))

    def allow_all(self) -> None:
        with self._cond:
            self._forbidden.clear()

    def check(self, verb: str, resource: str, name: str | None) -> None:
        with self._cond:
            if {(verb, resource), ("*", resource), (verb, "*")} & self._forbidden:
                raise forbidden(verb, resource, name)

    # ---- reading -------------------------------------------------------------------------------
    def list(self, resource: str, label_selector: str | None, field_selector: str | None) -> tuple[list, str]:
        selector = Selector(label_selector, field_selector, resource)
        with self._cond:
            return [copy.deepcopy(o) for o in self._sorted(resource) if selector(o)], str(self._rv)

    def resource_version(self) -> str:
        with self._cond:
            return str(self._rv)

    def get(self, resource: str, name: str) -> dict:
        with self._cond:
            return copy.deepcopy(self._get(resource, name))

    # ---- create, replace, patch, delete ----------------------------------------------------------
    def create(self, resource: str, body: dict, dry_run: bool = False, validation: str | None = None) -> dict:
        if resource != "configmaps":
            raise not_allowed()
        with self._cond:
            name = (body.get("metadata") or {}).get("name")
            if not name:
                raise StatusError(422, "Invalid", 'ConfigMap "" is invalid: metadata.name: Required value: name '
                                  "or generateName is required", {"kind": "ConfigMap", "causes": [
                                      {"reason": "FieldValueRequired", "message": "Required value: name or "
                                       "generateName is required", "field": "metadata.name"}]})
            check_name(resource, name)
            obj = check_fields(resource, copy.deepcopy(body), validation)
            if name in self._objects[resource]:
                raise already_exists(resource, name)
            for key in ("uid", "resourceVersion", "creationTimestamp", "generation"):
                obj["metadata"].pop(key, None)
            obj["metadata"]["namespace"] = NS
            _validate(resource, obj)
            return copy.deepcopy(obj) if dry_run else copy.deepcopy(self._write(resource, obj, "ADDED"))

    def replace(self, resource: str, name: str, body: dict, dry_run: bool = False,
                validation: str | None = None) -> dict:
        with self._cond:
            live = self._get(resource, name)
            meta = body.get("metadata") or {}
            if meta.get("name", name) != name:
                raise bad_request(f"the name of the object ({meta.get('name')}) does not match the name on "
                                  f"the URL ({name})")
            if meta.get("resourceVersion") and meta["resourceVersion"] != live["metadata"]["resourceVersion"]:
                raise conflict(resource, name)
            obj = check_fields(resource, copy.deepcopy(body), validation)
            obj.setdefault("metadata", {})["name"] = name
            return self._update(resource, live, obj, dry_run)

    def patch(self, resource: str, name: str, content_type: str, patch, dry_run: bool = False,
              validation: str | None = None) -> tuple[dict, int]:
        """Apply a patch; server-side apply (apply-patch+yaml) creates an absent object (201)."""
        with self._cond:
            live = self._objects[resource].get(name)
            if live is None:
                if content_type.startswith("application/apply-patch") and resource == "configmaps":
                    body = dict(patch, metadata=dict(patch.get("metadata") or {}, name=name))
                    return self.create(resource, body, dry_run, validation), 201
                raise not_found(resource, name)
            obj = check_fields(resource, patched(live, content_type, patch), validation)
            rv = (patch.get("metadata") or {}).get("resourceVersion") if isinstance(patch, dict) else None
            if rv and rv != live["metadata"]["resourceVersion"]:
                raise conflict(resource, name)
            return self._update(resource, live, obj, dry_run), 200

    def _update(self, resource: str, live: dict, obj: dict, dry_run: bool) -> dict:
        """Keep what clients cannot change, validate, bump generation on spec changes, write if changed."""
        meta, live_meta = obj.setdefault("metadata", {}), live["metadata"]
        for key in SERVER_FIELDS:
            if key in live_meta:
                meta[key] = live_meta[key]
            else:
                meta.pop(key, None)
        if resource in ("deployments", "pods"):
            obj["status"] = copy.deepcopy(live.get("status"))  # status is a subresource
        if resource == "deployments" and obj.get("spec") != live.get("spec"):
            meta["generation"] = live_meta["generation"] + 1  # the controller then sets the revision
        _validate(resource, obj)
        if obj == live or dry_run:  # a no-op write keeps its resourceVersion, like the apiserver
            return copy.deepcopy(obj)
        return copy.deepcopy(self._write(resource, obj, "MODIFIED"))

    def delete(self, resource: str, name: str) -> dict:
        with self._cond:
            live = self._get(resource, name)
            if resource == "pods":  # the deployment controller then makes a replacement
                return copy.deepcopy(self._delete_gracefully(live))
            if resource != "configmaps":
                raise not_allowed()
            self._write(resource, copy.deepcopy(live), "DELETED")
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": details(resource, name)}

    # ---- deployments/scale ---------------------------------------------------------------------
    def scale(self, name: str) -> dict:
        with self._cond:
            d = self._get("deployments", name)
            match_labels = (d["spec"].get("selector") or {}).get("matchLabels") or {}
            return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                    "metadata": {k: d["metadata"][k] for k in ("name", "namespace", "uid", "resourceVersion",
                                                               "creationTimestamp")},
                    "spec": {"replicas": d["spec"]["replicas"]},
                    "status": {"replicas": (d.get("status") or {}).get("replicas", 0),
                               "selector": ",".join(f"{k}={v}" for k, v in match_labels.items())}}

    def set_scale(self, name: str, content_type: str | None, body) -> dict:
        """PATCH (content_type given) or PUT (None) of a Deployment's scale subresource."""
        with self._cond:
            scale = self.scale(name)
            new = patched(scale, content_type, body) if content_type else body
            replicas = (new.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise invalid("Scale.autoscaling", name, "spec.replicas", replicas,
                              "must be greater than or equal to 0")
            rv = (new.get("metadata") or {}).get("resourceVersion")
            if content_type is None and rv and rv != scale["metadata"]["resourceVersion"]:
                raise conflict("deployments", name)
            d = copy.deepcopy(self._get("deployments", name))
            d["spec"]["replicas"] = replicas
            self._update("deployments", self._get("deployments", name), d, dry_run=False)
            return self.scale(name)


def _validate(resource: str, obj: dict) -> None:
    """Refuse what the apiserver's decoding or validation would refuse, with its messages."""
    if resource == "configmaps":
        for value in (obj.get("data") or {}).values():
            if not isinstance(value, str):
                raise bad_request(f"json: cannot unmarshal {type(value).__name__} into Go struct field "
                                  "ConfigMap.data of type string")
    if resource == "deployments":
        replicas = obj.get("spec", {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise invalid("Deployment.apps", obj["metadata"].get("name", ""), "spec.replicas", replicas,
                          "must be greater than or equal to 0")
    for key in ("labels", "annotations"):
        for value in (obj["metadata"].get(key) or {}).values():
            if not isinstance(value, str):
                raise bad_request(f"json: cannot unmarshal {type(value).__name__} into Go struct field "
                                  f"ObjectMeta.metadata.{key} of type string")
