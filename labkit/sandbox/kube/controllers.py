"""The cluster around the store: flagd's deployment controller, a kubelet for its pods, service endpoints.

Truths kept on purpose, because the workbook teaches them:
- a flagd pod loads `demo.flagd.json` from the ConfigMap when it STARTS (the chart's init container
  copies it once), so a ConfigMap edit reaches flagd only through a restart;
- a flag file flagd cannot parse leaves the new pod Ready serving no flags (flagd logs "error setting
  state" and runs on); with no file to copy at all it crash-loops instead of becoming Ready;
- a scale-down leaves pods Terminating for a while before they are gone.
"""
from __future__ import annotations

import copy
import hashlib
import heapq
import itertools
import json
import logging
import secrets
import threading
import time
import uuid
from typing import Callable

from labkit.sandbox import flagd
from labkit.sandbox.http import Request, Response
from labkit.sandbox.kube.seed import CONFIGMAP, FLAGD, FLAGD_IMAGE, SELECTOR, initial_objects, service
from labkit.sandbox.kube.selectors import labels_match
from labkit.sandbox.kube.store import EVENT_HISTORY, Store, now_rfc3339

log = logging.getLogger(__name__)
HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the apiserver's "safe" alphabet for generated names
MAX_UNAVAILABLE = 0.25  # the Deployment's rolling update: 25% of the replicas may be down
App = Callable[[Request], Response]


def safe_name(seed: bytes, n: int) -> str:
    digest = hashlib.sha256(seed).digest()
    return "".join(HASH_ALPHABET[b % len(HASH_ALPHABET)] for b in digest[:n])


def random_suffix(n: int = 5) -> str:
    return "".join(secrets.choice(HASH_ALPHABET) for _ in range(n))


def _container_id() -> str:
    return f"containerd://{secrets.token_hex(32)}"


