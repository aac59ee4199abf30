"""The cluster around the store: the kubelet for its pods, events, logs, service endpoints.

Truths kept on purpose, because the workbook teaches them:
- a flagd pod loads `demo.flagd.json` from the ConfigMap when it STARTS (the chart's init container
  copies it once), so a ConfigMap edit reaches flagd only through a restart;
- a flag file flagd cannot parse leaves the new pod Ready serving no flags (flagd logs "error setting
  state" and runs on); with no file to copy at all it crash-loops instead of becoming Ready;
- a scale-down leaves pods Terminating for a while before they are gone;
- a running flagd container listens on its ports (8013 gRPC + Connect, 8014, 8015, 8016) as real
  loopback servers (flagd.FlagdProcess) from its start until its pod terminates.
The Deployment and ReplicaSet controllers are `replicasets.Rollouts`.
"""
from __future__ import annotations

import copy
import hashlib
import heapq
import itertools
import logging
import secrets
import threading
import time
from typing import Callable

from labkit import releases
from labkit.sandbox import flagd
from labkit.sandbox.http import Request, Response
from labkit.sandbox.kube import events, workloads
from labkit.sandbox.kube.discovery import NODE
from labkit.sandbox.kube.endpoints import Endpoints
from labkit.sandbox.kube.logs import Logs, Reader, check_started, pick_container
from labkit.sandbox.kube.replicasets import HASH_ALPHABET, Rollouts
from labkit.sandbox.kube.seed import CONFIGMAP, FLAGD, initial_objects, service
from labkit.sandbox.kube.store import EVENT_HISTORY, Store, now_rfc3339

log = logging.getLogger(__name__)
CHATTER_SECONDS = 5.0  # how often the load generator and the proxy write a line
App = Callable[[Request], Response]


def random_suffix(n: int = 5) -> str:
    return "".join(secrets.choice(HASH_ALPHABET) for _ in range(n))


def _container_id() -> str:
    return f"containerd://{secrets.token_hex(32)}"


