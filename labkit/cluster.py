"""Kubernetes: read and change the flag ConfigMap, restart flagd, ask flagd what it serves.

Uses the real `kubernetes` client (imported lazily, so `import labkit` stays cheap). Waits are
Kubernetes watches bounded by a timeout; flagd is never left scaled to 0 by an error or an interrupt.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable
from urllib.parse import quote, urlsplit

from labkit import settings as names
from labkit.errors import BadInput, Forbidden, LabError, LabTimeout, NotFound, Unreachable, nearest
from labkit.flags import FlagChange, FlagFile, format_value
from labkit.settings import Settings

Progress = Callable[[str, "float | None"], None]

LOCAL_LAB_HINT = "Is the cluster running? For the local lab: python -m labkit sandbox"
_TIMEOUT = (5, 30)          # (connect, read) seconds on every plain API call
_CONFLICT_ATTEMPTS = 5      # re-reads after a 409 before giving up
_WATCH_RETRIES = 3          # a dropped watch or a 5xx: relist and watch again this often (within the timeout)


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

    def __str__(self) -> str:
        return f"{self.variant} ({format_value(self.value)})"

    def __repr__(self) -> str:
        return f"flagd serves {self.key} = {self}, reason {self.reason or '-'}"

    def _repr_html_(self) -> str:
        from labkit import cards

        return cards.served(self, format_value(self.value))


class _Conflict(Exception):
    """A write raced another one (409): re-read and re-apply."""


def _quiet(_message: str, _fraction: float | None = None) -> None:
    pass


class Cluster:
    """The lab's Kubernetes cluster: the flag ConfigMap, the flagd Deployment and its pods."""

    def __init__(self, settings: Settings | None = None, api_client=None):
        self.settings = settings or Settings.load()
        self.namespace = self.settings.namespace
        self.api = api_client if api_client is not None else self._connect()
        self.conflicts = 0  # 409s retried by the last set_default_variant (for display and tests)

    # ---- connection ---------------------------------------------------------------------------
    def _connect(self):
        from kubernetes import client, config

        path = self.settings.kubeconfig or os.environ.get("KUBECONFIG")
        if not path:
            default = Path("~/.kube/config").expanduser()
            path = str(default) if default.is_file() else None
        try:
            if path:
                return config.new_client_from_config(config_file=path)
            cfg = client.Configuration()
            config.load_incluster_config(client_configuration=cfg)
            return client.ApiClient(cfg)
        except config.ConfigException as exc:
            where = f"kubeconfig {path}" if path else "no kubeconfig (KUBECONFIG, ~/.kube/config) and not in a pod"
            raise Unreachable(
                f"Cannot load the cluster configuration ({where}): {str(exc)[:200]}. "
                f"Set KUBECONFIG to the lab's kubeconfig. {LOCAL_LAB_HINT}, then source its lab.env."
            ) from None
        except OSError as exc:
            raise Unreachable(f"Cannot read kubeconfig {path}: {exc.strerror}. Set KUBECONFIG to the "
                              f"lab's kubeconfig. {LOCAL_LAB_HINT}.") from None

    @property
    def host(self) -> str:
        parts = urlsplit(self.api.configuration.host)
        return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")

    def _request(self, method: str, path: str, verb: str, resource: str, name: str | None,
                 body=None, query: list | None = None, content_type: str = "application/json"):
        """One API call through the kubernetes client's ApiClient (auth, TLS, proxy from kubeconfig).

        Returns the JSON body; failures become labkit errors naming the verb and the object.
        """
        import urllib3

        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        method, url, headers, body, _ = self.api.param_serialize(
            method, path, query_params=query or None, header_params=headers, body=body,
            auth_settings=["BearerToken"])
        try:
            resp = self.api.call_api(method, url, header_params=headers, body=body, _request_timeout=_TIMEOUT)
            raw = resp.read()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._unreachable(exc) from None
        if not 200 <= resp.status <= 299:
            raise self._error(resp.status, raw.decode("utf-8", "replace") if raw else None, verb, resource, name)
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            raise Unreachable(f"The Kubernetes API at {self.host} answered {verb} {resource} with something "
                              f"that is not JSON. {LOCAL_LAB_HINT}.") from None

    def _path(self, resource: str, name: str = "", sub: str = "") -> str:
        group = "/apis/apps/v1" if resource == "deployments" else "/api/v1"
        out = f"{group}/namespaces/{quote(self.namespace, safe='')}/{resource}"
        return out + (f"/{quote(name, safe='')}" if name else "") + (f"/{sub}" if sub else "")

    def _unreachable(self, exc) -> Unreachable:
        reason = "connection refused" if "refused" in str(exc).lower() else type(exc).__name__
        return Unreachable(f"Cannot reach the Kubernetes API at {self.host} ({reason}). {LOCAL_LAB_HINT}, "
                           "then source its lab.env.")

    def _error(self, status: int, body, verb: str, resource: str, name: str | None) -> LabError:
        message = _status_message(body)
        ns = self.namespace
        detail = f" ({message})" if message else ""
        if status == 409:
            return _Conflict(message)
        if status == 404:
            if resource == "configmaps":
                return NotFound(f"ConfigMap {name} not found in namespace {ns}: flagd has no flags to "
                                "serve. Create it with: kubectl apply -f flags.yaml")
            if resource.startswith("deployments"):
                return NotFound(f"Deployment {name} not found in namespace {ns}: is the OpenTelemetry "
                                f"demo installed there? Check: kubectl -n {ns} get deploy")
            return NotFound(f"{resource} {name or ''} not found in namespace {ns}{detail}.")
        if status == 403:
            return Forbidden(f"Not allowed to {verb} {resource} in namespace {ns}{detail}. The "
                             f"kubeconfig's user needs RBAC permission '{verb}' on '{resource}'; ask "
                             "for a Role that grants it or use the lab's kubeconfig.")
        if status == 401:
            return Forbidden(f"The Kubernetes API at {self.host} rejected the kubeconfig's credentials "
                             "(401 Unauthorized). Log in again or point KUBECONFIG at the lab's kubeconfig.")
        if status == 0 or status >= 500:
            return Unreachable(f"The Kubernetes API at {self.host} failed to {verb} {resource}"
                               f" ({status}{': ' + message if message else ''}). {LOCAL_LAB_HINT}.")
        if status == 422 or status == 400:
            return BadInput(f"The Kubernetes API refused to {verb} {resource} {name or ''}{detail}.")
        return LabError(f"The Kubernetes API answered {status} to {verb} {resource} {name or ''}{detail}.")

    # ---- the flag ConfigMap -------------------------------------------------------------------
    def _read_configmap(self) -> dict:
        return self._request("GET", self._path("configmaps", names.CONFIGMAP), "get", "configmaps",
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
        self.conflicts = 0
        for _ in range(_CONFLICT_ATTEMPTS):
            cm = self._read_configmap()
            change = self._flag_file(cm).set_default_variant(flag, variant)
            if dry_run or not change.changed:
                return change
            cm["data"] = dict(cm["data"], **{names.CONFIG_KEY: change.after.to_json()})
            try:  # PUT with the metadata.resourceVersion we read: optimistic concurrency
                self._request("PUT", self._path("configmaps", names.CONFIGMAP), "update", "configmaps",
                              names.CONFIGMAP, body=cm)
                return change
            except _Conflict:
                self.conflicts += 1
        raise LabError(f"ConfigMap {names.CONFIGMAP} kept changing under us ({_CONFLICT_ATTEMPTS} "
                       f"conflicting writes); {flag} was not changed. Try again in a moment.")

    # ---- flagd pods and restarts --------------------------------------------------------------
    def _list_pods(self) -> tuple[dict, str]:
        result = self._request("GET", self._path("pods"), "list", "pods", None,
                               query=[("labelSelector", names.FLAGD_SELECTOR)])
        pods = {p["metadata"]["name"]: p for p in result.get("items") or []}
        return pods, (result.get("metadata") or {}).get("resourceVersion")

    def flagd_pods(self) -> list[dict]:
        """flagd's pods for display: name, phase, ready, age (s), terminating."""
        pods, _ = self._list_pods()
        now = datetime.now(timezone.utc)
        out = []
        for name, pod in sorted(pods.items()):
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
                    timeout_message: Callable[[dict], str]) -> dict:
        """List flagd pods, then watch from the list's resourceVersion until done(pods).

        A watch that drops or a list/watch answered with a server error is retried from a fresh list
        a few times (as client-go's reflector does), still bounded by `deadline`; then Unreachable.
        """
        failures = 0
        while True:
            try:
                return self._watch_pods_once(done, deadline, on_change, timeout_message)
            except Unreachable:
                failures += 1
                delay = 0.1 * 2 ** (failures - 1)
                if failures > _WATCH_RETRIES or time.monotonic() + delay >= deadline:
                    raise
                time.sleep(delay)  # backoff before the relist, not a wait for a condition

    def _watch_pods_once(self, done: Callable[[dict], bool], deadline: float, on_change: Callable[[dict], None],
                         timeout_message: Callable[[dict], str]) -> dict:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException
        import urllib3

        pods, rv = self._list_pods()
        on_change(pods)
        while not done(pods):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LabTimeout(timeout_message(pods))
            stream = watch.Watch().stream(
                self._watch_pods_call, label_selector=names.FLAGD_SELECTOR, resource_version=rv,
                timeout_seconds=max(1, math.ceil(remaining)), _request_timeout=(5, remaining + 10))
            try:
                for event in stream:
                    obj = event.get("raw_object") or {}
                    meta = obj.get("metadata") or {}
                    rv = meta.get("resourceVersion") or rv
                    if event["type"] not in ("ADDED", "MODIFIED", "DELETED") or not meta.get("name"):
                        continue  # BOOKMARK
                    if event["type"] == "DELETED":
                        pods.pop(meta["name"], None)
                    else:
                        pods[meta["name"]] = obj
                    on_change(pods)
                    if done(pods) or time.monotonic() >= deadline:
                        break
            except ApiException as exc:
                if exc.status == 410:  # our resourceVersion is too old: relist and watch again
                    pods, rv = self._list_pods()
                    continue
                raise self._error(exc.status, exc.body, "watch", "pods", None) from None
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise self._unreachable(exc) from None
            finally:
                stream.close()
        return pods

    def _watch_pods_call(self, *, label_selector: str, resource_version: str | None, timeout_seconds: int,
                         watch: bool = True, _preload_content: bool = False, _request_timeout=None):
        """The pod list call in watch mode, for kubernetes.watch.Watch().stream: returns the open
        response. (The generated CoreV1Api would do the same but costs ~1 s to build; events stay
        plain dicts, in event["raw_object"].)"""
        import urllib3

        query = [("labelSelector", label_selector), ("timeoutSeconds", timeout_seconds), ("watch", "true")]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        method, url, headers, _, _ = self.api.param_serialize(
            "GET", self._path("pods"), query_params=query, header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"])
        try:
            resp = self.api.call_api(method, url, header_params=headers, _request_timeout=_request_timeout)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._unreachable(exc) from None
        if not 200 <= resp.status <= 299:
            raw = resp.read()
            raise self._error(resp.status, raw.decode("utf-8", "replace") if raw else None, "watch", "pods", None)
        return resp.response

    def _scale(self, replicas: int) -> None:
        self._request("PATCH", self._path("deployments", names.FLAGD_DEPLOYMENT, "scale"), "patch",
                      "deployments/scale", names.FLAGD_DEPLOYMENT, body={"spec": {"replicas": replicas}},
                      content_type="application/merge-patch+json")

    def restart_flagd(self, timeout: float = 120, progress: Progress | None = None,
                      how: str = "scale") -> RestartResult:
        """Restart flagd so it loads the ConfigMap again; return when the new pods are Ready.

        how="scale" is the lab page's way: scale to 0, wait until no flagd pod is left, scale back to
        the previous count, wait until that many pods are Ready. how="rollout" is `kubectl rollout
        restart`. Bounded by `timeout` (LabTimeout); flagd always ends at its previous replica count.
        """
        if how not in ("scale", "rollout"):
            raise BadInput(f"Unknown restart method {how!r}; use 'scale' or 'rollout'.")
        report = progress or _quiet
        start = time.monotonic()
        deadline = start + timeout
        if how == "rollout":
            return self._rollout_restart(start, deadline, timeout, report)

        scale = self._request("GET", self._path("deployments", names.FLAGD_DEPLOYMENT, "scale"), "get",
                              "deployments/scale", names.FLAGD_DEPLOYMENT)
        current = (scale.get("spec") or {}).get("replicas") or 0
        previous = max(1, current)
        name = names.FLAGD_DEPLOYMENT
        scaled_down = restored = False
        try:
            report(f"scaling deployment {name} to 0 (was {current})", 0.0)
            scaled_down = True  # set first: an interrupt mid-request must still scale back
            try:
                self._scale(0)
            except (Forbidden, NotFound, BadInput):
                scaled_down = False  # the API refused: nothing was scaled
                raise

            def gone_progress(pods):
                if pods:
                    report(f"waiting for {len(pods)} flagd pod(s) to go: {', '.join(sorted(pods))}", 0.2)

            self._watch_pods(lambda pods: not pods, deadline, gone_progress,
                             lambda pods: f"flagd pods still terminating after {timeout:g}s "
                                          f"({', '.join(sorted(pods))}); flagd is scaled back to {previous}. "
                                          f"Retry with a longer timeout, or check: kubectl -n {self.namespace} "
                                          f"get pods -l {names.FLAGD_SELECTOR}")
            report("no flagd pod left", 0.5)
            report(f"scaling deployment {name} back to {previous}", 0.55)
            self._scale(previous)
            restored = True
            pods = self._watch_pods(lambda pods: len(_ready_names(pods)) >= previous, deadline,
                                    _ready_progress(report, previous),
                                    lambda pods: f"flagd is scaled back to {previous} but not Ready after "
                                                 f"{timeout:g}s ({_pod_states(pods)}). Check: kubectl -n "
                                                 f"{self.namespace} get pods -l {names.FLAGD_SELECTOR}")
        except BaseException as exc:
            if scaled_down and not restored:
                self._scale_back(previous, exc, report)
            raise
        ready = sorted(_ready_names(pods))
        seconds = time.monotonic() - start
        report(f"flagd ready: {', '.join(ready)} ({seconds:.1f}s)", 1.0)
        return RestartResult(how="scale", replicas=previous, seconds=seconds, pods=ready)

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

    def _rollout_restart(self, start: float, deadline: float, timeout: float, report: Progress) -> RestartResult:
        name = names.FLAGD_DEPLOYMENT
        dep = self._request("GET", self._path("deployments", name), "get", "deployments", name)
        replicas = (dep.get("spec") or {}).get("replicas", 1)
        if replicas == 0:
            raise LabError(f"Deployment {name} is scaled to 0, so a rollout restart starts nothing. "
                           "Restart with how='scale' (it scales back to 1).")
        old, _ = self._list_pods()
        old_names = set(old)
        # RFC3339 like kubectl, but with microseconds: two restarts in one second must both roll
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        report(f"rollout restart of deployment {name} ({replicas} replica(s))", 0.0)
        self._request("PATCH", self._path("deployments", name), "patch", "deployments", name,
                      body={"spec": {"template": {"metadata": {"annotations": {
                          "kubectl.kubernetes.io/restartedAt": stamp}}}}},
                      content_type="application/strategic-merge-patch+json")

        def done(pods):
            return not (old_names & set(pods)) and len(_ready_names(pods, exclude=old_names)) >= replicas

        def on_change(pods):
            left = sorted(old_names & set(pods))
            ready = _ready_names(pods, exclude=old_names)
            report(f"new pods ready {len(ready)}/{replicas}" + (f"; old pods going: {', '.join(left)}" if left else ""),
                   0.1 + 0.85 * min(len(ready), replicas) / replicas * (0.5 if left else 1.0))

        pods = self._watch_pods(done, deadline, on_change,
                                lambda pods: f"rollout restart of {name} not finished after {timeout:g}s "
                                             f"({_pod_states(pods)}).")
        ready = sorted(_ready_names(pods, exclude=old_names))
        seconds = time.monotonic() - start
        report(f"flagd ready: {', '.join(ready)} ({seconds:.1f}s)", 1.0)
        return RestartResult(how="rollout", replicas=replicas, seconds=seconds, pods=ready)

    # ---- what flagd serves ----------------------------------------------------------------------
    def _ofrep(self, flag: str | None):
        """POST flagd's OFREP (one flag, or all with flag=None) through the service proxy."""
        import urllib3

        path = (self._path("services") + f"/{names.FLAGD_SERVICE}:{names.OFREP_PORT}/proxy/ofrep/v1/evaluate/flags"
                + (f"/{quote(flag, safe='')}" if flag is not None else ""))
        method, url, headers, body, _ = self.api.param_serialize(
            "POST", path, header_params={"Content-Type": "application/json", "Accept": "application/json"},
            body={"context": {}}, auth_settings=["BearerToken"])
        try:
            resp = self.api.call_api(method, url, header_params=headers, body=body, _request_timeout=(5, 15))
            raw = resp.read()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._unreachable(exc) from None
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            data = None
        return resp.status, data, raw

    def served_values(self) -> dict[str, Served]:
        """Everything flagd serves, by flag key (OFREP bulk evaluation; one request)."""
        status, data, raw = self._ofrep(None)
        if status == 200 and isinstance(data, dict) and isinstance(data.get("flags"), list):
            return {d["key"]: Served(key=d["key"], value=d.get("value"), variant=d.get("variant"),
                                     reason=d.get("reason"))
                    for d in data["flags"] if isinstance(d, dict) and "key" in d and not d.get("errorCode")}
        if status == 503:
            raise self._not_serving("its flags")
        if status in (400, 404, 405, 501):  # an older flagd without bulk evaluation: one by one
            out = {}
            for key in self.flag_file().keys:
                try:
                    out[key] = self.served_value(key)
                except BadInput:
                    pass
            return out
        raise self._error(status, raw.decode("utf-8", "replace") if raw else None, "create",
                          "services/proxy", f"{names.FLAGD_SERVICE}:{names.OFREP_PORT}")

    def _not_serving(self, what: str) -> Unreachable:
        return Unreachable(
            f"flagd is not serving (no Ready pod behind service {names.FLAGD_SERVICE}), so it cannot "
            f"say what {what} is. Wait for the pod, or restart it: kubectl -n {self.namespace} scale "
            f"deploy {names.FLAGD_DEPLOYMENT} --replicas=1")

    def served_value(self, flag: str) -> Served:
        """Ask flagd over OFREP (through the API server's service proxy) what it serves for `flag`."""
        status, data, raw = self._ofrep(flag)
        if status == 200 and isinstance(data, dict):
            return Served(key=data.get("key", flag), value=data.get("value"), variant=data.get("variant"),
                          reason=data.get("reason"))
        is_status = isinstance(data, dict) and data.get("kind") == "Status"
        if status == 503:
            raise self._not_serving(flag)
        if status == 404 and not is_status and isinstance(data, dict):
            hint = ""
            try:
                hint = nearest(flag, self.flag_file().keys)
            except LabError:
                pass
            raise BadInput(f"flagd does not know flag {flag!r} ({data.get('errorCode', 'FLAG_NOT_FOUND')})."
                           f"{hint}")
        if isinstance(data, dict) and data.get("errorCode"):
            raise LabError(f"flagd could not evaluate {flag!r}: {data.get('errorCode')} "
                           f"{str(data.get('errorDetails', ''))[:200]}".rstrip())
        raise self._error(status, raw.decode("utf-8", "replace") if raw else None, "create",
                          "services/proxy", f"{names.FLAGD_SERVICE}:{names.OFREP_PORT}")

    def wait_served(self, flag: str, variant: str, timeout: float = 30,
                    progress: Progress | None = None) -> Served:
        """Confirm flagd serves `variant` for `flag` (OFREP has no watch: a few bounded retries)."""
        report = progress or _quiet
        deadline = time.monotonic() + timeout
        delay = 0.05
        last: Served | LabError | None = None
        while True:
            try:
                last = self.served_value(flag)
                if last.variant == variant:
                    report(f"flagd serves {flag} = {last}", 1.0)
                    return last
                report(f"flagd still serves {flag} = {last}", None)
            except Unreachable as exc:
                last = exc
                report("waiting for flagd to answer", None)
            if time.monotonic() + delay > deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        seen = f"serves {last}" if isinstance(last, Served) else f"is not answering ({last})"
        raise LabTimeout(
            f"flagd {seen} for {flag} after {timeout:g}s, not {variant!r}. flagd loads the ConfigMap only "
            f"when its pod starts: restart it (python -m labkit set {flag} {variant} does).")


# ---- helpers ----------------------------------------------------------------------------------------
def _status_message(body) -> str:
    if not body:
        return ""
    try:
        data = json.loads(body) if isinstance(body, (str, bytes)) else body
    except ValueError:
        return ""
    if isinstance(data, dict):
        return str(data.get("message") or "")[:300]
    return ""


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


def _ready_progress(report: Progress, wanted: int):
    def on_change(pods):
        ready = len(_ready_names(pods))
        report(f"flagd pods ready {ready}/{wanted} ({_pod_states(pods)})", 0.55 + 0.45 * min(ready, wanted) / wanted)
    return on_change
