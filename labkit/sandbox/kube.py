"""The local lab's Kubernetes API server: namespace `default` with flagd, its ConfigMap and services.

`kubectl` (1.32) and the python `kubernetes` client drive it unchanged over http://127.0.0.1; the
shapes follow /work/shared/reference/kubernetes-api-surface.md. A `Cluster` holds the objects and
runs a small deployment controller; `app(cluster)` is the HTTP front for `LabServer`.

Truths kept on purpose, because the workbook teaches them:
- a flagd pod loads `demo.flagd.json` from the ConfigMap when it STARTS (the chart's init container
  copies it once), so a ConfigMap edit reaches flagd only through a restart;
- a malformed flag file makes the new pod crash-loop instead of becoming Ready;
- a scale-down leaves pods Terminating for a while before they are gone.
"""
from __future__ import annotations

import copy
import hashlib
import heapq
import itertools
import json
import secrets
import threading
import time
import uuid
from collections import deque
from typing import Callable, Iterator

import logging

import yaml

from labkit.sandbox.http import Request, Response, json_response

log = logging.getLogger(__name__)
NS = "default"
USER = "system:serviceaccount:default:labkit"
FLAGD = "flagd"
CONFIGMAP = "flagd-config"
CONFIG_KEY = "demo.flagd.json"
SELECTOR = {"opentelemetry.io/name": "flagd"}
FLAGD_IMAGE = "ghcr.io/open-feature/flagd:v0.11.1"
HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the apiserver's "safe" alphabet for generated names
EVENT_HISTORY = 1000  # watch events kept for resourceVersion replay; older RVs get 410 Expired
MAX_WATCH_SECONDS = 1800.0

# resource -> (group, version, Kind); the group goes into messages as `deployments.apps`
KINDS = {
    "pods": ("", "v1", "Pod"),
    "configmaps": ("", "v1", "ConfigMap"),
    "services": ("", "v1", "Service"),
    "deployments": ("apps", "apps/v1", "Deployment"),
}


def now_rfc3339(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def parse_rfc3339(s: str) -> float:
    import calendar
    return calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))


def safe_name(seed: bytes, n: int) -> str:
    digest = hashlib.sha256(seed).digest()
    return "".join(HASH_ALPHABET[b % len(HASH_ALPHABET)] for b in digest[:n])


def random_suffix(n: int = 5) -> str:
    return "".join(secrets.choice(HASH_ALPHABET) for _ in range(n))


# ----------------------------------------------------------------------------------------- errors
class ApiError(Exception):
    """An error the API answers with a Status body (the shape kubectl and python parse)."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body


def qualified(resource: str) -> str:
    group = KINDS.get(resource.split("/")[0], ("",))[0]
    return f"{resource}.{group}" if group else resource


def details(resource: str, name: str) -> dict:
    d = {"name": name, "kind": resource}
    group = KINDS.get(resource, ("",))[0]
    if group:
        d["group"] = group
    return d


def not_found(resource: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{qualified(resource)} "{name}" not found', details(resource, name))


def conflict(resource: str, name: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {qualified(resource)} "{name}": '
                    "the object has been modified; please apply your changes to the latest version "
                    "and try again", details(resource, name))


def not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


def invalid(kind: str, name: str, field: str, value, why: str) -> ApiError:
    msg = f'{kind} "{name}" is invalid: {field}: Invalid value: {json.dumps(value)}: {why}'
    return ApiError(422, "Invalid", msg, {"name": name, "kind": kind, "causes": [
        {"reason": "FieldValueInvalid", "message": f"Invalid value: {json.dumps(value)}: {why}",
         "field": field}]})


def forbidden(verb: str, resource: str, name: str | None) -> ApiError:
    base = resource.split("/")[0]
    group = KINDS.get(base, ("",))[0]
    who = f'{qualified(base)} "{name}"' if name else qualified(base)
    msg = (f'{who} is forbidden: User "{USER}" cannot {verb} resource "{resource}" in API group '
           f'"{group}" in the namespace "{NS}"')
    return ApiError(403, "Forbidden", msg, details(base, name or ""))


# ---------------------------------------------------------------------------------------- patches
def merge_patch(target, patch):
    """RFC 7386 merge patch; strategic-merge directives ($patch, $setElementOrder/...) are dropped.

    Good enough for ConfigMaps and the Deployment fields kubectl touches (annotations, replicas):
    lists are replaced whole, `null` deletes a key."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc, ops):
    """RFC 6902: add, remove, replace, test, move, copy."""
    doc = copy.deepcopy(doc)

    def walk(parts):
        node = doc
        for p in parts[:-1]:
            node = node[int(p)] if isinstance(node, list) else node[p]
        return node, parts[-1]

    def get(path):
        node, last = walk(_pointer(path))
        return node[int(last)] if isinstance(node, list) else node[last]

    def put(path, value, replace=False):
        node, last = walk(_pointer(path))
        if isinstance(node, list):
            if last == "-":
                node.append(value)
            elif replace:
                node[int(last)] = value
            else:
                node.insert(int(last), value)
        else:
            if replace and last not in node:
                raise KeyError(last)
            node[last] = value

    def remove(path):
        node, last = walk(_pointer(path))
        return node.pop(int(last)) if isinstance(node, list) else node.pop(last)

    try:
        for op in ops:
            kind, path = op["op"], op["path"]
            if kind == "add":
                put(path, copy.deepcopy(op["value"]))
            elif kind == "remove":
                remove(path)
            elif kind == "replace":
                put(path, copy.deepcopy(op["value"]), replace=True)
            elif kind == "test":
                if get(path) != op["value"]:
                    raise ApiError(422, "Invalid", f"the server rejected our request due to an error "
                                   f"in our request: testing value {path} failed")
            elif kind in ("move", "copy"):
                value = remove(op["from"]) if kind == "move" else copy.deepcopy(get(op["from"]))
                put(path, value)
            else:
                raise ApiError(422, "Invalid", f"Unexpected kind: {kind}")
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our "
                       f"request: jsonpatch: {exc!r}") from None
    return doc


