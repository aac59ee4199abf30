"""The Kubernetes API over HTTP: one route table from kubectl's paths to the cluster's verbs.

Bodies are JSON or YAML (no Content-Type means JSON, as the python client sends; a ConfigMap may
come as protobuf, as `kubectl create configmap` sends it); `as=Table` in Accept asks for
server-side printing, `watch=true` for a stream of events. 404 and 405 come from the Router, in the
apiserver's words (errors.route_error); a token other than the kubeconfig's is a 401 (auth).
"""
from __future__ import annotations

import json
from typing import Iterator

import yaml

from labkit.sandbox.http import Request, Response, Route, Router, json_response
from labkit.sandbox.kube import auth, events, portforward, protobuf
from labkit.sandbox.kube.controllers import LocalCluster
from labkit.sandbox.kube.discovery import CLUSTER_SCOPED, DISCOVERY, KINDS, NS, OPENAPI
from labkit.sandbox.kube.errors import (StatusError, bad_request, not_found, route_error, unavailable,
                                        unknown_path)
from labkit.sandbox.kube.printers import table
from labkit.sandbox.kube.seed import FLAGD

MAX_WATCH_SECONDS = 1800.0
VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
BODY_TYPES = ("application/json", "application/yaml", "application/vnd.kubernetes.protobuf")
PATCH_TYPES = ("application/strategic-merge-patch+json", "application/merge-patch+json",
               "application/json-patch+json", "application/apply-patch+yaml")


# ---- requests ------------------------------------------------------------------------------------
def _is_true(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _dry_run(req: Request) -> bool:
    return bool(req.query.get("dryRun"))


def _wants_table(req: Request) -> bool:
    return "as=Table" in req.headers.get("accept", "")


def _group(req: Request) -> str:
    parts = req.path.split("/")
    return parts[2] if parts[1] == "apis" and len(parts) > 2 else ""


def _body(req: Request, patch: bool = False):
    """Decode a request body: no Content-Type means JSON (python client); protobuf only for ConfigMaps."""
    ctype = req.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    accepted = PATCH_TYPES if patch else BODY_TYPES
    if ctype not in accepted and (patch or ctype):
        raise StatusError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                          f"accepted media types include: {', '.join(accepted)}")
    if ctype == "application/vnd.kubernetes.protobuf":
        try:
            return protobuf.decode(req.body), ctype
        except (ValueError, UnicodeDecodeError) as exc:
            raise StatusError(415, "UnsupportedMediaType", f"the body of the request could not be read as "
                              f"protobuf ({exc}); send it as JSON (Content-Type: application/json)") from None
    try:
        return (yaml.safe_load if "yaml" in ctype else json.loads)(req.body.decode() or "null"), ctype
    except (ValueError, yaml.YAMLError) as exc:
        raise bad_request(f"the body of the request could not be decoded: {exc}") from None


def _object(req: Request) -> dict:
    body, _ = _body(req)
    if not isinstance(body, dict):
        raise bad_request("the body of the request must be an object")
    return body


def _in_lab(req: Request, resource: str, namespace: str | None, name: str | None = None) -> bool:
    """404 for a resource this API group does not serve. Other namespaces hold nothing of the lab's:
    False for their collections (listed empty), not found for their objects."""
    group = _group(req)
    if KINDS.get(resource, (None,))[0] != group and (resource, group) != ("events", "events.k8s.io"):
        raise unknown_path()
    if (namespace is not None and resource in CLUSTER_SCOPED) or (
            namespace is None and name and resource not in CLUSTER_SCOPED):
        raise unknown_path()
    if namespace in (None, NS):
        return True
    if name:
        raise not_found(resource, name)
    return False


def _empty_list(cluster: LocalCluster, resource: str) -> Response:
    _, api_version, kind = KINDS[resource]
    return json_response({"kind": f"{kind}List", "apiVersion": api_version,
                          "metadata": {"resourceVersion": cluster.resource_version()}, "items": []})


