"""The cluster around the store: the kubelet for its pods, events, logs, service endpoints.

Truths kept on purpose, because the workbook teaches them:
- a flagd pod loads `demo.flagd.json` from the ConfigMap when it STARTS (the chart's init container
  copies it once), so a ConfigMap edit reaches flagd only through a restart;
- a flag file flagd cannot parse leaves the new pod Ready serving no flags (flagd logs "error setting
  state" and runs on); with no file to copy at all it crash-loops instead of becoming Ready;
- a scale-down leaves pods Terminating for a while before they are gone;
- a running flagd container listens on its ports (8013 gRPC + Connect, 8014, 8015, 8016) as real
  loopback servers (flagd.FlagdProcess) from its start until its pod terminates.
The controllers are mixins, one module per subject, over the store's lock and objects: the kubelet
(`kubelet.Kubelet`: pods from Pending to gone), which flagd pod serves (`flagd_pods.FlagdPods`), the
event recorder (`events.Recorder`), the Deployment and ReplicaSet controllers (`replicasets.Rollouts`)
and the endpoints controllers (`endpoints.Endpoints`). This module runs them: the timers, the loop.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Callable

from labkit import releases
from labkit.sandbox import flagd
from labkit.sandbox.http import Request, Response
from labkit.sandbox.kube.endpoints import Endpoints
from labkit.sandbox.kube.events import Recorder
from labkit.sandbox.kube.flagd_pods import FlagdPods
from labkit.sandbox.kube.kubelet import CHATTER_SECONDS, Kubelet
from labkit.sandbox.kube.logs import Logs, Reader, check_started, pick_container
from labkit.sandbox.kube.replicasets import Rollouts
from labkit.sandbox.kube.seed import initial_objects, service
from labkit.sandbox.kube.store import EVENT_HISTORY, Store, now_rfc3339

log = logging.getLogger(__name__)
App = Callable[[Request], Response]


class LocalCluster(Kubelet, FlagdPods, Recorder, Rollouts, Endpoints, Store):
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

    # ---- logs ------------------------------------------------------------------------------------
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