# --------------------------------------------------------------------------------------- selectors
def parse_label_selector(text: str | None) -> list[tuple[str, str, str | None]]:
    """`k=v,k==v,k!=v,k,!k` -> [(op, key, value)] ('in' sets are not needed by the lab's clients)."""
    terms = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        if "!=" in part:
            k, v = part.split("!=", 1)
            terms.append(("!=", k.strip(), v.strip()))
        elif "=" in part:
            k, v = part.replace("==", "=").split("=", 1)
            terms.append(("=", k.strip(), v.strip()))
        elif part.startswith("!"):
            terms.append(("!", part[1:].strip(), None))
        else:
            terms.append(("exists", part, None))
    return terms


def labels_match(labels: dict, terms) -> bool:
    for op, k, v in terms:
        if op == "=" and labels.get(k) != v:
            return False
        if op == "!=" and labels.get(k) == v:
            return False
        if op == "exists" and k not in labels:
            return False
        if op == "!" and k in labels:
            return False
    return True


def parse_field_selector(text: str | None) -> dict[str, str]:
    fields = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        k, _, v = part.replace("==", "=").partition("=")
        if k not in ("metadata.name", "metadata.namespace", "status.phase"):
            raise ApiError(400, "BadRequest", f'"{k}" is not a known field selector: only '
                           '"metadata.name", "metadata.namespace"')
        fields[k] = v
    return fields


def object_matches(obj: dict, terms, fields: dict) -> bool:
    meta = obj["metadata"]
    if not labels_match(meta.get("labels") or {}, terms):
        return False
    actual = {"metadata.name": meta["name"], "metadata.namespace": meta.get("namespace", NS),
              "status.phase": (obj.get("status") or {}).get("phase", "")}
    return all(actual[k] == v for k, v in fields.items())


# ----------------------------------------------------------------------------------------- seeds
def _flagd_template() -> dict:
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


def _service(name: str, ports: list[tuple[str, int]], ip: str) -> dict:
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


def load_flags(config: dict | None) -> tuple[dict | None, str | None]:
    """What flagd would load from the ConfigMap: (flags, None) or (None, why it cannot start)."""
    if config is None:
        return None, f'configmap "{CONFIGMAP}" not found'
    text = (config.get("data") or {}).get(CONFIG_KEY)
    if text is None:
        return None, f"open ./etc/flagd/{CONFIG_KEY}: no such file or directory"
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return None, f"unable to parse flag file: {exc}"
    if not isinstance(doc, dict) or not isinstance(doc.get("flags"), dict):
        return None, "unable to parse flag file: missing 'flags'"
    return doc["flags"], None


def evaluate(flags: dict, key: str) -> tuple[int, dict]:
    """An OFREP single-flag answer from a loaded flag set: (http status, body)."""
    flag = flags.get(key)
    if not isinstance(flag, dict):
        return 404, {"key": key, "errorCode": "FLAG_NOT_FOUND",
                     "errorDetails": f"flag `{key}` does not exist"}
    if flag.get("state") == "DISABLED":
        return 404, {"key": key, "errorCode": "FLAG_NOT_FOUND",
                     "errorDetails": f"flag `{key}` is disabled"}
    variants, default = flag.get("variants") or {}, flag.get("defaultVariant")
    if default not in variants:
        return 400, {"key": key, "errorCode": "GENERAL",
                     "errorDetails": f"flag `{key}`: defaultVariant `{default}` is not a variant"}
    reason = "DEFAULT" if flag.get("targeting") else "STATIC"  # targeting rules are not evaluated
    return 200, {"key": key, "value": variants[default], "variant": default, "reason": reason,
                 "metadata": {}}


