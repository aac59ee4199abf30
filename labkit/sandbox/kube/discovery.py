"""What the lab's API server serves: its resource kinds, one namespace, discovery and OpenAPI documents."""
from __future__ import annotations

NS = "default"  # other namespaces exist but hold nothing of the lab's

# resource -> (group, version, Kind); the group goes into messages as `deployments.apps`
KINDS = {
    "pods": ("", "v1", "Pod"),
    "configmaps": ("", "v1", "ConfigMap"),
    "services": ("", "v1", "Service"),
    "deployments": ("apps", "apps/v1", "Deployment"),
}


def _resource(name, kind, short=(), verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
              group=None, version=None):
    r = {"name": name, "singularName": "" if "/" in name else kind.lower(), "namespaced": True, "kind": kind,
         "verbs": list(verbs)}
    if short:
        r["shortNames"] = list(short)
    if group is not None:
        r.update(group=group, version=version)
    if kind in ("Pod", "Service", "Deployment"):
        r["categories"] = ["all"]
    return r


DISCOVERY = {
    "/api": {"kind": "APIVersions", "versions": ["v1"]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
         "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        _resource("configmaps", "ConfigMap", ["cm"], ("create", "delete", "get", "list", "patch", "update", "watch")),
        _resource("pods", "Pod", ["po"], ("create", "delete", "get", "list", "patch", "update", "watch")),
        _resource("services", "Service", ["svc"], ("get", "list", "watch")),
        _resource("services/proxy", "ServiceProxyOptions", (), ("create", "delete", "get", "patch", "update")),
    ]},
    "/apis/apps/v1": {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1", "resources": [
        _resource("deployments", "Deployment", ["deploy"], ("get", "list", "patch", "update", "watch")),
        _resource("deployments/scale", "Scale", (), ("get", "patch", "update"), "autoscaling", "v1"),
    ]},
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