def _view(req: Request, resource: str):
    """events.k8s.io/v1 serves the same Events in its own shape, and selects on its own field names."""
    if resource == "events" and _group(req) == "events.k8s.io":
        fields = req.query.get("fieldSelector")
        if fields:
            req.query["fieldSelector"] = ",".join(events.v1_field(t.split("=")[0].rstrip("!")) + t[len(
                t.split("=")[0].rstrip("!")):] for t in fields.split(","))
        return events.to_events_v1
    return None


# ---- collections ---------------------------------------------------------------------------------
def _list(cluster: LocalCluster, req: Request, resource: str, namespace: str | None = None) -> Response:
    if not _in_lab(req, resource, namespace):
        return _empty_list(cluster, resource)
    watch = _is_true(req.query.get("watch"))
    cluster.check("watch" if watch else "list", resource, None)
    view = _view(req, resource)
    if watch:
        return _watch(cluster, req, resource, view)
    items, rv = cluster.list(resource, req.query.get("labelSelector"), req.query.get("fieldSelector"))
    if _wants_table(req):
        return json_response(table(resource, items, rv))
    _, api_version, kind = KINDS[resource]
    if view:
        items, api_version = [view(i) for i in items], "events.k8s.io/v1"
    return json_response({"kind": f"{kind}List", "apiVersion": api_version,
                          "metadata": {"resourceVersion": rv}, "items": items})


def _watch(cluster: LocalCluster, req: Request, resource: str, view=None) -> Response:
    if cluster.stopped:  # a clean error, not an empty stream a client would reconnect to at once
        raise unavailable("the local lab's Kubernetes API has stopped")
    timeout = min(float(req.query.get("timeoutSeconds") or MAX_WATCH_SECONDS), MAX_WATCH_SECONDS)
    changes = cluster.watch(resource, req.query.get("labelSelector"), req.query.get("fieldSelector"),
                            req.query.get("resourceVersion"), timeout,
                            _is_true(req.query.get("allowWatchBookmarks")))
    return Response(200, _event_lines(changes, resource, _wants_table(req), view), "application/json")


def _event_lines(changes, resource: str, want_table: bool, view=None) -> Iterator[bytes]:
    """One JSON line per watch event; objects as one-row Tables when kubectl watches a Table."""
    try:
        for kind, obj in changes:
            if want_table and kind in ("ADDED", "MODIFIED", "DELETED"):
                obj = table(resource, [obj], obj["metadata"]["resourceVersion"])
            elif view and kind in ("ADDED", "MODIFIED", "DELETED"):
                obj = view(obj)
            yield json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"
    finally:
        changes.close()


def _create(cluster: LocalCluster, req: Request, resource: str, namespace: str | None = None) -> Response:
    if not _in_lab(req, resource, namespace):
        return _empty_list(cluster, resource)
    cluster.check("create", resource, None)
    return json_response(cluster.create(resource, _object(req), _dry_run(req),
                                        req.query.get("fieldValidation")), 201)


# ---- objects -------------------------------------------------------------------------------------
def _get(cluster: LocalCluster, req: Request, resource: str, name: str, namespace: str | None = None) -> Response:
    _in_lab(req, resource, namespace, name)
    cluster.check("get", resource, name)
    obj = cluster.get(resource, name)
    if _wants_table(req):
        return json_response(table(resource, [obj], obj["metadata"]["resourceVersion"]))
    view = _view(req, resource)
    return json_response(view(obj) if view else obj)


def _replace(cluster: LocalCluster, req: Request, resource: str, name: str, namespace: str | None = None) -> Response:
    _in_lab(req, resource, namespace, name)
    cluster.check("update", resource, name)
    return json_response(cluster.replace(resource, name, _object(req), _dry_run(req),
                                         req.query.get("fieldValidation")))


