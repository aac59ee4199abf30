"""One path for the lab's Kubernetes requests and watches: serialize, call, map errors (like kr8s's _api).

Every call goes through the real `kubernetes` client's ApiClient (auth, TLS, proxy from the kubeconfig;
imported lazily, so `import labkit` stays cheap). Failures become labkit errors naming the verb and the
object; a 409 becomes `Conflict`, for the caller to re-read and re-apply.
"""
from __future__ import annotations

import json
import math
import os
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import quote, urlsplit

from labkit.errors import BadInput, Forbidden, LabError, NotFound, Unreachable

LOCAL_LAB_HINT = "Is the cluster running? For the local lab: python -m labkit sandbox"
_TIMEOUT = (5, 30)          # (connect, read) seconds on every plain API call
_WATCH_RETRIES = 3          # a dropped watch or a 5xx: relist and watch again this often (within the deadline)
_CHANGES = ("ADDED", "MODIFIED", "DELETED")  # watch event types that change an object (not BOOKMARK)


class Conflict(Exception):
    """A write raced another one (409): re-read and re-apply."""


class _Expired(Exception):
    """The watch's resourceVersion is older than the server's history (410): relist."""


@dataclass(frozen=True)
class Reply:
    """One answer of the API: its status, the JSON body (None if not JSON) and the text."""

    status: int
    data: object
    text: str | None


def connect(kubeconfig: str | None):
    """An ApiClient from the kubeconfig (the setting, KUBECONFIG, ~/.kube/config) or the pod's account."""
    from kubernetes import client, config

    path = kubeconfig or os.environ.get("KUBECONFIG")
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