class LocalCluster(Rollouts, Endpoints, Store):
    """Namespace `default` with flagd and the demo running: the store plus the controllers that move its pods."""

    def __init__(self, timings, flags_yaml_text: str, history: int = EVENT_HISTORY, demo: bool = True,
                 demo_version: str = releases.DEFAULT, support_info: str | None = None):
        super().__init__(history)
        self.timings = timings
        self.token = "local-lab"  # the kubeconfig's bearer token (sandbox.kubeconfig_text)
        self.token_required = False  # over TLS (LocalLab): a request without the token is a 401
        self._timers: list = []  # heap of (due, seq, callback)
        self._seq = itertools.count()
        self._born: dict[str, int] = {}  # pod uid -> creation order (scale-down removes the newest)
        self._pod_flags: dict[str, flagd.FlagSet] = {}  # pod uid -> flags it loaded when it started
        self._flagd: dict[str, flagd.FlagdProcess] = {}  # pod uid -> its running flagd's servers
        self._leaving: set[str] = set()  # uids of Terminating pods the kubelet is stopping
        self._services: dict[tuple[str, int], App] = {}
        self._thread: threading.Thread | None = None
        self.logs = Logs(self._cond)
        with self._cond:
            for resource, obj in initial_objects(flags_yaml_text, demo, demo_version, support_info):
                self._write(resource, obj, "ADDED")
            self._control()  # every workload's first pod: started at once, Ready
            for pod in list(self._objects["pods"].values()):
                self._start_pod(pod["metadata"]["name"], pod["metadata"]["uid"])
            self._control()  # a fresh cluster: its start is on record (events) like any later change
            self._schedule(CHATTER_SECONDS, self._chatter)

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "LocalCluster":
        self._thread = threading.Thread(target=self._run, name="labkit-kube-controller", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        super().stop()
        if self._thread:
            self._thread.join(timeout=5)
        with self._cond:
            for uid in list(self._flagd):
                self._stop_flagd(uid)

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
                    log.exception("local lab: a controller failed a step")
                timeout = self._timers[0][0] - time.monotonic() if self._timers else None
                self._cond.wait(timeout)

    def _control(self) -> None:
        self._reconcile()
        self._stop_terminating_pods()
        self._sync_endpoints()

    @staticmethod
    def _now() -> str:
        return now_rfc3339()

    # ---- events ----------------------------------------------------------------------------------
    def _record(self, obj: dict, reason: str, message: str, type_: str = "Normal",
                field_path: str | None = None, component: str | None = None) -> None:
        """Write an Event about obj, or count a repeat of the same one (client-go's recorder)."""
        ev = events.core_event(obj, reason, message, now_rfc3339(), type_, field_path, component)
        for old in self._objects["events"].values():
            if events.same(old, ev):
                old = copy.deepcopy(old)
                old["count"] += 1
                old["lastTimestamp"] = ev["lastTimestamp"]
                self._write("events", old, "MODIFIED")
                return
        self._write("events", ev, "ADDED")
        if len(self._objects["events"]) > events.MAX_EVENTS:
            oldest = min(self._objects["events"].values(), key=lambda e: int(e["metadata"]["resourceVersion"]))
            self._write("events", copy.deepcopy(oldest), "DELETED")

    # ---- service endpoints (knobs for LocalLab and tests) ---------------------------------------
    def register_service(self, name: str, port: int, app: App) -> None:
        """Let the service proxy (and port-forward) send `name:port` to an app of the local lab (the shop)."""
        with self._cond:
            self._services[(name, int(port))] = app
            if name not in self._objects["services"]:
                self._write("services", service(name, [("http", int(port))], "10.96.90.90"), "ADDED")

    def service_app(self, name: str, port: int) -> App | None:
        with self._cond:
            return self._services.get((name, port))

    def _serving_uid(self) -> str | None:
        """The pod flagd's Service sends to (the oldest Ready one), None if it has no endpoints."""
        for pod in sorted(self._objects["pods"].values(), key=lambda p: self._born.get(p["metadata"]["uid"], 0)):
            if self._is_ready(pod) and not pod["metadata"].get("deletionTimestamp") \
                    and pod["metadata"]["uid"] in self._pod_flags:
                return pod["metadata"]["uid"]
        return None

    def flagd_flags(self) -> flagd.FlagSet | None:
        """The flags of the pod flagd's Service sends to (the oldest Ready one), None if it has no endpoints."""
        with self._cond:
            uid = self._serving_uid()
            return None if uid is None else self._pod_flags[uid]

    def flagd_process(self) -> flagd.FlagdProcess | None:
        """The running flagd the Service sends to; None if it has no endpoints."""
        with self._cond:
            uid = self._serving_uid()
            return None if uid is None else self._flagd.get(uid)

    def flagd_rpc_address(self) -> tuple[str, int] | None:
        """(host, port) on loopback of the Service's current Ready flagd pod's 8013 (gRPC over HTTP/2, and
        Connect over HTTP/1.1), None when no pod is Ready. What the local cart dials with grpcio."""
        process = self.flagd_process()
        return None if process is None else process.address(8013)

    def _ready_uid(self, name: str) -> str | None:
        """The uid of pod `name` while it is Ready and not terminating (call under self._cond)."""
        pod = self._objects["pods"].get(name)
        if pod is None or not self._is_ready(pod) or pod["metadata"].get("deletionTimestamp"):
            return None
        return pod["metadata"]["uid"]

    def pod_process(self, name: str) -> flagd.FlagdProcess | None:
        """The running flagd of a Ready flagd pod; None for any other pod or state."""
        with self._cond:
            return self._flagd.get(self._ready_uid(name))

    def pod_flags(self, name: str) -> flagd.FlagSet | None:
        """The flags a Ready flagd pod loaded at its start; None for any other pod or state."""
        with self._cond:
            return self._pod_flags.get(self._ready_uid(name))

    def flagd_value(self, flag_key: str, context: dict | None = None) -> dict | None:
        """What a Ready flagd pod serves for a flag in `context` (OFREP body), None if none is Ready/unknown."""
        flags = self.flagd_flags()
        return None if flags is None else flagd.flag_value(flags, flag_key, context)

    def container_log(self, name: str, query: dict):
        """`kubectl logs`: a container's log as bytes, or an iterator of chunks when following."""
        with self._cond:
            pod = self._get("pods", name)
            container = pick_container(pod, query.get("container"))
            previous = (query.get("previous") or "").lower() in ("true", "1")
            last_run = check_started(pod, container, previous)
            reader = Reader(query)
            uid = pod["metadata"]["uid"]
            run = self.logs.run(uid, container, previous or last_run)
            if run is None:
                return b""
            if (query.get("follow") or "").lower() not in ("true", "1"):
                return reader.text(run.lines)

        def alive() -> bool:
            live = self._objects["pods"].get(name)
            return not self._stopped and live is not None and live["metadata"]["uid"] == uid
        return reader.follow(self._cond, run, alive)

    # ---- pods ----------------------------------------------------------------------------------
    @staticmethod
    def _is_ready(pod: dict) -> bool:
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for c in pod["status"].get("conditions", []))

    def _create_pod(self, rs: dict) -> dict:
        """A new Pending pod of the ReplicaSet's template, scheduled to the one node."""
        template = copy.deepcopy(rs["spec"]["template"])
        rs_name = rs["metadata"]["name"]
        name = f"{rs_name}-{random_suffix()}"
        metadata = {"name": name, "generateName": f"{rs_name}-", "labels": dict(template["metadata"]["labels"]),
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name,
                                         "uid": rs["metadata"]["uid"], "controller": True,
                                         "blockOwnerDeletion": True}]}
        if template["metadata"].get("annotations"):
            metadata["annotations"] = dict(template["metadata"]["annotations"])
        spec = dict(template["spec"], nodeName=NODE)
        now = now_rfc3339()
        inits = [c["name"] for c in spec.get("initContainers", [])]
        waiting = "PodInitializing" if inits else "ContainerCreating"
        status = {
            "phase": "Pending", "hostIP": "172.18.0.2", "hostIPs": [{"ip": "172.18.0.2"}],
            "podIP": f"10.244.0.{secrets.randbelow(230) + 20}", "startTime": now, "qosClass": "Burstable",
            "conditions": pod_conditions(now, spec, initialized=not inits, ready=False),
            "containerStatuses": [container_status(c["name"], c["image"], waiting=waiting)
                                  for c in spec["containers"]],
        }
        status["podIPs"] = [{"ip": status["podIP"]}]
        if inits:
            status["initContainerStatuses"] = [container_status(c["name"], c["image"], waiting="PodInitializing")
                                               for c in spec["initContainers"]]
        pod = self._write("pods", {"metadata": metadata, "spec": spec, "status": status}, "ADDED")
        uid = pod["metadata"]["uid"]
        self._born[uid] = next(self._seq)
        self._record(pod, "Scheduled", f"Successfully assigned default/{name} to {NODE}",
                     component="default-scheduler")
        self._schedule(self.timings.pod_start, lambda: self._start_pod(name, uid))
        return pod

    def _flag_file(self) -> tuple[flagd.FlagSet | None, str | None]:
        """What the init container copies from the ConfigMap now, loaded as flagd loads it."""
        config = self._objects["configmaps"].get(CONFIGMAP)
        if config is None:
            return None, f'configmap "{CONFIGMAP}" not found'
        return flagd.load_flags((config.get("data") or {}).get(flagd.FLAG_FILE))

    def _started(self, pod: dict, container: dict, init: bool) -> None:
        kind = "initContainers" if init else "containers"
        field = f"spec.{kind}{{{container['name']}}}"
        self._record(pod, "Pulled", f'Container image "{container["image"]}" already present on machine',
                     field_path=field)
        self._record(pod, "Created", f"Created container: {container['name']}", field_path=field)
        self._record(pod, "Started", f"Started container {container['name']}", field_path=field)

    def _start_pod(self, name: str, uid: str) -> None:
        """The init container copies the flag file NOW; flagd loads it (or none of it) or crash-loops."""
        pod = self._objects["pods"].get(name)
        if (pod is None or pod["metadata"]["uid"] != uid or pod["metadata"].get("deletionTimestamp")
                or pod["status"]["phase"] != "Pending"):
            return
        pod = copy.deepcopy(pod)
        now, at = now_rfc3339(), time.time()
        status, spec = pod["status"], pod["spec"]
        status["phase"] = "Running"
        for i, c in enumerate(spec.get("initContainers", [])):
            self._started(pod, c, init=True)
            self.logs.write(uid, c["name"], [flagd.FLAG_FILE] if c["name"] == "init-config" else [], at)
            self.logs.end(uid, c["name"])
            done = {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now,
                    "containerID": _container_id()}
            status["initContainerStatuses"][i] = container_status(c["name"], c["image"], terminated=done)
            status["initContainerStatuses"][i]["ready"] = True
        ready = True
        for i, c in enumerate(spec["containers"]):
            self._started(pod, c, init=False)
            status["containerStatuses"][i] = self._run_container(pod, c, now, at)
            ready = ready and status["containerStatuses"][i]["ready"]
        status["conditions"] = pod_conditions(now, spec, initialized=True, ready=ready)
        self._write("pods", pod, "MODIFIED")

    def _run_container(self, pod: dict, c: dict, now: str, at: float) -> dict:
        """A container starts: flagd loads the flag file (or exits at once), the others just run."""
        uid, name = pod["metadata"]["uid"], c["name"]
        if name != FLAGD:
            self.logs.write(uid, name, workloads.start_lines(name), at)
            return container_status(name, c["image"], running_since=now)
        flags, error = self._flag_file()
        keys = sorted(flags.keys) if flags is not None else None  # None: flagd exits with the error
        self.logs.write(uid, name, flagd.start_lines(keys, error, at, image=c["image"]), at)
        if flags is not None:
            self._pod_flags[uid] = flags
            self._flagd[uid] = flagd.FlagdProcess(pod["metadata"]["name"]).start()
            self._flagd[uid].load(flags)  # the file sync's first read: /readyz turns 200
            return container_status(name, c["image"], running_since=now)
        self.logs.end(uid, name, restart=True)  # its run ended: `logs --previous` has it
        self._record(pod, "BackOff", f"Back-off restarting failed container {name} in pod "
                     f"{pod['metadata']['name']}_default({uid})", "Warning", f"spec.containers{{{name}}}")
        return _crash_looping(pod["metadata"]["name"], c["image"], error, now)

    def _stop_flagd(self, uid: str) -> None:
        process = self._flagd.pop(uid, None)
        if process is not None:
            process.stop()

    def _chatter(self) -> None:
        """Running containers that keep logging (load generator, the proxy's access log) write a line."""
        at = time.time()
        for pod in self._objects["pods"].values():
            for cs in pod["status"].get("containerStatuses", []):
                line = workloads.chatter(cs["name"], at, secrets.randbelow(40) + 3) if cs.get("ready") else None
                if line:
                    self.logs.write(pod["metadata"]["uid"], cs["name"], [line], at)
        self._schedule(CHATTER_SECONDS, self._chatter)

    def _stop_terminating_pods(self) -> None:
        """The kubelet: a Terminating pod's containers stop; it is gone pod_terminate seconds later."""
        for pod in self._objects["pods"].values():
            name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
            if pod["metadata"].get("deletionTimestamp") and uid not in self._leaving:
                self._leaving.add(uid)
                self._stop_flagd(uid)  # SIGTERM: flagd stops serving at once
                for cs in pod["status"].get("containerStatuses", []):
                    if "running" in cs.get("state", {}):
                        self._record(pod, "Killing", f"Stopping container {cs['name']}",
                                     field_path=f"spec.containers{{{cs['name']}}}")
                self._schedule(self.timings.pod_terminate, lambda name=name, uid=uid: self._remove_pod(name, uid))

    def _remove_pod(self, name: str, uid: str) -> None:
        self._leaving.discard(uid)
        self._stop_flagd(uid)
        pod = self._objects["pods"].get(name)
        if pod is not None and pod["metadata"]["uid"] == uid:
            self._pod_flags.pop(uid, None)
            self._born.pop(uid, None)
            self.logs.forget(uid)
            self._write("pods", copy.deepcopy(pod), "DELETED")


def pod_conditions(now: str, spec: dict, initialized: bool, ready: bool) -> list:
    def cond(kind, ok, reason="", message=""):
        c = {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None,
             "lastTransitionTime": now}
        if not ok:
            c.update(reason=reason, message=message)
        return c
    names = " ".join(c["name"] for c in spec["containers"])
    inits = " ".join(c["name"] for c in spec.get("initContainers", []))
    unready = ("ContainersNotReady", f"containers with unready status: [{names}]")
    return [cond("PodReadyToStartContainers", True),
            cond("Initialized", initialized, "ContainersNotInitialized",
                 f"containers with incomplete status: [{inits}]"),
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


def _crash_looping(pod_name: str, image: str, error: str, now: str) -> dict:
    """flagd exits at start on a bad flag file; the kubelet backs off restarting it."""
    crashed = {"exitCode": 1, "reason": "Error", "message": error, "startedAt": now, "finishedAt": now,
               "containerID": _container_id()}
    status = container_status(FLAGD, image, waiting="CrashLoopBackOff", restarts=1,
                              last={"terminated": crashed})
    status["state"]["waiting"]["message"] = f"back-off 10s restarting failed container={FLAGD} pod={pod_name}"
    return status
