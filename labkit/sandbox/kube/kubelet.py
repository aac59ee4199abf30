"""The kubelet of the local cluster's one node: it starts, runs and stops the pods.

Truths kept on purpose, because the workbook teaches them (see controllers.py): a flagd pod loads
the flag file from the ConfigMap when it STARTS; a file flagd cannot parse leaves it Ready serving
no flags, no file at all crash-loops it; a Terminating pod lingers pod_terminate seconds.
"""
from __future__ import annotations

import copy
import hashlib
import secrets
import time

from labkit.sandbox import flagd
from labkit.sandbox.kube import workloads
from labkit.sandbox.kube.discovery import NODE
from labkit.sandbox.kube.replicasets import HASH_ALPHABET
from labkit.sandbox.kube.seed import CONFIGMAP, FLAGD
from labkit.sandbox.kube.store import now_rfc3339

CHATTER_SECONDS = 5.0  # how often the load generator and the proxy write a line


def random_suffix(n: int = 5) -> str:
    return "".join(secrets.choice(HASH_ALPHABET) for _ in range(n))


def _container_id() -> str:
    return f"containerd://{secrets.token_hex(32)}"


class Kubelet:
    """LocalCluster's pods from Pending to gone (it provides _objects, _write, _record, _schedule,
    _seq, timings, logs, and the per-pod maps _born, _pod_flags, _flagd, _leaving)."""

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
