"""Container logs as the kubelet keeps and serves them: per container, the current and previous run.

`kubectl logs` options map to the query: container, follow, previous, tailLines, sinceSeconds,
sinceTime, timestamps, limitBytes. The refusals are the kubelet's and the apiserver's words.
"""
from __future__ import annotations

import calendar
import threading
import time
from typing import Iterator

from labkit.sandbox.kube.errors import bad_request

KEEP = 2000  # lines kept per container run (a real node rotates its log files)


class Run:
    """One run of a container: its lines (time, text), and whether it has ended."""

    def __init__(self):
        self.lines: list[tuple[float, str]] = []
        self.dropped = 0  # lines rotated away: indexes stay absolute for followers
        self.ended = False

    def add(self, at: float, text: str) -> None:
        self.lines.extend((at, line) for line in text.split("\n"))
        if len(self.lines) > KEEP:
            cut = len(self.lines) - KEEP
            del self.lines[:cut]
            self.dropped += cut


class Logs:
    """Every container's runs, under the cluster's lock (`cond`), so followers wake on new lines."""

    def __init__(self, cond: threading.Condition):
        self._cond = cond
        self._runs: dict[tuple[str, str], list[Run]] = {}  # (pod uid, container) -> runs, last is current

    def write(self, uid: str, container: str, lines: list[str], at: float | None = None) -> None:
        runs = self._runs.setdefault((uid, container), [Run()])
        for line in lines:
            runs[-1].add(time.time() if at is None else at, line)
        self._cond.notify_all()

    def end(self, uid: str, container: str, restart: bool = False) -> None:
        """The container exited; `restart` starts its next run (its last one becomes `previous`)."""
        runs = self._runs.setdefault((uid, container), [Run()])
        runs[-1].ended = True
        if restart:
            runs.append(Run())
            del runs[:-2]
        self._cond.notify_all()

    def forget(self, uid: str) -> None:
        for key in [k for k in self._runs if k[0] == uid]:
            for run in self._runs.pop(key):
                run.ended = True
        self._cond.notify_all()

    def run(self, uid: str, container: str, previous: bool) -> Run | None:
        runs = self._runs.get((uid, container), [])
        if previous:
            return runs[-2] if len(runs) > 1 else None
        return runs[-1] if runs else None


def pick_container(pod: dict, name: str | None) -> str:
    """The container a log request means: the only one, or the named one (the apiserver's checks)."""
    spec, pod_name = pod["spec"], pod["metadata"]["name"]
    containers = [c["name"] for c in spec.get("containers", [])]
    inits = [c["name"] for c in spec.get("initContainers", [])]
    if not name:
        if len(containers) == 1:
            return containers[0]
        more = f" or one of the init containers: [{' '.join(inits)}]" if inits else ""
        raise bad_request(f"a container name must be specified for pod {pod_name}, choose one of: "
                          f"[{' '.join(containers)}]{more}")
    if name not in containers + inits:
        raise bad_request(f"container {name} is not valid for pod {pod_name}")
    return name


def check_started(pod: dict, container: str, previous: bool) -> bool:
    """Whether the kubelet has a log for it; a 400 in its words when not. True: serve the last run
    (a container waiting to restart after a crash serves its last, terminated run)."""
    status = pod.get("status") or {}
    statuses = (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
    cs = next((s for s in statuses if s["name"] == container), None)
    name = pod["metadata"]["name"]
    state = (cs or {}).get("state") or {}
    last = (cs or {}).get("lastState") or {}
    if previous:
        if not last.get("terminated"):
            raise bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
        return True
    if cs is None or ("waiting" in state and not last.get("terminated")):
        reason = (state.get("waiting") or {}).get("reason", "ContainerCreating")
        raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
    return "waiting" in state


def _stamp(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1e9):09d}Z"


def _since(query: dict) -> float | None:
    if query.get("sinceSeconds"):
        try:
            seconds = int(query["sinceSeconds"])
        except ValueError:
            raise bad_request(f'sinceSeconds: Invalid value: "{query["sinceSeconds"]}"') from None
        if seconds < 1:
            raise bad_request("PodLogOptions \"\" is invalid: sinceSeconds: Invalid value: "
                              f"{seconds}: must be greater than 0")
        return time.time() - seconds
    if query.get("sinceTime"):
        try:
            return calendar.timegm(time.strptime(query["sinceTime"][:19], "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            raise bad_request(f'sinceTime: Invalid value: "{query["sinceTime"]}"') from None
    return None


class Reader:
    """One log request's options, applied to a run's lines."""

    def __init__(self, query: dict):
        self.since = _since(query)
        self.timestamps = (query.get("timestamps") or "").lower() in ("true", "1")
        tail = query.get("tailLines")
        try:
            self.tail = int(tail) if tail not in (None, "") else None
            self.limit = int(query["limitBytes"]) if query.get("limitBytes") else None
        except ValueError:
            raise bad_request(f'tailLines: Invalid value: "{tail}"') from None
        if self.tail is not None and self.tail < 0:
            raise bad_request(f"PodLogOptions \"\" is invalid: tailLines: Invalid value: {self.tail}: "
                              "must be greater than or equal to 0")

    def text(self, lines: list[tuple[float, str]]) -> bytes:
        lines = [x for x in lines if self.since is None or x[0] >= self.since]
        if self.tail is not None:
            lines = lines[len(lines) - self.tail:] if self.tail else []
        out = "".join(f"{_stamp(at)} {line}\n" if self.timestamps else f"{line}\n" for at, line in lines)
        data = out.encode()
        return data[:self.limit] if self.limit is not None else data

    def follow(self, cond: threading.Condition, run: Run, alive) -> Iterator[bytes]:
        """What is there, then each new line until the run ends, the pod goes or `alive()` is false."""
        with cond:
            seen = run.dropped + len(run.lines)
            first = self.text(run.lines)
        yield first
        self.tail, self.limit = None, None
        while True:
            with cond:
                while run.dropped + len(run.lines) == seen and not run.ended and alive():
                    cond.wait(1.0)
                new = run.lines[max(0, seen - run.dropped):]
                seen = run.dropped + len(run.lines)
                done = run.ended or not alive()
            if new:
                yield self.text(new)
            if done:
                return