def _patch(cluster: LocalCluster, req: Request, resource: str, name: str, namespace: str | None = None) -> Response:
    _in_lab(req, resource, namespace, name)
    cluster.check("patch", resource, name)
    body, ctype = _body(req, patch=True)
    obj, status = cluster.patch(resource, name, ctype, body, _dry_run(req), req.query.get("fieldValidation"))
    return json_response(obj, status)


def _delete(cluster: LocalCluster, req: Request, resource: str, name: str, namespace: str | None = None) -> Response:
    _in_lab(req, resource, namespace, name)
    cluster.check("delete", resource, name)
    return json_response(cluster.delete(resource, name))


# ---- subresources --------------------------------------------------------------------------------
def _scale(cluster: LocalCluster, req: Request, name: str, namespace: str) -> Response:
    _in_lab(req, "deployments", namespace, name)
    cluster.check(VERBS.get(req.method, "get"), "deployments/scale", name)
    if req.method == "PATCH":
        body, ctype = _body(req, patch=True)
        return json_response(cluster.set_scale(name, ctype, body))
    if req.method == "PUT":
        body, _ = _body(req)
        return json_response(cluster.set_scale(name, None, body))
    return json_response(cluster.scale(name))


def _status(cluster: LocalCluster, req: Request, name: str, namespace: str) -> Response:
    """deployments/{name}/status: the Deployment itself (the python client's read_..._status)."""
    _in_lab(req, "deployments", namespace, name)
    cluster.check("get", "deployments/status", name)
    return json_response(cluster.get("deployments", name))


def _log(cluster: LocalCluster, req: Request, name: str, namespace: str) -> Response:
    """pods/{name}/log: a container's log, or a stream of it that stays open (follow)."""
    _in_lab(req, "pods", namespace, name)
    cluster.check("get", "pods/log", name)
    return Response(200, cluster.container_log(name, req.query), "text/plain")


def _exec(cluster: LocalCluster, req: Request, name: str, namespace: str) -> Response:
    """exec and attach: nothing runs here, and the answer says so (a cluster would run the command)."""
    _in_lab(req, "pods", namespace, name)
    pod = cluster.get("pods", name)
    container = req.query.get("container") or pod["spec"]["containers"][0]["name"]
    if container == FLAGD:
        why = (f'flagd\'s image has no shell either: on the lab\'s cluster this fails with exec: '
               f'"{req.query.get("command", "sh")}": executable file not found in $PATH. Ask flagd over '
               "OFREP instead: kubectl port-forward svc/flagd 8016:8016")
    else:
        why = f"on the lab's cluster this would run in container {container}"
    raise bad_request(f"the local lab runs no containers, so nothing can be executed in pod {name}; {why}")


def _proxy(cluster: LocalCluster, req: Request, name: str, namespace: str, rest: str = "") -> Response:
    """The service proxy: flagd's pods answer themselves; registered apps get the request forwarded."""
    _in_lab(req, "services", namespace, name)
    pieces = name.split(":")  # name, name:port or scheme:name:port
    service, port = (pieces[-2], pieces[-1]) if len(pieces) > 1 else (name, "")
    cluster.check(VERBS.get(req.method, "get"), "services/proxy", service)
    ports = cluster.get("services", service)["spec"]["ports"]
    match = [p["port"] for p in ports if not port or str(p["port"]) == port or p.get("name") == port]
    if not match:
        raise unavailable(f'no endpoints available for service "{name}"')
    if service == FLAGD:
        process = cluster.flagd_process()
        answer = None if process is None else process.serve(req, match[0], rest)
        if answer is None:  # no Ready flagd pod, whatever the path
            raise unavailable(f'no endpoints available for service "{FLAGD}"')
        return answer
    app = cluster.service_app(service, match[0])
    if app is None:
        raise unavailable(f'no endpoints available for service "{service}"')
    headers = {k: v for k, v in req.headers.items() if k != "authorization"}  # the apiserver drops them
    return app(Request(req.method, "/" + rest, dict(req.query), headers, req.body))