class LocalCluster(Store):
    """Namespace `default` with flagd running: the store plus the controllers that move its pods."""

    def __init__(self, timings, flags_yaml_text: str, history: int = EVENT_HISTORY):
        super().__init__(history)
        self.timings = timings
        self._timers: list = []  # heap of (due, seq, callback)
        self._seq = itertools.count()
        self._pod_flags: dict[str, flagd.FlagSet] = {}  # pod uid -> flags it loaded when it started
        self._leaving: set[str] = set()  # uids of Terminating pods the kubelet is stopping
        self._services: dict[tuple[str, int], App] = {}
        self._thread: threading.Thread | None = None
        with self._cond:
            for resource, obj in initial_objects(flags_yaml_text):
                self._write(resource, obj, "ADDED")
            # the lab starts with flagd already running: its first pod is Ready with the seed flags
            pod = self._create_pod(self._objects["deployments"][FLAGD])
            self._start_pod(pod["metadata"]["name"], pod["metadata"]["uid"])
            self._control()

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "LocalCluster":
        self._thread = threading.Thread(target=self._run, name="labkit-kube-controller", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        super().stop()
        if self._thread:
            self._thread.join(timeout=5)

    def _schedule(self, delay: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), callback))
        self._cond.notify_all()

    def _run(self) -> None:
        """Fire due pod transitions, reconcile, sleep until the next change or timer."""
        with self._cond:
            while not self._stopped:
                try:
                    while self._timers and self._timers[0][0] <= time.monotonic():
                        heapq.heappop(self._timers)[2]()
                    self._control()
                except Exception:  # a sandbox bug must not freeze the lab's pods silently
                    log.exception("local lab: the flagd controller failed a step")
                timeout = self._timers[0][0] - time.monotonic() if self._timers else None
                self._cond.wait(timeout)

    def _control(self) -> None:
        self._reconcile()
        self._stop_terminating_pods()

    # ---- service endpoints (knobs for LocalLab and tests) ---------------------------------------
    def register_service(self, name: str, port: int, app: App) -> None:
        """Let the service proxy forward `name:port` to an app of the local lab (the shop)."""
        with self._cond:
            self._services[(name, int(port))] = app
            if name not in self._objects["services"]:
                self._write("services", service(name, [("http", int(port))], "10.96.90.90"), "ADDED")

    def service_app(self, name: str, port: int) -> App | None:
        with self._cond:
            return self._services.get((name, port))

    def flagd_flags(self) -> flagd.FlagSet | None:
        """The flags of the pod flagd's Service sends to (the oldest Ready one), None if it has no endpoints."""
        with self._cond:
            for pod in sorted(self._objects["pods"].values(), key=lambda p: p["metadata"]["creationTimestamp"]):
                if self._is_ready(pod) and not pod["metadata"].get("deletionTimestamp"):
                    return self._pod_flags.get(pod["metadata"]["uid"])
            return None

    def pod_flags(self, name: str) -> flagd.FlagSet | None:
        """The flags a Ready flagd pod loaded at its start; None for any other pod or state."""
        with self._cond:
            pod = self._objects["pods"].get(name)
            if pod is None or not self._is_ready(pod) or pod["metadata"].get("deletionTimestamp"):
                return None
            return self._pod_flags.get(pod["metadata"]["uid"])

    def flagd_value(self, flag_key: str, context: dict | None = None) -> dict | None:
        """What a Ready flagd pod serves for a flag in `context` (OFREP body), None if none is Ready/unknown."""
        flags = self.flagd_flags()
        return None if flags is None else flagd.flag_value(flags, flag_key, context)

    # ---- pods ----------------------------------------------------------------------------------
    @staticmethod
    def _is_ready(pod: dict) -> bool:
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for c in pod["status"].get("conditions", []))

    @staticmethod
    def _template_hash(deployment: dict) -> str:
        template = json.dumps(deployment["spec"]["template"], sort_keys=True).encode()
        return safe_name(template, 10)

    def _create_pod(self, deployment: dict) -> dict:
        """A new Pending pod of the deployment's current template (its ReplicaSet's name and hash)."""
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
            "conditions": pod_conditions(now, initialized=False, ready=False),
            "initContainerStatuses": [container_status("init-config", "busybox", waiting="PodInitializing")],
            "containerStatuses": [container_status(FLAGD, FLAGD_IMAGE, waiting="PodInitializing")],
        }
        pod = self._write("pods", {"metadata": metadata, "spec": spec, "status": status}, "ADDED")
        uid = pod["metadata"]["uid"]
        self._schedule(self.timings.pod_start, lambda: self._start_pod(name, uid))
        return pod

    def _flag_file(self) -> tuple[flagd.FlagSet | None, str | None]:
        """What the init container copies from the ConfigMap now, loaded as flagd loads it."""
        config = self._objects["configmaps"].get(CONFIGMAP)
        if config is None:
            return None, f'configmap "{CONFIGMAP}" not found'
        return flagd.load_flags((config.get("data") or {}).get(flagd.FLAG_FILE))

    def _start_pod(self, name: str, uid: str) -> None:
        """The init container copies the flag file NOW; flagd loads it (or none of it) or crash-loops."""
        pod = self._objects["pods"].get(name)
        if (pod is None or pod["metadata"]["uid"] != uid or pod["metadata"].get("deletionTimestamp")
                or pod["status"]["phase"] != "Pending"):
            return
        pod = copy.deepcopy(pod)
        now = now_rfc3339()
        flags, error = self._flag_file()
        status = pod["status"]
        status["phase"] = "Running"
        done = {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now,
                "containerID": _container_id()}
        status["initContainerStatuses"] = [container_status("init-config", "busybox", terminated=done)]
        status["initContainerStatuses"][0]["ready"] = True
        status["conditions"] = pod_conditions(now, initialized=True, ready=flags is not None)
        if flags is not None:
            self._pod_flags[uid] = flags
            status["containerStatuses"] = [container_status(FLAGD, FLAGD_IMAGE, running_since=now)]
        else:
            status["containerStatuses"] = [_crash_looping(name, error, now)]
        self._write("pods", pod, "MODIFIED")

    def _stop_terminating_pods(self) -> None:
        """The kubelet: a Terminating pod is gone pod_terminate seconds after its deletion."""
        for pod in self._objects["pods"].values():
            name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
            if pod["metadata"].get("deletionTimestamp") and uid not in self._leaving:
                self._leaving.add(uid)
                self._schedule(self.timings.pod_terminate, lambda name=name, uid=uid: self._remove_pod(name, uid))

    def _remove_pod(self, name: str, uid: str) -> None:
        self._leaving.discard(uid)
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
            self._delete_gracefully(pod)
        new = new[max(0, len(new) - want):]
        # rolling update: an old pod goes only once enough pods stay available (maxUnavailable 25%)
        min_available = want - int(want * MAX_UNAVAILABLE)
        ready = sum(self._is_ready(p) for p in new + old)
        for pod in sorted(old, key=self._is_ready):
            if not self._is_ready(pod) or ready - 1 >= min_available:
                ready -= self._is_ready(pod)
                self._delete_gracefully(pod)
                old.remove(pod)
        self._update_deployment_status(deployment, new, old, current, min_available)

    def _update_deployment_status(self, deployment, new, old, current, min_available) -> None:
        want = deployment["spec"]["replicas"]
        available = sum(self._is_ready(p) for p in new + old)
        done = len(new) == want and not old and available == want
        status = {"observedGeneration": deployment["metadata"]["generation"],
                  "replicas": len(new) + len(old), "updatedReplicas": len(new),
                  "readyReplicas": available, "availableReplicas": available}
        if want - available > 0:
            status["unavailableReplicas"] = want - available
        old_status = deployment.get("status") or {}
        status["conditions"] = _deployment_conditions(old_status.get("conditions", []), f"{FLAGD}-{current}",
                                                      available >= min_available, done)
        if status != old_status:
            updated = copy.deepcopy(deployment)
            updated["status"] = status
            self._write("deployments", updated, "MODIFIED")


