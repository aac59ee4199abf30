"""Kubernetes verbs in the lab's words: the flag file, set a default variant, restart flagd, served values.

Requests and watches go through labkit._kube (the real `kubernetes` client). Waits are Kubernetes
watches bounded by a timeout; flagd is never left scaled to 0 by an error or an interrupt.
"""
from __future__ import annotations

import json
import time
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import Callable
from urllib.parse import quote

from labkit import cart, releases
from labkit import settings as names
from labkit.cart import CartRead
from labkit._kube import LOCAL_LAB_HINT, Conflict, Kube, Reply, connect
from labkit.errors import BadInput, Forbidden, LabError, LabTimeout, NotFound, Unreachable, nearest
from labkit.flags import FlagChange, FlagFile, format_value
from labkit.progress import Progress, quiet
from labkit.releases import Release
from labkit.settings import Settings

__all__ = ["DEFAULT_RESTART", "LOCAL_LAB_HINT", "RESTARTS", "Cluster", "Progress", "RestartResult", "Served"]

RESTARTS = ("rollout", "scale")  # `kubectl rollout restart`, or the lab page's scale to 0 and back
# What the workshop's steps use unless told: a rollout keeps a Ready flagd pod the whole time and waits
# for no termination, so it is faster too; the lab page's scale steps stay one argument away.
DEFAULT_RESTART = "rollout"
_CONFLICT_ATTEMPTS = 5      # re-reads after a 409 before giving up
_OFREP_TIMEOUT = (5, 15)    # (connect, read) seconds on an OFREP call through the service proxy
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


@dataclass(frozen=True)
class Served:
    """What flagd answers for a flag over OFREP right now."""

    key: str
    value: object
    variant: str | None
    reason: str | None
    metadata: dict = field(default_factory=dict, compare=False)
    context: dict = field(default_factory=dict, compare=False)  # the evaluation context it was asked in
    cart: object = field(default=None, compare=False)  # what the cart reads (a CartRead, or why unknown)

    def __str__(self) -> str:
        return f"{self.variant} ({format_value(self.value)})"

    def __repr__(self) -> str:
        said = f"flagd serves {self.key} = {self}, reason {self.reason or '-'}"
        return said + (f"\n{self.cart}" if self.cart is not None else "")

    def _repr_html_(self) -> str:
        from labkit import cards

        read = self.cart._repr_html_() if hasattr(self.cart, "_repr_html_") else (
            cards.card("cart-read", str(self.cart), ok=False) if self.cart is not None else "")
        return cards.served(self, format_value(self.value)) + read

    @property
    def by_targeting(self) -> bool:
        """flagd ran the flag's targeting rules for this answer (so another context may get another
        variant): TARGETING_MATCH, or DEFAULT when the rules gave no variant. STATIC: no rules."""
        return self.reason in ("TARGETING_MATCH", "DEFAULT")

    @property
    def how(self) -> str:
        """Why flagd served this, in the lab's words."""
        return {"STATIC": "the default variant (no targeting)",
                "TARGETING_MATCH": "chosen by the flag's targeting rules for this context",
                "DEFAULT": "the default variant: the targeting rules chose none for this context",
                "DISABLED": "nothing: the flag is disabled"}.get(str(self.reason), str(self.reason))


def _all_serve(seen: dict, variant: str) -> bool:
    """True when there are Ready pods and each of them answers `variant`."""
    return bool(seen) and all(s is not None and s.variant == variant for s in seen.values())


def _served(d: dict, context: dict) -> Served:
    meta = d.get("metadata")
    return Served(key=d["key"], value=d.get("value"), variant=d.get("variant"), reason=d.get("reason"),
                  metadata=meta if isinstance(meta, dict) else {}, context=dict(context))