def _pod_proxy(cluster: LocalCluster, req: Request, name: str, namespace: str, rest: str = "") -> Response:
    """The pod proxy (pods/{name}[:port]/proxy/...): that one pod answers, from what it loaded."""
    _in_lab(req, "pods", namespace, name)
    pod, _, port = name.partition(":")
    cluster.check(VERBS.get(req.method, "get"), "pods/proxy", pod)
    obj = cluster.get("pods", pod)
    process = cluster.pod_process(pod)
    number = int(port) if port.isdigit() else 80
    answer = None if process is None else process.serve(req, number, rest)
    if answer is None and process is not None and process.address(number):  # gRPC only: it hangs up
        raise unavailable("error trying to reach service: EOF")
    if answer is None:  # not Ready (starting, crash-looping or terminating), or nothing on that port
        raise unavailable(f'error trying to reach service: dial tcp {obj["status"].get("podIP", "")}:'
                          f'{number}: connect: connection refused')
    return answer


def _document(doc: dict):
    return lambda cluster, req: json_response(doc)


def _objects(namespace: str) -> list[Route]:
    """A namespace's collections and objects: list and watch, create, get, replace, patch, delete."""
    collection, item = namespace + "/{resource}", namespace + "/{resource}/{name}"
    return [Route(collection, _list), Route(collection, _create, ("POST",)),
            Route(item, _get), Route(item, _replace, ("PUT",)), Route(item, _patch, ("PATCH",)),
            Route(item, _delete, ("DELETE",))]


CORE, APPS = "/api/v1/namespaces/{namespace}", "/apis/apps/v1/namespaces/{namespace}"
EVENTS, SLICES = "/apis/events.k8s.io/v1/namespaces/{namespace}", "/apis/discovery.k8s.io/v1/namespaces/{namespace}"
ROUTES = [
    *(Route(path, _document(doc)) for path, doc in {**DISCOVERY, **OPENAPI}.items()),
    *(Route(path, auth.health) for path in auth.HEALTH),
    Route("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", auth.access_review, ("POST",)),
    Route("/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", auth.rules_review, ("POST",)),
    Route("/apis/authentication.k8s.io/v1/selfsubjectreviews", auth.self_review, ("POST",)),
    Route("/api/v1/{resource}", _list),  # every namespace: the lab's
    Route("/api/v1/{resource}/{name}", _get),  # namespaces and nodes (cluster-scoped)
    Route("/apis/{group}/v1/{resource}", lambda c, r, group, resource: _list(c, r, resource)),
    Route(CORE + "/services/{name}/proxy", _proxy, ("*",)),
    Route(CORE + "/services/{name}/proxy/{rest:path}", _proxy, ("*",)),
    Route(CORE + "/pods/{name}/proxy", _pod_proxy, ("*",)),
    Route(CORE + "/pods/{name}/proxy/{rest:path}", _pod_proxy, ("*",)),
    Route(CORE + "/pods/{name}/log", _log),
    Route(CORE + "/pods/{name}/exec", _exec, ("GET", "POST")),
    Route(CORE + "/pods/{name}/attach", _exec, ("GET", "POST")),
    Route(CORE + "/pods/{name}/portforward", portforward.handle, ("GET", "POST")),
    Route(APPS + "/deployments/{name}/scale", _scale, ("GET", "PATCH", "PUT")),
    Route(APPS + "/deployments/{name}/status", _status),
    *_objects(CORE),
    *_objects(APPS),
    *_objects(EVENTS),
    *_objects(SLICES),
]


def app(cluster: LocalCluster):
    """The API server front for LabServer: the token first, then the route table."""
    router = Router(ROUTES, route_error, cluster, "the local lab's Kubernetes API")

    def serve(req: Request) -> Response:
        return auth.unauthorized(req, cluster.token, cluster.token_required) or router(req)
    return serve