class Kube:
    """The Kubernetes API of one namespace, through an ApiClient: calls, watches, errors."""

    def __init__(self, api, namespace: str):
        self.api = api
        self.namespace = namespace

    @property
    def host(self) -> str:
        parts = urlsplit(self.api.configuration.host)
        return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")

    def path(self, resource: str, name: str = "", sub: str = "") -> str:
        group = "/apis/apps/v1" if resource == "deployments" else "/api/v1"
        out = f"{group}/namespaces/{quote(self.namespace, safe='')}/{resource}"
        return out + (f"/{quote(name, safe='')}" if name else "") + (f"/{sub}" if sub else "")

    # ---- requests ---------------------------------------------------------------------------------
    def _open(self, method: str, path: str, body=None, query: list | None = None,
              content_type: str = "application/json", timeout=_TIMEOUT):
        """Serialize and send one request; the open response (its body not read yet)."""
        import urllib3

        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        method, url, headers, body, _ = self.api.param_serialize(
            method, path, query_params=query or None, header_params=headers, body=body,
            auth_settings=["BearerToken"])
        try:
            return self.api.call_api(method, url, header_params=headers, body=body, _request_timeout=timeout)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self.unreachable(exc) from None

    def send(self, method: str, path: str, **request) -> Reply:
        """One request, whatever the status: for answers the caller reads itself (the OFREP proxy)."""
        import urllib3

        resp = self._open(method, path, **request)
        try:
            raw = resp.read()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self.unreachable(exc) from None
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            data = None
        return Reply(resp.status, data, raw.decode("utf-8", "replace") if raw else None)

    def call(self, method: str, path: str, verb: str, resource: str, name: str | None, **request) -> dict:
        """One API call: its JSON body, or the labkit error for `verb` on `resource` `name`."""
        reply = self.send(method, path, **request)
        if not 200 <= reply.status <= 299:
            raise self.error(reply.status, reply.text, verb, resource, name)
        if reply.text is None:
            return {}
        if reply.data is None:
            raise Unreachable(f"The Kubernetes API at {self.host} answered {verb} {resource} with something "
                              f"that is not JSON. {LOCAL_LAB_HINT}.")
        return reply.data

    # ---- watches ----------------------------------------------------------------------------------
    def watch(self, resource: str, selector: str, deadline: float) -> Iterator[dict]:
        """List `resource` by label `selector`, then watch it until `deadline` (time.monotonic()).

        Yields the objects by name (one dict, kept up to date) after the list and after each change.
        A 410 (history compacted) relists. A dropped watch or a server error relists too, a few times
        with backoff (as client-go's reflector does), still bounded by `deadline`; then Unreachable.
        """
        failures = 0
        while True:
            try:
                yield from self._list_and_watch(resource, selector, deadline)
                return
            except Unreachable:
                failures += 1
                delay = 0.1 * 2 ** (failures - 1)
                if failures > _WATCH_RETRIES or time.monotonic() + delay >= deadline:
                    raise
                time.sleep(delay)  # backoff before the relist, not a wait for a condition

    def list_objects(self, resource: str, selector: str) -> tuple[dict, str | None]:
        """The objects of `resource` by label `selector`, by name, and the list's resourceVersion."""
        result = self.call("GET", self.path(resource), "list", resource, None,
                           query=[("labelSelector", selector)])
        objects = {o["metadata"]["name"]: o for o in result.get("items") or []}
        return objects, (result.get("metadata") or {}).get("resourceVersion")

    def _list_and_watch(self, resource: str, selector: str, deadline: float) -> Iterator[dict]:
        objects, rv = self.list_objects(resource, selector)
        yield objects
        while time.monotonic() < deadline:
            try:
                with closing(self._events(resource, selector, rv, deadline - time.monotonic())) as events:
                    for kind, obj in events:
                        meta = obj.get("metadata") or {}
                        rv = meta.get("resourceVersion") or rv
                        if kind not in _CHANGES or not meta.get("name"):
                            continue  # BOOKMARK
                        if kind == "DELETED":
                            objects.pop(meta["name"], None)
                        else:
                            objects[meta["name"]] = obj
                        yield objects
                        if time.monotonic() >= deadline:
                            return
            except _Expired:
                objects, rv = self.list_objects(resource, selector)
                yield objects

    def _events(self, resource: str, selector: str, rv: str | None, remaining: float) -> Iterator[tuple]:
        """(type, object) from one watch request, which the server ends after `remaining` seconds."""
        import urllib3

        query = [("labelSelector", selector), ("timeoutSeconds", max(1, math.ceil(remaining))), ("watch", "true")]
        if rv:
            query.append(("resourceVersion", rv))
        resp = self._open("GET", self.path(resource), query=query, timeout=(5, remaining + 10))
        try:
            if resp.status == 410:
                raise _Expired()
            if not 200 <= resp.status <= 299:
                raw = resp.read()
                raise self.error(resp.status, raw.decode("utf-8", "replace") if raw else None, "watch",
                                 resource, None)
            for line in resp.response:  # urllib3 reads the chunked stream line by line
                if line.strip():
                    yield self._event(line, resource)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self.unreachable(exc) from None
        finally:
            resp.response.close()
            resp.response.release_conn()

    def _event(self, line: bytes, resource: str) -> tuple:
        try:
            event = json.loads(line)
            kind, obj = event["type"], event.get("object") or {}
        except (ValueError, KeyError, TypeError):
            raise Unreachable(f"The Kubernetes API at {self.host} sent a watch event on {resource} that is "
                              f"not JSON. {LOCAL_LAB_HINT}.") from None
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Expired()
            raise self.error(obj.get("code") or 0, obj, "watch", resource, None)
        return kind, obj

    # ---- errors -----------------------------------------------------------------------------------
    def unreachable(self, exc) -> Unreachable:
        reason = "connection refused" if "refused" in str(exc).lower() else type(exc).__name__
        return Unreachable(f"Cannot reach the Kubernetes API at {self.host} ({reason}). {LOCAL_LAB_HINT}, "
                           "then source its lab.env.")

    def error(self, status: int, body, verb: str, resource: str, name: str | None) -> Exception:
        """The labkit error for an answer `status` (Conflict for a 409); `body` may be a Status."""
        message = _status_message(body)
        detail = f" ({message})" if message else ""
        if status == 409:
            return Conflict(message)
        if status == 404:
            return self._not_found(resource, name, detail)
        if status == 403:
            return Forbidden(f"Not allowed to {verb} {resource} in namespace {self.namespace}{detail}. The "
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

    def _not_found(self, resource: str, name: str | None, detail: str) -> NotFound:
        ns = self.namespace
        if resource == "configmaps":
            return NotFound(f"ConfigMap {name} not found in namespace {ns}: flagd has no flags to "
                            "serve. Create it with: kubectl apply -f flags.yaml")
        if resource.startswith("deployments"):
            return NotFound(f"Deployment {name} not found in namespace {ns}: is the OpenTelemetry "
                            f"demo installed there? Check: kubectl -n {ns} get deploy")
        return NotFound(f"{resource} {name or ''} not found in namespace {ns}{detail}.")


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