# ---------------------------------------------------------------------------------------- cluster
class Cluster:
    """Objects of namespace `default`, their watch history, and a controller for flagd's pods."""

    def __init__(self, timings, flags_yaml_text: str, history: int = EVENT_HISTORY):
        self.timings = timings
        self._cond = threading.Condition(threading.RLock())
        self._objects: dict[str, dict[str, dict]] = {r: {} for r in KINDS}
        self._rv = 0
        self._events: deque = deque(maxlen=history)  # (rv, resource, type, object)
        self._timers: list = []  # heap of (due, seq, callback)
        self._seq = itertools.count()
        self._pod_flags: dict[str, dict] = {}  # pod uid -> flags it loaded when it started
        self._forbidden: set[tuple[str, str]] = set()
        self._services: dict[tuple[str, int], Callable[[Request], Response]] = {}
        self._stopped = False
        self._thread: threading.Thread | None = None
        #: called as fn(configmap_or_None) after every write of a ConfigMap (LocalLab keeps the flags)
        self.on_configmap_change: Callable[[dict | None], None] | None = None
        with self._cond:
            self._seed(flags_yaml_text)

    # ---- store ---------------------------------------------------------------------------------
    def _seed(self, flags_yaml_text: str) -> None:
        manifest = yaml.safe_load(flags_yaml_text)
        manifest.setdefault("metadata", {})["namespace"] = NS
        self._write("configmaps", manifest, "ADDED")
        deployment = {
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
                     "template": _flagd_template()},
            "status": {},
        }
        self._write("deployments", deployment, "ADDED")
        self._write("services", _service(FLAGD, [("rpc", 8013), ("ofrep", 8016)], "10.96.40.13"), "ADDED")
        self._write("services", _service("frontend-proxy", [("tcp-service", 8080)], "10.96.80.80"), "ADDED")
        # the lab starts with flagd already running: its first pod is Ready with the seed flags
        pod = self._create_pod(self._objects["deployments"][FLAGD])
        self._start_pod(pod["metadata"]["name"], pod["metadata"]["uid"])
        self._reconcile()

    def _write(self, resource: str, obj: dict, event: str) -> dict:
        """Store (or delete) an object under a new resourceVersion and record its watch event."""
        group, api_version, kind = KINDS[resource]
        self._rv += 1
        obj["kind"], obj["apiVersion"] = kind, api_version
        meta = obj["metadata"]
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

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "Cluster":
        self._thread = threading.Thread(target=self._run, name="labkit-kube-controller", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()  # ends watch streams and the controller
        if self._thread:
            self._thread.join(timeout=5)

    @property
    def stopped(self) -> bool:
        return self._stopped

    def _schedule(self, delay: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), callback))
        self._cond.notify_all()

    def _run(self) -> None:
        """The controller: fire due pod transitions, reconcile, sleep until the next change or timer."""
        with self._cond:
            while not self._stopped:
                try:
                    while self._timers and self._timers[0][0] <= time.monotonic():
                        heapq.heappop(self._timers)[2]()
                    self._reconcile()
                except Exception:  # a sandbox bug must not freeze the lab's pods silently
                    log.exception("local lab: the flagd controller failed a step")
                timeout = self._timers[0][0] - time.monotonic() if self._timers else None
                self._cond.wait(timeout)

    # ---- knobs for LocalLab and tests ------------------------------------------------------------
    def register_service(self, name: str, port: int, app: Callable[[Request], Response]) -> None:
        with self._cond:
            self._services[(name, int(port))] = app
            if name not in self._objects["services"]:
                self._write("services", _service(name, [("http", int(port))], "10.96.90.90"), "ADDED")

    def service_app(self, name: str, port: int) -> Callable[[Request], Response] | None:
        with self._cond:
            return self._services.get((name, port))

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

    def flagd_value(self, flag_key: str) -> dict | None:
        """What a Ready flagd pod serves for a flag (OFREP body), or None if none is Ready/unknown."""
        try:
            status, body = self.ofrep(flag_key)
        except ApiError:  # no Ready flagd pod: the service has no endpoints
            return None
        if status != 200:
            return None
        return {k: body[k] for k in ("key", "value", "variant", "reason")}

    def ofrep(self, flag_key: str | None) -> tuple[int, dict]:
        """Answer OFREP from a serving flagd pod; 503 Status when the service has no endpoints."""
        with self._cond:
            flags = self._serving_flags()
            if flags is None:
                raise ApiError(503, "ServiceUnavailable", f'no endpoints available for service "{FLAGD}"')
            if flag_key is None:
                return 200, {"flags": [evaluate(flags, k)[1] for k in flags]}
            return evaluate(flags, flag_key)

    def _serving_flags(self) -> dict | None:
        for pod in sorted(self._objects["pods"].values(), key=lambda p: p["metadata"]["creationTimestamp"]):
            if self._is_ready(pod) and not pod["metadata"].get("deletionTimestamp"):
                return self._pod_flags.get(pod["metadata"]["uid"])
        return None

    # ---- pods --------------------------------------------------------------------------------------
    @staticmethod
    def _is_ready(pod: dict) -> bool:
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for c in pod["status"].get("conditions", []))

    @staticmethod
    def _template_hash(deployment: dict) -> str:
        template = json.dumps(deployment["spec"]["template"], sort_keys=True).encode()
        return safe_name(template, 10)

    def _create_pod(self, deployment: dict) -> dict:
        template = copy.deepcopy(deployment["spec"]["template"])
        pod_hash = self._template_hash(deployment)
        rs_name = f"{FLAGD}-{pod_hash}"
        name = f"{rs_name}-{random_suffix()}"
        labels = dict(template["metadata"].get("labels") or {}, **{"pod-template-hash": pod_hash})
        metadata = {"name": name, "generateName": f"{rs_name}-", "labels": labels,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name,
                                         "uid": str(uuid.UUID(bytes=hashlib.md5(rs_name.encode()).digest())),
                                         "controller": True, "blockOwnerDeletion": True}]}
        if template["metadata"].get("annotations"):
            metadata["annotations"] = dict(template["metadata"]["annotations"])
        spec = dict(template["spec"], nodeName="labkit-local-control-plane")
        now = now_rfc3339()
        status = {
            "phase": "Pending", "hostIP": "172.18.0.2", "podIP": f"10.244.0.{secrets.randbelow(200) + 20}",
            "startTime": now, "qosClass": "Burstable",
            "conditions": self._conditions(now, initialized=False, ready=False),
            "initContainerStatuses": [self._container_status("init-config", "busybox", waiting="PodInitializing")],
            "containerStatuses": [self._container_status(FLAGD, FLAGD_IMAGE, waiting="PodInitializing")],
        }
        pod = self._write("pods", {"metadata": metadata, "spec": spec, "status": status}, "ADDED")
        uid = pod["metadata"]["uid"]
        self._schedule(self.timings.pod_start, lambda: self._start_pod(name, uid))
        return pod

    @staticmethod
    def _conditions(now: str, initialized: bool, ready: bool) -> list:
        def cond(kind, ok, reason="", message=""):
            c = {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None,
                 "lastTransitionTime": now}
            if not ok:
                c.update(reason=reason, message=message)
            return c
        unready = ("ContainersNotReady", f"containers with unready status: [{FLAGD}]")
        return [cond("PodReadyToStartContainers", True),
                cond("Initialized", initialized, "ContainersNotInitialized",
                     "containers with incomplete status: [init-config]"),
                cond("Ready", ready, *unready), cond("ContainersReady", ready, *unready),
                cond("PodScheduled", True)]

    @staticmethod
    def _container_status(name: str, image: str, waiting: str | None = None, running_since: str | None = None,
                          terminated: dict | None = None, restarts: int = 0, last: dict | None = None) -> dict:
        status = {"name": name, "image": image, "imageID": "", "ready": running_since is not None,
                  "restartCount": restarts, "started": running_since is not None}
        if waiting:
            status["state"] = {"waiting": {"reason": waiting}}
        elif terminated:
            status["state"] = {"terminated": terminated}
        else:
            status["state"] = {"running": {"startedAt": running_since}}
        if running_since or terminated or last:
            status["imageID"] = f"{image.split(':')[0]}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"
            status["containerID"] = f"containerd://{secrets.token_hex(32)}"
        status["lastState"] = last or {}
        return status

    def _start_pod(self, name: str, uid: str) -> None:
        """The init container copies the flag file NOW; flagd then parses it or crash-loops."""
        pod = self._objects["pods"].get(name)
        if (pod is None or pod["metadata"]["uid"] != uid or pod["metadata"].get("deletionTimestamp")
                or pod["status"]["phase"] != "Pending"):
            return
        pod = copy.deepcopy(pod)
        now = now_rfc3339()
        flags, error = load_flags(self._objects["configmaps"].get(CONFIGMAP))
        status = pod["status"]
        status["phase"] = "Running"
        done = {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now,
                "containerID": f"containerd://{secrets.token_hex(32)}"}
        status["initContainerStatuses"] = [self._container_status("init-config", "busybox", terminated=done)]
        status["initContainerStatuses"][0]["ready"] = True
        if flags is not None:
            self._pod_flags[uid] = flags
            status["conditions"] = self._conditions(now, initialized=True, ready=True)
            status["containerStatuses"] = [self._container_status(FLAGD, FLAGD_IMAGE, running_since=now)]
        else:  # flagd exits at start; the kubelet backs off restarting it
            crashed = {"exitCode": 1, "reason": "Error", "message": error, "startedAt": now, "finishedAt": now,
                       "containerID": f"containerd://{secrets.token_hex(32)}"}
            status["conditions"] = self._conditions(now, initialized=True, ready=False)
            status["containerStatuses"] = [self._container_status(
                FLAGD, FLAGD_IMAGE, waiting="CrashLoopBackOff", restarts=1, last={"terminated": crashed})]
            status["containerStatuses"][0]["state"]["waiting"]["message"] = (
                f"back-off 10s restarting failed container={FLAGD} pod={name}")
        self._write("pods", pod, "MODIFIED")

    def _terminate_pod(self, pod: dict) -> dict:
        """Graceful deletion: the pod shows Terminating for pod_terminate seconds, then it is gone."""
        if pod["metadata"].get("deletionTimestamp"):
            return pod
        pod = copy.deepcopy(pod)
        pod["metadata"]["deletionTimestamp"] = now_rfc3339(time.time() + 30)
        pod["metadata"]["deletionGracePeriodSeconds"] = 30
        name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
        self._schedule(self.timings.pod_terminate, lambda: self._remove_pod(name, uid))
        return self._write("pods", pod, "MODIFIED")

    def _remove_pod(self, name: str, uid: str) -> None:
        pod = self._objects["pods"].get(name)
        if pod is not None and pod["metadata"]["uid"] == uid:
            self._pod_flags.pop(uid, None)
            self._write("pods", copy.deepcopy(pod), "DELETED")

    # ---- the deployment controller -------------------------------------------------------------
    def _reconcile(self) -> None:
        """Bring flagd's pods to spec.replicas of the current template, rolling old ones out."""
        deployment = self._objects["deployments"].get(FLAGD)
        if deployment is None:
            return
        want = deployment["spec"]["replicas"]
        current = self._template_hash(deployment)
        live = [p for p in self._objects["pods"].values()
                if labels_match(p["metadata"]["labels"], [("=", k, v) for k, v in SELECTOR.items()])
                and not p["metadata"].get("deletionTimestamp")]
        new = sorted((p for p in live if p["metadata"]["labels"].get("pod-template-hash") == current),
                     key=lambda p: (self._is_ready(p), p["metadata"]["creationTimestamp"]))
        old = [p for p in live if p not in new]
        for _ in range(want - len(new)):
            new.append(self._create_pod(deployment))
        for pod in new[:max(0, len(new) - want)]:  # not-ready ones go first
            self._terminate_pod(pod)
        new = new[max(0, len(new) - want):]
        # rolling update: an old pod goes only once enough pods stay available (maxUnavailable 25%)
        min_available = want - int(want * 0.25)
        ready = sum(self._is_ready(p) for p in new + old)
        for pod in sorted(old, key=self._is_ready):
            if not self._is_ready(pod) or ready - 1 >= min_available:
                ready -= self._is_ready(pod)
                self._terminate_pod(pod)
                old.remove(pod)
        self._update_deployment_status(deployment, new, old, current, min_available)

    def _update_deployment_status(self, deployment, new, old, current, min_available) -> None:
        want = deployment["spec"]["replicas"]
        available = sum(self._is_ready(p) for p in new + old)
        done = len(new) == want and not old and available == want
        rs = f"{FLAGD}-{current}"
        status = {"observedGeneration": deployment["metadata"]["generation"],
                  "replicas": len(new) + len(old), "updatedReplicas": len(new),
                  "readyReplicas": available, "availableReplicas": available}
        if want - available > 0:
            status["unavailableReplicas"] = want - available
        conditions = [
            ("Available", available >= min_available,
             "MinimumReplicasAvailable" if available >= min_available else "MinimumReplicasUnavailable",
             "Deployment has minimum availability." if available >= min_available
             else "Deployment does not have minimum availability."),
            ("Progressing", True, "NewReplicaSetAvailable" if done else "ReplicaSetUpdated",
             f'ReplicaSet "{rs}" has successfully progressed.' if done else f'ReplicaSet "{rs}" is progressing.'),
        ]
        old_status = deployment.get("status") or {}
        old_conds = {c["type"]: c for c in old_status.get("conditions", [])}
        now = now_rfc3339()
        status["conditions"] = []
        for kind, ok, reason, message in conditions:
            prev = old_conds.get(kind, {})
            flag = "True" if ok else "False"
            same = prev.get("status") == flag and prev.get("reason") == reason
            status["conditions"].append({
                "type": kind, "status": flag, "reason": reason, "message": message,
                "lastUpdateTime": prev["lastUpdateTime"] if same else now,
                "lastTransitionTime": prev["lastTransitionTime"] if prev.get("status") == flag else now})
        if status != old_status:
            updated = copy.deepcopy(deployment)
            updated["status"] = status
            self._write("deployments", updated, "MODIFIED")

    # ---- API operations (called by the HTTP front; all under the store lock) --------------------
    def list(self, resource: str, label_selector: str | None, field_selector: str | None) -> tuple[list, str]:
        terms, fields = parse_label_selector(label_selector), parse_field_selector(field_selector)
        with self._cond:
            items = [copy.deepcopy(o) for o in self._objects[resource].values()
                     if object_matches(o, terms, fields)]
            return sorted(items, key=lambda o: o["metadata"]["name"]), str(self._rv)

    def resource_version(self) -> str:
        with self._cond:
            return str(self._rv)

    def get(self, resource: str, name: str) -> dict:
        with self._cond:
            return copy.deepcopy(self._get(resource, name))

    def create(self, resource: str, body: dict, dry_run: bool = False) -> dict:
        if resource != "configmaps":
            raise not_allowed()
        with self._cond:
            name = (body.get("metadata") or {}).get("name")
            if not name:
                raise ApiError(422, "Invalid", 'ConfigMap "" is invalid: metadata.name: Required value: name or '
                               "generateName is required", {"kind": "ConfigMap", "causes": [
                                   {"reason": "FieldValueRequired", "message": "Required value: name or "
                                    "generateName is required", "field": "metadata.name"}]})
            if name in self._objects[resource]:
                raise ApiError(409, "AlreadyExists", f'configmaps "{name}" already exists', details(resource, name))
            obj = copy.deepcopy(body)
            for key in ("uid", "resourceVersion", "creationTimestamp", "generation"):
                obj["metadata"].pop(key, None)
            obj["metadata"]["namespace"] = NS
            self._validate(resource, obj)
            return copy.deepcopy(obj) if dry_run else copy.deepcopy(self._write(resource, obj, "ADDED"))

    def replace(self, resource: str, name: str, body: dict, dry_run: bool = False) -> dict:
        with self._cond:
            live = self._get(resource, name)
            meta = body.get("metadata") or {}
            if meta.get("name", name) != name:
                raise ApiError(400, "BadRequest", f"the name of the object ({meta.get('name')}) does not match "
                               f"the name on the URL ({name})")
            if meta.get("resourceVersion") and meta["resourceVersion"] != live["metadata"]["resourceVersion"]:
                raise conflict(resource, name)
            obj = copy.deepcopy(body)
            obj.setdefault("metadata", {})["name"] = name
            return self._store_update(resource, live, obj, dry_run)

    def patch(self, resource: str, name: str, content_type: str, patch, dry_run: bool = False) -> tuple[dict, int]:
        """Apply a patch; server-side apply (apply-patch+yaml) creates an absent object (201)."""
        with self._cond:
            live = self._objects[resource].get(name)
            if live is None:
                if content_type.startswith("application/apply-patch") and resource == "configmaps":
                    body = dict(patch, metadata=dict(patch.get("metadata") or {}, name=name))
                    return self.create(resource, body, dry_run), 201
                raise not_found(resource, name)
            obj = self._patched(live, content_type, patch)
            rv = (patch.get("metadata") or {}).get("resourceVersion") if isinstance(patch, dict) else None
            if rv and rv != live["metadata"]["resourceVersion"]:
                raise conflict(resource, name)
            return self._store_update(resource, live, obj, dry_run), 200

    @staticmethod
    def _patched(live: dict, content_type: str, patch):
        if content_type.startswith("application/json-patch+json"):
            if not isinstance(patch, list):
                raise ApiError(400, "BadRequest", "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
            return json_patch(live, patch)
        if not isinstance(patch, dict):
            raise ApiError(400, "BadRequest",
                           "json: cannot unmarshal array into Go value of type map[string]interface {}")
        return merge_patch(live, patch)

    def _store_update(self, resource: str, live: dict, obj: dict, dry_run: bool) -> dict:
        """Keep what clients cannot change, validate, bump generation on spec changes, write if changed."""
        meta, live_meta = obj.setdefault("metadata", {}), live["metadata"]
        for key in ("name", "namespace", "uid", "creationTimestamp", "resourceVersion", "generation",
                    "deletionTimestamp", "ownerReferences"):
            if key in live_meta:
                meta[key] = live_meta[key]
            else:
                meta.pop(key, None)
        if resource in ("deployments", "pods"):
            obj["status"] = copy.deepcopy(live.get("status"))  # status is a subresource
        if resource == "deployments" and obj.get("spec") != live.get("spec"):
            meta["generation"] = live_meta["generation"] + 1
            if obj["spec"].get("template") != live["spec"].get("template"):
                revision = int((live_meta.get("annotations") or {}).get("deployment.kubernetes.io/revision", "1"))
                meta.setdefault("annotations", {})["deployment.kubernetes.io/revision"] = str(revision + 1)
        self._validate(resource, obj)
        if obj == live or dry_run:  # a no-op write keeps its resourceVersion, like the apiserver
            return copy.deepcopy(obj)
        return copy.deepcopy(self._write(resource, obj, "MODIFIED"))

    @staticmethod
    def _validate(resource: str, obj: dict) -> None:
        name = obj["metadata"].get("name", "")
        if resource == "configmaps":
            for key, value in (obj.get("data") or {}).items():
                if not isinstance(value, str):
                    raise ApiError(400, "BadRequest", f"json: cannot unmarshal {type(value).__name__} into Go "
                                   "struct field ConfigMap.data of type string")
        if resource == "deployments":
            replicas = obj.get("spec", {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise invalid("Deployment.apps", name, "spec.replicas", replicas,
                              "must be greater than or equal to 0")
        for key in ("labels", "annotations"):
            for k, v in (obj["metadata"].get(key) or {}).items():
                if not isinstance(v, str):
                    raise ApiError(400, "BadRequest", f"json: cannot unmarshal {type(v).__name__} into Go struct "
                                   f"field ObjectMeta.metadata.{key} of type string")

    def delete(self, resource: str, name: str) -> dict:
        with self._cond:
            live = self._get(resource, name)
            if resource == "pods":  # the deployment controller then makes a replacement
                return copy.deepcopy(self._terminate_pod(live))
            if resource != "configmaps":
                raise not_allowed()
            self._write(resource, copy.deepcopy(live), "DELETED")
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": details(resource, name)}

    def scale(self, name: str) -> dict:
        with self._cond:
            d = self._get("deployments", name)
            return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                    "metadata": {k: d["metadata"][k] for k in ("name", "namespace", "uid", "resourceVersion",
                                                               "creationTimestamp")},
                    "spec": {"replicas": d["spec"]["replicas"]},
                    "status": {"replicas": (d.get("status") or {}).get("replicas", 0),
                               "selector": ",".join(f"{k}={v}" for k, v in SELECTOR.items())}}

    def set_scale(self, name: str, content_type: str | None, body) -> dict:
        with self._cond:
            scale = self.scale(name)
            new = self._patched(scale, content_type, body) if content_type else body
            replicas = (new.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise invalid("Scale.autoscaling", name, "spec.replicas", replicas,
                              "must be greater than or equal to 0")
            rv = (new.get("metadata") or {}).get("resourceVersion")
            if content_type is None and rv and rv != scale["metadata"]["resourceVersion"]:
                raise conflict("deployments", name)
            d = copy.deepcopy(self._get("deployments", name))
            d["spec"]["replicas"] = replicas
            self._store_update("deployments", self._get("deployments", name), d, dry_run=False)
            return self.scale(name)

    # ---- watch ---------------------------------------------------------------------------------
    def watch(self, resource: str, label_selector: str | None, field_selector: str | None,
              resource_version: str | None, timeout: float, bookmarks: bool) -> Iterator[tuple[str, dict]]:
        """(type, object) events after resource_version until timeout, a hangup or stop()."""
        terms, fields = parse_label_selector(label_selector), parse_field_selector(field_selector)
        deadline = time.monotonic() + timeout
        expired = False
        with self._cond:
            if resource_version in (None, "", "0"):
                since = self._rv
                pending = [("ADDED", copy.deepcopy(o)) for o in sorted(
                    self._objects[resource].values(), key=lambda o: o["metadata"]["name"])
                    if object_matches(o, terms, fields)]
            else:
                since = int(resource_version)
                oldest = self._events[0][0] - 1 if self._events else self._rv
                pending = []
                expired = since < oldest  # compacted away: the client must relist
                if expired:
                    pending = [("ERROR", {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                          "status": "Failure", "reason": "Expired", "code": 410,
                                          "message": f"too old resource version: {since} ({oldest})"})]
        last_bookmark = time.monotonic()
        while True:
            yield from pending
            if expired:
                return
            with self._cond:
                while True:
                    if self._stopped or time.monotonic() >= deadline:
                        return
                    events = [e for e in self._events if e[0] > since]
                    if events:
                        break
                    if bookmarks and time.monotonic() - last_bookmark >= 60:
                        break
                    self._cond.wait(min(deadline - time.monotonic(), 60.0))
                pending = [(kind, obj) for rv, res, kind, obj in events
                           if res == resource and object_matches(obj, terms, fields)]
                if events:
                    since = events[-1][0]
                elif bookmarks:
                    last_bookmark = time.monotonic()
                    _, api_version, kind = KINDS[resource]
                    pending = [("BOOKMARK", {"kind": kind, "apiVersion": api_version,
                                             "metadata": {"resourceVersion": str(self._rv)}})]
                    since = self._rv


# ------------------------------------------------------------------------------------------ tables
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


# --------------------------------------------------------------------------------------- discovery
def _resource(name, kind, short=(), verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
              group=None, version=None):
    r = {"name": name, "singularName": "" if "/" in name else kind.lower(), "namespaced": True, "kind": kind,
         "verbs": list(verbs)}
    if short:
        r["shortNames"] = list(short)
    if group is not None:
        r.update(group=group, version=version)
    if kind in ("Pod", "Service", "Deployment"):
        r["categories"] = ["all"]
    return r


DISCOVERY = {
    "/api": {"kind": "APIVersions", "versions": ["v1"]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
         "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        _resource("configmaps", "ConfigMap", ["cm"], ("create", "delete", "get", "list", "patch", "update", "watch")),
        _resource("pods", "Pod", ["po"], ("create", "delete", "get", "list", "patch", "update", "watch")),
        _resource("services", "Service", ["svc"], ("get", "list", "watch")),
        _resource("services/proxy", "ServiceProxyOptions", (), ("create", "delete", "get", "patch", "update")),
    ]},
    "/apis/apps/v1": {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1", "resources": [
        _resource("deployments", "Deployment", ["deploy"], ("get", "list", "patch", "update", "watch")),
        _resource("deployments/scale", "Scale", (), ("get", "patch", "update"), "autoscaling", "v1"),
    ]},
    "/version": {"major": "1", "minor": "32", "gitVersion": "v1.32.4", "gitCommit": "labkit-local-lab",
                 "gitTreeState": "clean", "buildDate": "2025-04-22T00:00:00Z", "goVersion": "go1.23.8",
                 "compiler": "gc", "platform": "linux/amd64"},
}


def _openapi_patch(path: str, group: str, kind: str) -> dict:
    # kubectl apply looks for a PATCH op with a fieldValidation query parameter, then validates server-side
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.4"}, "paths": {path: {"patch": {
        "x-kubernetes-group-version-kind": {"group": group, "version": "v1", "kind": kind},
        "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}]}}}}


OPENAPI = {
    "/openapi/v3": {"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1"},
                              "apis/apps/v1": {"serverRelativeURL": "/openapi/v3/apis/apps/v1"}}},
    "/openapi/v3/api/v1": _openapi_patch("/api/v1/namespaces/{namespace}/configmaps/{name}", "", "ConfigMap"),
    "/openapi/v3/apis/apps/v1": _openapi_patch("/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
                                               "apps", "Deployment"),
}


