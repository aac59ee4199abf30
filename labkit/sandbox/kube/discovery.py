"""What the lab's API server serves: its resource kinds, one namespace, discovery and OpenAPI documents."""
from __future__ import annotations

NS = "default"  # other namespaces exist but hold nothing of the lab's
NODE = "labkit-local-control-plane"  # a kind cluster's one node is `<cluster>-control-plane`

# resource -> (group, version, Kind); the group goes into messages as `deployments.apps`
KINDS = {
    "pods": ("", "v1", "Pod"),
    "configmaps": ("", "v1", "ConfigMap"),
    "services": ("", "v1", "Service"),
    "events": ("", "v1", "Event"),
    "endpoints": ("", "v1", "Endpoints"),
    "namespaces": ("", "v1", "Namespace"),
    "nodes": ("", "v1", "Node"),
    "deployments": ("apps", "apps/v1", "Deployment"),
    "replicasets": ("apps", "apps/v1", "ReplicaSet"),
    "endpointslices": ("discovery.k8s.io", "discovery.k8s.io/v1", "EndpointSlice"),
}
CLUSTER_SCOPED = {"namespaces", "nodes"}
READ = ("get", "list", "watch")
WRITE = ("create", "delete", "get", "list", "patch", "update", "watch")


def _resource(name, kind, short=(), verbs=WRITE, group=None, version=None, namespaced=True):
    r = {"name": name, "singularName": "" if "/" in name else kind.lower(), "namespaced": namespaced,
         "kind": kind, "verbs": list(verbs)}
    if short:
        r["shortNames"] = list(short)
    if group is not None:
        r.update(group=group, version=version)
    if kind in ("Pod", "Service", "Deployment", "ReplicaSet") and "/" not in name:
        r["categories"] = ["all"]
    return r


def _group(name: str) -> dict:
    return {"name": name, "versions": [{"groupVersion": f"{name}/v1", "version": "v1"}],
            "preferredVersion": {"groupVersion": f"{name}/v1", "version": "v1"}}


def _list(group_version: str, *resources) -> dict:
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": list(resources)}


GROUPS = ("apps", "events.k8s.io", "discovery.k8s.io", "authorization.k8s.io", "authentication.k8s.io")
DISCOVERY = {
    "/api": {"kind": "APIVersions", "versions": ["v1"]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(g) for g in GROUPS]},
    "/api/v1": _list(
        "v1",
        _resource("configmaps", "ConfigMap", ["cm"]),
        _resource("endpoints", "Endpoints", ["ep"], READ),
        _resource("events", "Event", ["ev"], READ),
        _resource("namespaces", "Namespace", ["ns"], READ, namespaced=False),
        _resource("nodes", "Node", ["no"], READ, namespaced=False),
        _resource("pods", "Pod", ["po"]),
        _resource("pods/exec", "PodExecOptions", (), ("create", "get")),
        _resource("pods/log", "Pod", (), ("get",)),
        _resource("pods/portforward", "PodPortForwardOptions", (), ("create", "get")),
        _resource("pods/proxy", "PodProxyOptions", (), ("create", "delete", "get", "patch", "update")),
        _resource("services", "Service", ["svc"], READ),
        _resource("services/proxy", "ServiceProxyOptions", (), ("create", "delete", "get", "patch", "update")),
    ),
    "/apis/apps": _group("apps"),
    "/apis/apps/v1": _list(
        "apps/v1",
        _resource("deployments", "Deployment", ["deploy"], ("get", "list", "patch", "update", "watch")),
        _resource("deployments/scale", "Scale", (), ("get", "patch", "update"), "autoscaling", "v1"),
        _resource("deployments/status", "Deployment", (), ("get",)),
        _resource("replicasets", "ReplicaSet", ["rs"], READ),
    ),
    "/apis/events.k8s.io/v1": _list("events.k8s.io/v1", _resource("events", "Event", ["ev"], READ)),
    "/apis/discovery.k8s.io/v1": _list("discovery.k8s.io/v1",
                                       _resource("endpointslices", "EndpointSlice", (), READ)),
    "/apis/authorization.k8s.io/v1": _list(
        "authorization.k8s.io/v1",
        _resource("selfsubjectaccessreviews", "SelfSubjectAccessReview", (), ("create",), namespaced=False),
        _resource("selfsubjectrulesreviews", "SelfSubjectRulesReview", (), ("create",), namespaced=False)),
    "/apis/authentication.k8s.io/v1": _list(
        "authentication.k8s.io/v1",
        _resource("selfsubjectreviews", "SelfSubjectReview", (), ("create",), namespaced=False)),
    "/version": {"major": "1", "minor": "32", "gitVersion": "v1.32.4", "gitCommit": "labkit-local-lab",
                 "gitTreeState": "clean", "buildDate": "2025-04-22T00:00:00Z", "goVersion": "go1.23.8",
                 "compiler": "gc", "platform": "linux/amd64"},
}


def _openapi_patch(path: str, group: str, kind: str) -> dict:
    # kubectl apply looks for a PATCH op with a fieldValidation query parameter, then validates server-side
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.4"}, "paths": {path: {"patch": {
        "x-kubernetes-group-version-kind": {"group": group, "version": "v1", "kind": kind},
        "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}]}}}}


OPENAPI = {
    "/openapi/v3": {"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1"},
                              "apis/apps/v1": {"serverRelativeURL": "/openapi/v3/apis/apps/v1"}}},
    "/openapi/v3/api/v1": _openapi_patch("/api/v1/namespaces/{namespace}/configmaps/{name}", "", "ConfigMap"),
    "/openapi/v3/apis/apps/v1": _openapi_patch("/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
                                               "apps", "Deployment"),
}