class Cluster:
    """The lab's Kubernetes cluster: the flag ConfigMap, the flagd Deployment and its pods."""

    def __init__(self, settings: Settings | None = None, api_client=None):
        self.settings = settings or Settings.load()
        self.namespace = self.settings.namespace
        self.api = api_client if api_client is not None else connect(self.settings.kubeconfig)
        self.kube = Kube(self.api, self.namespace)
        self.conflicts = 0  # 409s retried by the last set_default_variant (for display and tests)

    @property
    def host(self) -> str:
        return self.kube.host

    # ---- the flag ConfigMap -------------------------------------------------------------------
    def _read_configmap(self) -> dict:
        return self.kube.call("GET", self.kube.path("configmaps", names.CONFIGMAP), "get", "configmaps",
                              names.CONFIGMAP)

    def _flag_file(self, cm: dict) -> FlagFile:
        return FlagFile.from_configmap(cm.get("data") or {}, name=names.CONFIGMAP, key=names.CONFIG_KEY,
                                       metadata=cm.get("metadata") or {})

    def flag_file(self) -> FlagFile:
        """The live flag file from ConfigMap flagd-config (what flagd loads when a pod starts)."""
        return self._flag_file(self._read_configmap())

    def set_default_variant(self, flag: str, variant: str, dry_run: bool = False) -> FlagChange:
        """Change one flag's defaultVariant in the live ConfigMap, guarded by resourceVersion.

        A 409 (someone else wrote in between) re-reads and re-applies this one change on the fresh
        data, so their edit survives. Malformed live JSON is refused before anything is written.
        """
        def edit(cm: dict):
            change = self._flag_file(cm).set_default_variant(flag, variant)
            if dry_run or not change.changed:
                return change, None
            cm["data"] = dict(cm["data"], **{names.CONFIG_KEY: change.after.to_json()})
            return change, cm

        return self._update_configmap(edit, f"{flag} was not changed")

    def _update_configmap(self, edit: Callable[[dict], tuple], unchanged: str):
        """edit(configmap) -> (result, the ConfigMap to write or None), written with the resourceVersion
        read (optimistic concurrency); a 409 re-reads and re-applies the edit on the fresh data."""
        self.conflicts = 0
        for _ in range(_CONFLICT_ATTEMPTS):
            result, cm = edit(self._read_configmap())
            if cm is None:
                return result
            try:
                self.kube.call("PUT", self.kube.path("configmaps", names.CONFIGMAP), "update", "configmaps",
                               names.CONFIGMAP, body=cm)
                return result
            except Conflict:
                self.conflicts += 1
        raise LabError(f"ConfigMap {names.CONFIGMAP} kept changing under us ({_CONFLICT_ATTEMPTS} "
                       f"conflicting writes); {unchanged}. Try again in a moment.")

    # ---- flagd pods and restarts --------------------------------------------------------------
    def _list_pods(self) -> dict:
        pods, _ = self.kube.list_objects("pods", names.FLAGD_SELECTOR)
        return pods

    def flagd_pods(self) -> list[dict]:
        """flagd's pods for display: name, phase, ready, age (s), terminating."""
        now = datetime.now(timezone.utc)
        out = []
        for name, pod in sorted(self._list_pods().items()):
            created = _parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
            out.append({
                "name": name,
                "phase": (pod.get("status") or {}).get("phase"),
                "ready": _ready(pod),
                "age": round((now - created).total_seconds(), 1) if created else None,
                "terminating": _terminating(pod),
            })
        return out

    def _watch_pods(self, done: Callable[[dict], bool], deadline: float, on_change: Callable[[dict], None],
                    timeout_message: Callable[[dict], str], selector: str = names.FLAGD_SELECTOR) -> dict:
        """flagd's (or `selector`'s) pods by name once done(pods) holds; LabTimeout after `deadline`."""
        pods: dict = {}
        with closing(self.kube.watch("pods", selector, deadline)) as changes:
            for pods in changes:
                on_change(pods)
                if done(pods):
                    return pods
        raise LabTimeout(timeout_message(pods))

    def _scale(self, replicas: int) -> None:
        self.kube.call("PATCH", self.kube.path("deployments", names.FLAGD_DEPLOYMENT, "scale"), "patch",
                       "deployments/scale", names.FLAGD_DEPLOYMENT, body={"spec": {"replicas": replicas}},
                       content_type="application/merge-patch+json")

    def restart_flagd(self, timeout: float = 120, progress: Progress | None = None,
                      how: str = "scale") -> RestartResult:
        """Restart flagd so it loads the ConfigMap again; return when the new pods are Ready.

        how="scale" is the lab page's way: scale to 0, wait until flagd's pods are gone, scale back to
        the previous count, wait until that many pods are Ready (flagd answers nothing meanwhile).
        how="rollout" is `kubectl rollout restart`: new pods start beside the old ones, which go only
        once the new ones are Ready. Bounded by `timeout` (LabTimeout); flagd always ends at its
        previous replica count. (The workshop's steps default to DEFAULT_RESTART.)
        """
        if how not in RESTARTS:
            raise BadInput(f"Unknown restart method {how!r}; use 'rollout' or 'scale'.")
        report = progress or quiet
        start = time.monotonic()
        if how == "rollout":
            return self._rollout_restart(start, timeout, report)
        return self._scale_restart(start, timeout, report)

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

    def _scale_restart(self, start: float, timeout: float, report: Progress) -> RestartResult:
        name = names.FLAGD_DEPLOYMENT
        previous, current = self._replicas_to_restore()
        deadline = start + timeout
        before = set(self._list_pods())  # the pods that loaded the old file: these must go
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
            left = self._wait_gone(before, deadline, timeout, previous, report)
            # another restart may already have scaled flagd up again: its pods started after our write
            report("no flagd pod left" if not left else "the old flagd pods are gone", 0.5)
            report(f"scaling deployment {name} back to {previous}", 0.55)
            self._scale(previous)
            restored = True
            pods = self._wait_ready(deadline, timeout, previous, report)
        except BaseException as exc:
            if scaled_down and not restored:
                self._scale_back(previous, exc, report)
            raise
        return _restarted("scale", previous, start, _ready_names(pods), report)

    def _wait_gone(self, before: set, deadline: float, timeout: float, previous: int,
                   report: Progress) -> dict:
        """flagd's pods once none of `before` is left (pods a racing restart started may be there)."""
        def on_change(pods):
            going = sorted(before & set(pods))
            if going:
                report(f"waiting for {len(going)} flagd pod(s) to go: {', '.join(going)}", 0.2)

        return self._watch_pods(lambda pods: not (before & set(pods)), deadline, on_change,
                                lambda pods: f"flagd pods still terminating after {timeout:g}s "
                                             f"({', '.join(sorted(before & set(pods)))}); flagd is scaled back "
                                             f"to {previous}. Retry with a longer timeout, or check: kubectl -n "
                                             f"{self.namespace} get pods -l {names.FLAGD_SELECTOR}")

    def _wait_ready(self, deadline: float, timeout: float, wanted: int, report: Progress) -> dict:
        def on_change(pods):
            ready = len(_ready_names(pods))
            report(f"flagd pods ready {ready}/{wanted} ({_pod_states(pods)})",
                   0.55 + 0.45 * min(ready, wanted) / wanted)

        return self._watch_pods(lambda pods: len(_ready_names(pods)) >= wanted, deadline, on_change,
                                lambda pods: f"flagd is scaled back to {wanted} but not Ready after "
                                             f"{timeout:g}s ({_pod_states(pods)}). Check: kubectl -n "
                                             f"{self.namespace} get pods -l {names.FLAGD_SELECTOR}")

    def _scale_back(self, previous: int, exc: BaseException, report: Progress) -> None:
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
            report(f"{type(exc).__name__}: flagd scaled back to {previous}", None)
        except Exception:
            pass

    def _rollout_restart(self, start: float, timeout: float, report: Progress) -> RestartResult:
        name = names.FLAGD_DEPLOYMENT
        path = self.kube.path("deployments", name)
        deployment = self.kube.call("GET", path, "get", "deployments", name)
        replicas = (deployment.get("spec") or {}).get("replicas", 1)
        if replicas == 0:  # nothing runs, so nothing to keep up: start the pods the scale way
            report(f"deployment {name} is scaled to 0: scaling it up instead of a rollout", 0.0)
            return self._scale_restart(start, timeout, report)
        gap = _rollout_gap(deployment, replicas)
        if gap:
            report(f"note: this rollout may leave flagd without a Ready pod: {gap}", 0.0)
        old = set(self._list_pods())
        # RFC3339 like kubectl, but with microseconds: two restarts in one second must both roll
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        report(f"rollout restart of deployment {name} ({replicas} replica(s))", 0.0)
        self.kube.call("PATCH", path, "patch", "deployments", name,
                       body={"spec": {"template": {"metadata": {"annotations": {
                           "kubectl.kubernetes.io/restartedAt": stamp}}}}},
                       content_type="application/strategic-merge-patch+json")
        pods = self._wait_rolled(old, replicas, start + timeout, timeout, report)
        return _restarted("rollout", replicas, start, _ready_names(pods, exclude=old), report)

    def _wait_rolled(self, old: set, replicas: int, deadline: float, timeout: float, report: Progress) -> dict:
        """Pods once `replicas` new ones are Ready and every old one is going (Terminating) or gone.

        Terminating pods are out of the Service and answer nothing, so the change need not wait
        for their grace period to end."""
        def staying(pods):
            return sorted(n for n in old & set(pods) if not _terminating(pods[n]))

        def done(pods):
            return not staying(pods) and len(_ready_names(pods, exclude=old)) >= replicas

        def on_change(pods):
            left, ready = staying(pods), _ready_names(pods, exclude=old)
            report(f"new pods ready {len(ready)}/{replicas}" + (f"; old pods still serving: {', '.join(left)}"
                                                                 if left else ""),
                   0.1 + 0.85 * min(len(ready), replicas) / replicas * (0.5 if left else 1.0))

        return self._watch_pods(done, deadline, on_change,
                                lambda pods: f"rollout restart of {names.FLAGD_DEPLOYMENT} not finished after "
                                             f"{timeout:g}s ({_pod_states(pods)}).")

    # ---- what flagd serves ----------------------------------------------------------------------
    def _ofrep(self, flag: str | None, context: dict | None = None) -> Reply:
        """POST flagd's OFREP (one flag, or all with flag=None) in `context` through the service proxy."""
        path = (self.kube.path("services") + f"/{names.FLAGD_SERVICE}:{names.OFREP_PORT}/proxy/ofrep/v1/evaluate/flags"
                + (f"/{quote(flag, safe='')}" if flag is not None else ""))
        return self.kube.send("POST", path, body={"context": dict(context or {})}, timeout=_OFREP_TIMEOUT)

    def _ofrep_error(self, reply: Reply) -> Exception:
        return self.kube.error(reply.status, reply.text, "create", "services/proxy",
                               f"{names.FLAGD_SERVICE}:{names.OFREP_PORT}")

    def _not_serving(self, what: str) -> Unreachable:
        return Unreachable(
            f"flagd is not serving (no Ready pod behind service {names.FLAGD_SERVICE}), so it cannot "
            f"say what {what} is. Wait for the pod, or restart it: kubectl -n {self.namespace} scale "
            f"deploy {names.FLAGD_DEPLOYMENT} --replicas=1")

    def served_values(self, context: dict | None = None) -> dict[str, Served]:
        """Everything flagd serves in `context` (e.g. {"targetingKey": "u1"}), by flag key (OFREP bulk
        evaluation; one request). No context: what a request without one gets."""
        context = dict(context or {})
        reply = self._ofrep(None, context)
        data = reply.data
        if reply.status == 200 and isinstance(data, dict) and isinstance(data.get("flags"), list):
            return {d["key"]: _served(d, context)
                    for d in data["flags"] if isinstance(d, dict) and "key" in d and not d.get("errorCode")}
        if reply.status == 503:
            raise self._not_serving("its flags")
        if reply.status in (400, 404, 405, 501):  # an older flagd without bulk evaluation: one by one
            out = {}
            for key in self.flag_file().keys:
                try:
                    out[key] = self.served_value(key, context)
                except BadInput:
                    pass
            return out
        raise self._ofrep_error(reply)

    def served_value(self, flag: str, context: dict | None = None) -> Served:
        """Ask flagd over OFREP (through the API server's service proxy) what it serves for `flag` in
        `context` (targetingKey inside it); a flag with targeting may serve each context differently."""
        context = dict(context or {})
        reply = self._ofrep(flag, context)
        data = reply.data
        if reply.status == 200 and isinstance(data, dict):
            return _served({"key": flag, **data}, context)
        if reply.status == 503:
            raise self._not_serving(flag)
        if reply.status == 404 and isinstance(data, dict) and data.get("kind") != "Status":
            raise BadInput(f"flagd does not know flag {flag!r} ({data.get('errorCode', 'FLAG_NOT_FOUND')})."
                           f"{self._nearest_flag(flag)}")
        if isinstance(data, dict) and data.get("errorCode"):
            raise LabError(f"flagd could not evaluate {flag!r}: {data.get('errorCode')} "
                           f"{str(data.get('errorDetails', ''))[:200]}".rstrip())
        raise self._ofrep_error(reply)

    def _nearest_flag(self, flag: str) -> str:
        try:
            return nearest(flag, self.flag_file().keys)
        except LabError:
            return ""

    def served_by_pod(self, pod: str, flag: str) -> Served | None:
        """Ask ONE flagd pod, through the API server's pod proxy, what it serves for `flag` (OFREP).

        None while that pod does not answer (starting, going, or gone). The service proxy answers
        from one pod of its choosing; this is how each pod is asked."""
        path = (self.kube.path("pods") + f"/{quote(pod, safe='')}:{names.OFREP_PORT}/proxy/ofrep/v1/evaluate/"
                f"flags/{quote(flag, safe='')}")
        reply = self.kube.send("POST", path, body={"context": {}}, timeout=_OFREP_TIMEOUT)
        data = reply.data if isinstance(reply.data, dict) else {}
        if reply.status == 200 and data:
            return _served({"key": flag, **data}, {})
        if reply.status == 503 or (reply.status == 404 and data.get("kind") == "Status"):
            return None  # nothing listens in that pod (yet, or any more), or the pod is gone
        if reply.status == 404:
            raise BadInput(f"flagd does not know flag {flag!r} ({data.get('errorCode', 'FLAG_NOT_FOUND')})."
                           f"{self._nearest_flag(flag)}")
        raise self.kube.error(reply.status, reply.text, "create", "pods/proxy", pod)

    def served_by_ready_pods(self, flag: str) -> dict[str, Served | None]:
        """What each Ready flagd pod serves for `flag`, by pod name ({} while no pod is Ready).

        Without RBAC for pods/proxy, the service's one answer stands in for them all."""
        pods = sorted(_ready_names(self._list_pods()))
        try:
            return {pod: self.served_by_pod(pod, flag) for pod in pods}
        except Forbidden:
            try:
                return {f"service/{names.FLAGD_SERVICE}": self.served_value(flag)} if pods else {}
            except Unreachable:
                return {}

    def serving_everywhere(self, flag: str, variant: str) -> Served | None:
        """What flagd serves when every Ready pod serves `variant` for `flag`, else None."""
        seen = self.served_by_ready_pods(flag)
        return next(iter(seen.values())) if _all_serve(seen, variant) else None

    def wait_served(self, flag: str, variant: str, timeout: float = 30,
                    progress: Progress | None = None) -> Served:
        """Return once EVERY Ready flagd pod serves `variant` for `flag`, each pod asked itself.

        OFREP has no watch: a few bounded retries. When the ConfigMap no longer says `variant`
        (someone changed the flag after us), their change wins: LabError, never a stale success."""
        report = progress or quiet
        deadline = time.monotonic() + timeout
        delay = 0.05
        seen: dict | LabError = {}
        while True:
            try:
                seen = self.served_by_ready_pods(flag)
                if _all_serve(seen, variant):
                    served = next(iter(seen.values()))
                    report(f"flagd serves {flag} = {served} on {_pods(len(seen))}", 1.0)
                    return served
                report(f"waiting for every flagd pod to serve {flag} = {variant} ({_serving(seen)})", None)
                self._check_not_overtaken(flag, variant)
            except Unreachable as exc:
                seen = exc
                report("waiting for flagd to answer", None)
            if time.monotonic() + delay > deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        state = f"is not answering ({seen})" if isinstance(seen, LabError) else f"serves {_serving(seen)}"
        raise LabTimeout(
            f"flagd {state} for {flag} after {timeout:g}s, not {variant!r} on every pod. flagd loads the "
            f"ConfigMap only when its pod starts: restart it (python -m labkit set {flag} {variant} does).")

    def _check_not_overtaken(self, flag: str, variant: str) -> None:
        """LabError when the live ConfigMap says another variant for `flag`: a later change won."""
        now = self.flag_file().flag(flag).default_variant
        if now != variant:
            raise LabError(
                f"This change of {flag} to {variant!r} was overtaken: {flag} is {now!r} in ConfigMap "
                f"{names.CONFIGMAP} now, set after it by another kernel or terminal, and the later change "
                f"wins. flagd will serve {now!r}; check with: python -m labkit flags {flag}")


    # ---- what the cart reads --------------------------------------------------------------------
    def demo_release(self, flag: str = names.FLAG, variants: dict | None = None) -> tuple[Release, str]:
        """(the demo release the lab runs, how that is known): from the cart Deployment's image, else
        from `flag`'s variant types (numbers: a cart that reads a float; booleans: one that reads a
        boolean), else labkit's default release."""
        image = self._cart_image()
        found = releases.from_image(image)
        if found is not None:
            return found, f"the cart's image {image}"
        kind = releases.kind_of_variants(variants or {})
        by_kind = next((r for r in releases.RELEASES.values() if r.cart_kind == kind), None)
        unknown = f"no cart image labkit knows ({image})" if image else "no cart Deployment found"
        if by_kind is not None:
            return by_kind, f"{flag}'s {kind} variants; {unknown}"
        return releases.get(), f"labkit's default; {unknown}"

    def _cart_image(self) -> str | None:
        """The image of the demo's cart container (Deployment labelled opentelemetry.io/name=cart)."""
        try:
            found, _ = self.kube.list_objects("deployments", names.CART_SELECTOR)
        except (Forbidden, NotFound, BadInput):
            return None
        for deployment in found.values():
            containers = ((deployment.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
            for c in sorted(containers, key=lambda c: c.get("name") != names.SERVICE):  # `cart` first
                return c.get("image")
        return None

    def cart_reads(self, flag: str = names.FLAG) -> CartRead:
        """Ask flagd AS THE DEMO'S CART ASKS: its release's typed call (3.0.0: ResolveFloat) on flagd:8013
        with no context, Connect JSON through the API server's service proxy; say what the cart reads
        (its code default on any error: TYPE_MISMATCH, FLAG_NOT_FOUND, no flagd pod Ready)."""
        try:
            variants = self.flag_file().variants(flag)
        except (BadInput, NotFound):
            variants = {}  # no such flag, or no flag file: flagd's answer says what that means
        release, known_from = self.demo_release(flag, variants)
        target = f"{names.FLAGD_SERVICE}:{names.FLAGD_RPC_PORT}"
        reply = self.kube.send("POST", self.kube.path("services") + f"/{target}/proxy/{release.cart_method}",
                               body={"flagKey": flag, "context": {}}, timeout=_OFREP_TIMEOUT)
        data = reply.data if isinstance(reply.data, dict) else None
        if data is not None and data.get("kind") == "Status":  # the API server's own answer
            if reply.status == 503:
                return cart.not_ready(flag, release, known_from, variants)
            raise self.kube.error(reply.status, reply.text, "create", "services/proxy", target)
        if reply.status == 200 or (data is not None and isinstance(data.get("code"), str)):
            return cart.read(flag, release, known_from, reply.status, data, variants)
        raise LabError(f"flagd did not answer the cart's call {release.cart_method} on port {names.FLAGD_RPC_PORT} "
                       f"({reply.status}: {(reply.text or '').strip()[:120]}), so what the cart reads is unknown. "
                       f"Is this flagd v0.16 with its evaluation port? Check: kubectl -n {self.namespace} get svc "
                       f"{names.FLAGD_SERVICE}")

    def fix_flag_types(self, flag: str = names.FLAG, release: Release | str | None = None,
                       dry_run: bool = False) -> cart.FlagFix:
        """Give `flag` the demo release's own variants (Release.flag()), so its cart can read it: every
        other flag and field kept, the default mapped (a true/positive default -> the release's
        `lab_on_variant`, else `off`). The flag as it was is kept in a ConfigMap annotation for
        undo(). flagd loads it only when its pod starts: restart flagd after."""
        if isinstance(release, str):
            release = releases.get(release)
        if release is None:
            try:
                release = self.demo_release(flag, self.flag_file().variants(flag))[0]
            except (BadInput, NotFound):
                release = self.demo_release(flag)[0]

        def edit(cm: dict):
            live = self._flag_file(cm)
            before = live.data["flags"].get(flag)
            body = cart.fixed_flag(release, before, flag)
            after = live.with_flag(flag, body)
            result = cart.FlagFix(flag, release, before, body, after.text != live.text,
                                  undo=partial(self.undo_flag_fix, flag))
            if dry_run or not result.changed:
                return result, None
            kept = json.dumps({"before": before, "fixed": body}, separators=(",", ":"))
            meta = cm.setdefault("metadata", {})
            meta["annotations"] = dict(meta.get("annotations") or {}, **{_before_fix(flag): kept})
            cm["data"] = dict(cm["data"], **{names.CONFIG_KEY: after.to_json()})
            return result, cm

        return self._update_configmap(edit, f"{flag} was not fixed")

    def undo_flag_fix(self, flag: str = names.FLAG) -> cart.FlagFix:
        """Put `flag` back as it was before fix_flag_types() (kept in the ConfigMap's annotation)."""
        def edit(cm: dict):
            annotations = (cm.get("metadata") or {}).get("annotations") or {}
            if _before_fix(flag) not in annotations:
                raise BadInput(f"There is no fix of {flag} to undo: ConfigMap {names.CONFIGMAP} has no "
                               f"annotation {_before_fix(flag)} (labkit writes it when it fixes the flag).")
            live = self._flag_file(cm)
            now = live.data["flags"].get(flag)
            restored = cart.restored_flag(flag, json.loads(annotations[_before_fix(flag)]), now)
            after = live.with_flag(flag, restored) if restored is not None else live.without_flag(flag)
            cm["metadata"]["annotations"] = {k: v for k, v in annotations.items() if k != _before_fix(flag)}
            cm["data"] = dict(cm["data"], **{names.CONFIG_KEY: after.to_json()})
            return cart.FlagFix(flag, None, now, restored, True, undo=partial(self.fix_flag_types, flag)), cm

        return self._update_configmap(edit, f"{flag} was not put back")


# ---- helpers ----------------------------------------------------------------------------------------
def _before_fix(flag: str) -> str:
    """The ConfigMap annotation that keeps `flag` as it was before labkit's fix (for the undo)."""
    return f"labkit/before-fix-{flag}"[:len("labkit/") + 63]  # a name part has at most 63 characters


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


def _pods(n: int) -> str:
    return "its one Ready pod" if n == 1 else f"all {n} Ready pods"


def _serving(seen: dict) -> str:
    """'off on flagd-abc, nothing yet on flagd-def', or 'no Ready pod'."""
    if not seen:
        return "no Ready pod"
    return ", ".join(f"{s.variant if s else 'nothing yet'} on {pod}" for pod, s in seen.items())


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _terminating(pod: dict) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def _ready(pod: dict) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return not _terminating(pod) and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _ready_names(pods: dict, exclude=()) -> list[str]:
    return [n for n, p in pods.items() if n not in exclude and _ready(p)]


def _pod_states(pods: dict) -> str:
    if not pods:
        return "no pods"
    return ", ".join(
        f"{n} {'Terminating' if _terminating(p) else (p.get('status') or {}).get('phase', '?')}"
        f"{' Ready' if _ready(p) else ''}" for n, p in sorted(pods.items()))
