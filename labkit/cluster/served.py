"""What flagd serves: OFREP reads through the API server's service proxy (what any client gets) and pod
proxy (what each pod says), and the wait until every Ready pod serves a variant."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import quote

from labkit import settings as names
from labkit._kube import Kube, Reply
from labkit.cluster.pods import list_pods, ready_names
from labkit.errors import BadInput, Forbidden, LabError, LabTimeout, Unreachable, nearest
from labkit.flags import FlagFile, format_value
from labkit.progress import Progress, quiet

OFREP_TIMEOUT = (5, 15)    # (connect, read) seconds on a flagd call through the API server's proxy


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


class Serving:
    """flagd's answers in one namespace; `flag_file` reads the live flag file (for names and the
    ConfigMap's say when a later change overtook ours)."""

    def __init__(self, kube: Kube, flag_file: Callable[[], FlagFile]):
        self.kube = kube
        self.namespace = kube.namespace
        self.flag_file = flag_file

    def _ofrep(self, flag: str | None, context: dict | None = None) -> Reply:
        """POST flagd's OFREP (one flag, or all with flag=None) in `context` through the service proxy."""
        path = (self.kube.path("services") + f"/{names.FLAGD_SERVICE}:{names.OFREP_PORT}/proxy/ofrep/v1/evaluate/flags"
                + (f"/{quote(flag, safe='')}" if flag is not None else ""))
        return self.kube.send("POST", path, body={"context": dict(context or {})}, timeout=OFREP_TIMEOUT)

    def _ofrep_error(self, reply: Reply) -> Exception:
        return self.kube.error(reply.status, reply.text, "create", "services/proxy",
                               f"{names.FLAGD_SERVICE}:{names.OFREP_PORT}")

    def _not_serving(self, what: str) -> Unreachable:
        return Unreachable(
            f"flagd is not serving (no Ready pod behind service {names.FLAGD_SERVICE}), so it cannot "
            f"say what {what} is. Wait for the pod, or restart it: kubectl -n {self.namespace} scale "
            f"deploy {names.FLAGD_DEPLOYMENT} --replicas=1")

    def values(self, context: dict | None = None) -> dict[str, Served]:
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
                    out[key] = self.value(key, context)
                except BadInput:
                    pass
            return out
        raise self._ofrep_error(reply)

    def value(self, flag: str, context: dict | None = None) -> Served:
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

    def by_pod(self, pod: str, flag: str) -> Served | None:
        """Ask ONE flagd pod, through the API server's pod proxy, what it serves for `flag` (OFREP).

        None while that pod does not answer (starting, going, or gone). The service proxy answers
        from one pod of its choosing; this is how each pod is asked."""
        path = (self.kube.path("pods") + f"/{quote(pod, safe='')}:{names.OFREP_PORT}/proxy/ofrep/v1/evaluate/"
                f"flags/{quote(flag, safe='')}")
        reply = self.kube.send("POST", path, body={"context": {}}, timeout=OFREP_TIMEOUT)
        data = reply.data if isinstance(reply.data, dict) else {}
        if reply.status == 200 and data:
            return _served({"key": flag, **data}, {})
        if reply.status == 503 or (reply.status == 404 and data.get("kind") == "Status"):
            return None  # nothing listens in that pod (yet, or any more), or the pod is gone
        if reply.status == 404:
            raise BadInput(f"flagd does not know flag {flag!r} ({data.get('errorCode', 'FLAG_NOT_FOUND')})."
                           f"{self._nearest_flag(flag)}")
        raise self.kube.error(reply.status, reply.text, "create", "pods/proxy", pod)

    def by_ready_pods(self, flag: str) -> dict[str, Served | None]:
        """What each Ready flagd pod serves for `flag`, by pod name ({} while no pod is Ready).

        Without RBAC for pods/proxy, the service's one answer stands in for them all."""
        pods = sorted(ready_names(list_pods(self.kube)))
        try:
            return {pod: self.by_pod(pod, flag) for pod in pods}
        except Forbidden:
            try:
                return {f"service/{names.FLAGD_SERVICE}": self.value(flag)} if pods else {}
            except Unreachable:
                return {}

    def everywhere(self, flag: str, variant: str) -> Served | None:
        """What flagd serves when every Ready pod serves `variant` for `flag`, else None."""
        seen = self.by_ready_pods(flag)
        return next(iter(seen.values())) if _all_serve(seen, variant) else None

    def wait(self, flag: str, variant: str, timeout: float = 30, progress: Progress | None = None) -> Served:
        """Return once EVERY Ready flagd pod serves `variant` for `flag`, each pod asked itself.

        OFREP has no watch: a few bounded retries. When the ConfigMap no longer says `variant`
        (someone changed the flag after us), their change wins: LabError, never a stale success."""
        report = progress or quiet
        deadline = time.monotonic() + timeout
        delay = 0.05
        seen: dict | LabError = {}
        while True:
            try:
                seen = self.by_ready_pods(flag)
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


def _all_serve(seen: dict, variant: str) -> bool:
    """True when there are Ready pods and each of them answers `variant`."""
    return bool(seen) and all(s is not None and s.variant == variant for s in seen.values())


def _served(d: dict, context: dict) -> Served:
    meta = d.get("metadata")
    return Served(key=d["key"], value=d.get("value"), variant=d.get("variant"), reason=d.get("reason"),
                  metadata=meta if isinstance(meta, dict) else {}, context=dict(context))


def _pods(n: int) -> str:
    return "its one Ready pod" if n == 1 else f"all {n} Ready pods"


def _serving(seen: dict) -> str:
    """'off on flagd-abc, nothing yet on flagd-def', or 'no Ready pod'."""
    if not seen:
        return "no Ready pod"
    return ", ".join(f"{s.variant if s else 'nothing yet'} on {pod}" for pod, s in seen.items())
