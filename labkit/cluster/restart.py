"""Restarts of flagd and their proof: the lab page's scale to 0 and back, or `kubectl rollout restart`,
each done when a pod watch shows the new pods Ready; the replica count remembered, and scaled back on
any error or interrupt, so flagd is never left at 0."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from labkit import settings as names
from labkit._kube import Kube
from labkit.cluster.pods import list_pods, pod_states, ready_names, terminating, watch_pods
from labkit.errors import BadInput, Forbidden, LabError, NotFound
from labkit.progress import Progress, quiet

RESTARTS = ("rollout", "scale")  # `kubectl rollout restart`, or the lab page's scale to 0 and back
# What the workshop's steps use unless told: a rollout keeps a Ready flagd pod the whole time and waits
# for no termination, so it is faster too; the lab page's scale steps stay one argument away.
DEFAULT_RESTART = "rollout"
# The count flagd had before a scale restart took it to 0: a second restart racing the first (another
# kernel or terminal) reads 0 replicas, and must still scale back to that count, not to 1.
_REPLICAS_BEFORE = "labkit/replicas-before-restart"


@dataclass(frozen=True)
class RestartResult:
    """How flagd was restarted, back to how many replicas, how long it took, the new pods."""

    how: str
    replicas: int
    seconds: float
    pods: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        pods = ", ".join(self.pods) or "none listed"
        return f"flagd restarted ({self.how}) in {self.seconds:.1f} s, {self.replicas} replica(s): {pods}"

    def _repr_html_(self) -> str:
        from labkit import cards

        return cards.restart(self)


def restart_flagd(kube: Kube, timeout: float = 120, progress: Progress | None = None,
                  how: str = "scale") -> RestartResult:
    """Restart flagd so it loads the ConfigMap again; return when the new pods are Ready (Cluster's verb)."""
    if how not in RESTARTS:
        raise BadInput(f"Unknown restart method {how!r}; use 'rollout' or 'scale'.")
    restart = FlagdRestart(kube, progress or quiet)
    start = time.monotonic()
    if how == "rollout":
        return restart.rollout(start, timeout)
    return restart.scale(start, timeout)


class FlagdRestart:
    """One restart of Deployment flagd in one namespace, reporting its steps to `report`."""

    def __init__(self, kube: Kube, report: Progress):
        self.kube = kube
        self.namespace = kube.namespace
        self.report = report

    def _scale(self, replicas: int) -> None:
        self.kube.call("PATCH", self.kube.path("deployments", names.FLAGD_DEPLOYMENT, "scale"), "patch",
                       "deployments/scale", names.FLAGD_DEPLOYMENT, body={"spec": {"replicas": replicas}},
                       content_type="application/merge-patch+json")

    def _replicas_to_restore(self) -> tuple[int, int]:
        """(the count to scale back to, the count now): at 0, the one a racing restart remembered, else 1."""
        name = names.FLAGD_DEPLOYMENT
        scale = self.kube.call("GET", self.kube.path("deployments", name, "scale"), "get",
                               "deployments/scale", name)
        current = (scale.get("spec") or {}).get("replicas") or 0
        if current:
            return current, current
        deployment = self.kube.call("GET", self.kube.path("deployments", name), "get", "deployments", name)
        remembered = ((deployment.get("metadata") or {}).get("annotations") or {}).get(_REPLICAS_BEFORE, "")
        return (int(remembered) if remembered.isdigit() and int(remembered) > 0 else 1), 0

    def _remember_replicas(self, replicas: int) -> None:
        """Note the count on the Deployment before scaling to 0 (best effort: RBAC may allow only scale)."""
        try:
            self.kube.call("PATCH", self.kube.path("deployments", names.FLAGD_DEPLOYMENT), "patch",
                           "deployments", names.FLAGD_DEPLOYMENT,
                           body={"metadata": {"annotations": {_REPLICAS_BEFORE: str(replicas)}}},
                           content_type="application/merge-patch+json")
        except (Forbidden, BadInput):
            pass

    def scale(self, start: float, timeout: float) -> RestartResult:
        """The lab page's way: scale to 0, wait until flagd's pods are gone, scale back to the previous
        count, wait until that many pods are Ready (flagd answers nothing meanwhile)."""
        name, report = names.FLAGD_DEPLOYMENT, self.report
        previous, current = self._replicas_to_restore()
        deadline = start + timeout
        before = set(list_pods(self.kube))  # the pods that loaded the old file: these must go
        scaled_down = restored = False
        try:
            report(f"scaling deployment {name} to 0 (was {current})", 0.0)
            if current:
                self._remember_replicas(current)
            scaled_down = True  # set first: an interrupt mid-request must still scale back
            try:
                self._scale(0)
            except (Forbidden, NotFound, BadInput):
                scaled_down = False  # the API refused: nothing was scaled
                raise
            left = self._wait_gone(before, deadline, timeout, previous)
            # another restart may already have scaled flagd up again: its pods started after our write
            report("no flagd pod left" if not left else "the old flagd pods are gone", 0.5)
            report(f"scaling deployment {name} back to {previous}", 0.55)
            self._scale(previous)
            restored = True
            pods = self._wait_ready(deadline, timeout, previous)
        except BaseException as exc:
            if scaled_down and not restored:
                self._scale_back(previous, exc)
            raise
        return _restarted("scale", previous, start, ready_names(pods), report)

    def _wait_gone(self, before: set, deadline: float, timeout: float, previous: int) -> dict:
        """flagd's pods once none of `before` is left (pods a racing restart started may be there)."""
        def on_change(pods):
            going = sorted(before & set(pods))
            if going:
                self.report(f"waiting for {len(going)} flagd pod(s) to go: {', '.join(going)}", 0.2)

        return watch_pods(self.kube, lambda pods: not (before & set(pods)), deadline, on_change,
                          lambda pods: f"flagd pods still terminating after {timeout:g}s "
                                       f"({', '.join(sorted(before & set(pods)))}); flagd is scaled back "
                                       f"to {previous}. Retry with a longer timeout, or check: kubectl -n "
                                       f"{self.namespace} get pods -l {names.FLAGD_SELECTOR}")

    def _wait_ready(self, deadline: float, timeout: float, wanted: int) -> dict:
        def on_change(pods):
            ready = len(ready_names(pods))
            self.report(f"flagd pods ready {ready}/{wanted} ({pod_states(pods)})",
                        0.55 + 0.45 * min(ready, wanted) / wanted)

        return watch_pods(self.kube, lambda pods: len(ready_names(pods)) >= wanted, deadline, on_change,
                          lambda pods: f"flagd is scaled back to {wanted} but not Ready after "
                                       f"{timeout:g}s ({pod_states(pods)}). Check: kubectl -n "
                                       f"{self.namespace} get pods -l {names.FLAGD_SELECTOR}")

    def _scale_back(self, previous: int, exc: BaseException) -> None:
        """After a failure or an interrupt past the scale-down: flagd back to `previous` replicas."""
        for attempt in range(2):  # a second Ctrl-C during this one request gets one more try
            try:
                self._scale(previous)
                break
            except KeyboardInterrupt:
                if attempt:
                    raise
            except Exception as again:
                raise LabError(
                    f"flagd could not be scaled back to {previous} after {type(exc).__name__} ({again}). "
                    f"Run: kubectl -n {self.namespace} scale deploy {names.FLAGD_DEPLOYMENT} "
                    f"--replicas={previous}") from exc
        try:
            self.report(f"{type(exc).__name__}: flagd scaled back to {previous}", None)
        except Exception:
            pass

    def rollout(self, start: float, timeout: float) -> RestartResult:
        """`kubectl rollout restart`: new pods start beside the old ones, which go only once the new
        ones are Ready."""
        name, report = names.FLAGD_DEPLOYMENT, self.report
        path = self.kube.path("deployments", name)
        deployment = self.kube.call("GET", path, "get", "deployments", name)
        replicas = (deployment.get("spec") or {}).get("replicas", 1)
        if replicas == 0:  # nothing runs, so nothing to keep up: start the pods the scale way
            report(f"deployment {name} is scaled to 0: scaling it up instead of a rollout", 0.0)
            return self.scale(start, timeout)
        gap = _rollout_gap(deployment, replicas)
        if gap:
            report(f"note: this rollout may leave flagd without a Ready pod: {gap}", 0.0)
        old = set(list_pods(self.kube))
        # RFC3339 like kubectl, but with microseconds: two restarts in one second must both roll
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        report(f"rollout restart of deployment {name} ({replicas} replica(s))", 0.0)
        self.kube.call("PATCH", path, "patch", "deployments", name,
                       body={"spec": {"template": {"metadata": {"annotations": {
                           "kubectl.kubernetes.io/restartedAt": stamp}}}}},
                       content_type="application/strategic-merge-patch+json")
        pods = self._wait_rolled(old, replicas, start + timeout, timeout)
        return _restarted("rollout", replicas, start, ready_names(pods, exclude=old), report)

    def _wait_rolled(self, old: set, replicas: int, deadline: float, timeout: float) -> dict:
        """Pods once `replicas` new ones are Ready and every old one is going (Terminating) or gone.

        Terminating pods are out of the Service and answer nothing, so the change need not wait
        for their grace period to end."""
        def staying(pods):
            return sorted(n for n in old & set(pods) if not terminating(pods[n]))

        def done(pods):
            return not staying(pods) and len(ready_names(pods, exclude=old)) >= replicas

        def on_change(pods):
            left, ready = staying(pods), ready_names(pods, exclude=old)
            self.report(f"new pods ready {len(ready)}/{replicas}" + (f"; old pods still serving: {', '.join(left)}"
                                                                      if left else ""),
                        0.1 + 0.85 * min(len(ready), replicas) / replicas * (0.5 if left else 1.0))

        return watch_pods(self.kube, done, deadline, on_change,
                          lambda pods: f"rollout restart of {names.FLAGD_DEPLOYMENT} not finished after "
                                       f"{timeout:g}s ({pod_states(pods)}).")


def _rollout_gap(deployment: dict, replicas: int) -> str:
    """Why this Deployment's rolling update may take every flagd pod down at once ('' if it cannot)."""
    strategy = (deployment.get("spec") or {}).get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return "its strategy is Recreate (every old pod goes before a new one starts)"
    unavailable = str((strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%"))
    try:  # a percentage rounds down, as the deployment controller does
        down = replicas * int(unavailable[:-1]) // 100 if unavailable.endswith("%") else int(unavailable)
    except ValueError:
        return ""
    return f"its maxUnavailable {unavailable} lets all {replicas} pod(s) go at once" if down >= replicas else ""


def _restarted(how: str, replicas: int, start: float, ready: list[str], report: Progress) -> RestartResult:
    ready = sorted(ready)
    seconds = time.monotonic() - start
    report(f"flagd ready: {', '.join(ready)} ({seconds:.1f}s)", 1.0)
    return RestartResult(how=how, replicas=replicas, seconds=seconds, pods=ready)