# -------------------------------------------------------------------------------------------- HTTP
VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
PATCH_TYPES = ("application/strategic-merge-patch+json", "application/merge-patch+json",
               "application/json-patch+json", "application/apply-patch+yaml")


def status_response(err: ApiError) -> Response:
    return json_response(err.status(), err.code)


def _is_true(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _body(req: Request, patch: bool = False):
    """Decode a request body: no Content-Type means JSON (python client); protobuf is refused."""
    ctype = req.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if patch and ctype not in PATCH_TYPES:
        raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted "
                       f"media types include: {', '.join(PATCH_TYPES)}")
    if not patch and ctype not in ("application/json", "application/yaml", ""):
        raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted "
                       "media types include: application/json, application/yaml")
    try:
        return (yaml.safe_load if "yaml" in ctype else json.loads)(req.body.decode() or "null"), ctype
    except (ValueError, yaml.YAMLError) as exc:
        raise ApiError(400, "BadRequest", f"the body of the request could not be decoded: {exc}") from None


def app(cluster: Cluster) -> Callable[[Request], Response]:
    """The API server front: routing, content negotiation, Tables and watch streams."""

    def handle(req: Request) -> Response:
        try:
            return route(req)
        except ApiError as err:
            return status_response(err)

    def route(req: Request) -> Response:
        path = req.path.rstrip("/") or "/"
        if req.method == "GET" and path in DISCOVERY:
            return json_response(DISCOVERY[path])
        if req.method == "GET" and path in OPENAPI:
            return json_response(OPENAPI[path])
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "v1"]:
            rest = parts[2:]
        elif parts[:3] == ["apis", "apps", "v1"]:
            rest = parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace = None
        if len(rest) >= 2 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest or rest[0] not in KINDS or (KINDS[rest[0]][1] == "apps/v1") != (parts[0] == "apis"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resource, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), rest[2:]
        if namespace not in (None, NS):  # other namespaces exist but hold nothing of the lab's
            if name:
                raise not_found(resource, name)
            return json_response(empty_list(resource, cluster))
        if resource == "services" and name and sub[:1] == ["proxy"]:
            return proxy(req, name, "/".join(sub[1:]))
        if sub:
            if resource == "deployments" and sub == ["scale"]:
                return scale(req, name)
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return crud(req, resource, name)

    def crud(req: Request, resource: str, name: str | None) -> Response:
        dry_run = bool(req.query.get("dryRun"))
        watch = _is_true(req.query.get("watch"))
        verb = ("watch" if watch else "list") if req.method == "GET" and not name else VERBS.get(req.method)
        if verb is None:
            raise not_allowed()
        cluster.check(verb, resource, name)
        want_table = "as=Table" in req.headers.get("accept", "")
        if req.method == "GET" and name is None:
            if watch:
                return watch_response(req, resource, want_table)
            items, rv = cluster.list(resource, req.query.get("labelSelector"), req.query.get("fieldSelector"))
            if want_table:
                return json_response(table(resource, items, rv))
            kind = KINDS[resource][2]
            return json_response({"kind": f"{kind}List", "apiVersion": KINDS[resource][1],
                                  "metadata": {"resourceVersion": rv}, "items": items})
        if req.method == "GET":
            obj = cluster.get(resource, name)
            return json_response(table(resource, [obj], obj["metadata"]["resourceVersion"]) if want_table else obj)
        if req.method == "POST" and name is None:
            body, _ = _body(req)
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the body of the request must be an object")
            return json_response(cluster.create(resource, body, dry_run), 201)
        if name is None:
            raise not_allowed()
        if req.method == "PUT":
            body, _ = _body(req)
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the body of the request must be an object")
            return json_response(cluster.replace(resource, name, body, dry_run))
        if req.method == "PATCH":
            body, ctype = _body(req, patch=True)
            obj, code = cluster.patch(resource, name, ctype, body, dry_run)
            return json_response(obj, code)
        if req.method == "DELETE":
            return json_response(cluster.delete(resource, name))
        raise not_allowed()

    def scale(req: Request, name: str) -> Response:
        cluster.check(VERBS.get(req.method, req.method.lower()), "deployments/scale", name)
        if req.method == "GET":
            return json_response(cluster.scale(name))
        if req.method == "PATCH":
            body, ctype = _body(req, patch=True)
            return json_response(cluster.set_scale(name, ctype, body))
        if req.method == "PUT":
            body, _ = _body(req)
            return json_response(cluster.set_scale(name, None, body))
        raise not_allowed()

    def watch_response(req: Request, resource: str, want_table: bool) -> Response:
        if cluster.stopped:  # a clean error, not an empty stream a client would reconnect to at once
            raise ApiError(503, "ServiceUnavailable", "the local lab's Kubernetes API has stopped")
        timeout = min(float(req.query.get("timeoutSeconds") or MAX_WATCH_SECONDS), MAX_WATCH_SECONDS)
        label, field = req.query.get("labelSelector"), req.query.get("fieldSelector")
        parse_label_selector(label), parse_field_selector(field)  # a bad selector is a 400, not a stream
        rv = req.query.get("resourceVersion")
        if rv and not rv.isdigit():
            raise ApiError(400, "BadRequest", f'invalid resource version "{rv}"')
        events = cluster.watch(resource, label, field, rv, timeout,
                               _is_true(req.query.get("allowWatchBookmarks")))

        def lines() -> Iterator[bytes]:
            try:
                for kind, obj in events:
                    if want_table and kind in ("ADDED", "MODIFIED", "DELETED"):
                        obj = table(resource, [obj], obj["metadata"]["resourceVersion"])
                    yield json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"
            finally:
                events.close()

        return Response(200, lines(), "application/json")

    def proxy(req: Request, target: str, rest: str) -> Response:
        """The service proxy: flagd's OFREP is built in; registered apps get the request forwarded."""
        pieces = target.split(":")  # name, name:port or scheme:name:port
        name, port = (pieces[-2], pieces[-1]) if len(pieces) > 1 else (target, "")
        cluster.check(VERBS.get(req.method, "get"), "services/proxy", name)
        service = cluster.get("services", name)
        ports = service["spec"]["ports"]
        match = [p for p in ports if not port or str(p["port"]) == port or p.get("name") == port]
        if not match:
            raise ApiError(503, "ServiceUnavailable", f'no endpoints available for service "{target}"')
        number = match[0]["port"]
        if name == FLAGD:
            return flagd_proxy(req, number, rest)
        target_app = cluster.service_app(name, number)
        if target_app is None:
            raise ApiError(503, "ServiceUnavailable", f'no endpoints available for service "{name}"')
        headers = {k: v for k, v in req.headers.items() if k != "authorization"}  # the apiserver drops them
        return target_app(Request(req.method, "/" + rest, dict(req.query), headers, req.body))

    def flagd_proxy(req: Request, port: int, rest: str) -> Response:
        single = "ofrep/v1/evaluate/flags/"
        if port == 8016 and req.method == "POST" and rest.startswith(single) and rest != single:
            status, body = cluster.ofrep(rest[len(single):])
            return json_response(body, status)
        if port == 8016 and req.method == "POST" and rest.rstrip("/") == "ofrep/v1/evaluate/flags":
            status, body = cluster.ofrep(None)
            return json_response(body, status)
        cluster.ofrep("")  # raises the apiserver's 503 when no flagd pod is Ready, whatever the path
        return Response(404, "404 page not found\n", "text/plain; charset=utf-8")

    return handle


def empty_list(resource: str, cluster: Cluster) -> dict:
    _, api_version, kind = KINDS[resource]
    return {"kind": f"{kind}List", "apiVersion": api_version,
            "metadata": {"resourceVersion": cluster.resource_version()}, "items": []}