def _deployment_conditions(previous: list, rs: str, available: bool, done: bool) -> list:
    """Available and Progressing, keeping their times while they stay the same (as the controller does)."""
    conditions = [
        ("Available", available,
         "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
         "Deployment has minimum availability." if available else "Deployment does not have minimum availability."),
        ("Progressing", True, "NewReplicaSetAvailable" if done else "ReplicaSetUpdated",
         f'ReplicaSet "{rs}" has successfully progressed.' if done else f'ReplicaSet "{rs}" is progressing.'),
    ]
    before = {c["type"]: c for c in previous}
    now = now_rfc3339()
    result = []
    for kind, ok, reason, message in conditions:
        prev = before.get(kind, {})
        flag = "True" if ok else "False"
        same = prev.get("status") == flag and prev.get("reason") == reason
        result.append({"type": kind, "status": flag, "reason": reason, "message": message,
                       "lastUpdateTime": prev["lastUpdateTime"] if same else now,
                       "lastTransitionTime": prev["lastTransitionTime"] if prev.get("status") == flag else now})
    return result


def pod_conditions(now: str, initialized: bool, ready: bool) -> list:
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


def container_status(name: str, image: str, waiting: str | None = None, running_since: str | None = None,
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
        status["containerID"] = _container_id()
    status["lastState"] = last or {}
    return status


def _crash_looping(pod_name: str, error: str, now: str) -> dict:
    """flagd exits at start on a bad flag file; the kubelet backs off restarting it."""
    crashed = {"exitCode": 1, "reason": "Error", "message": error, "startedAt": now, "finishedAt": now,
               "containerID": _container_id()}
    status = container_status(FLAGD, FLAGD_IMAGE, waiting="CrashLoopBackOff", restarts=1,
                              last={"terminated": crashed})
    status["state"]["waiting"]["message"] = f"back-off 10s restarting failed container={FLAGD} pod={pod_name}"
    return status
