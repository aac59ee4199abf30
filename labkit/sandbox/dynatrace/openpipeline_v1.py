"""The old OpenPipeline configuration API, /platform/openpipeline/v1/configurations[/logs].

Deprecated since Dynatrace 1.327. A migrated tenant (the default, `Tenant(openpipeline_migrated=
True)`) answers every call 404 "Migration in-progress/completed, the requested resource is no
longer available." (docs: OpenPipeline API, get-configuration). A tenant not yet migrated answers
the v1 shapes (tenant-setup.md §A.4, from configuration-as-code-core's openpipeline client): the
list of configurations and the whole "logs" configuration, written back whole with its version and
updateToken (409 on a stale one). Only "logs" is served: the lab configures nothing else.
Scopes: openpipeline:configurations:read / openpipeline:configurations:write.
"""
from __future__ import annotations

import copy
import secrets
import threading

from labkit.sandbox.dynatrace.errors import PlatformError
from labkit.sandbox.dynatrace.tenant import Tenant
from labkit.sandbox.http import Mount, Request, Response, Route, Router, json_response

PREFIX = "/platform/openpipeline/v1"
MIGRATED = "Migration in-progress/completed, the requested resource is no longer available."
_lock = threading.Lock()


def _initial() -> dict:
    """A fresh tenant's logs configuration: the built-in default pipeline, no dynamic routes."""
    return {"id": "logs", "editable": True, "version": "1", "updateToken": secrets.token_hex(8),
            "customBasePath": "/platform/ingest/custom/logs", "endpoints": [],
            "pipelines": [{"type": "default", "id": "default", "displayName": "Default pipeline",
                           "enabled": True, "builtin": True, "editable": False,
                           "processing": {"processors": []}, "dataExtraction": {"processors": []},
                           "metricExtraction": {"processors": []},
                           "securityContext": {"processors": []},
                           "storage": {"catchAllBucketName": "default_logs", "processors": []}}],
            "routing": {"editable": True, "catchAllPipeline": {"editable": False, "pipelineId": "default"},
                        "entries": []}}


def _config(tenant: Tenant) -> dict:
    with _lock:
        if tenant.openpipeline_v1 is None:
            tenant.openpipeline_v1 = _initial()
        return tenant.openpipeline_v1


def _authorize(tenant: Tenant, req: Request, scope: str) -> None:
    tenant.authorize_platform(req, [scope])
    if tenant.openpipeline_migrated:
        raise PlatformError(404, MIGRATED, "NOT_FOUND")


def list_configurations(tenant: Tenant, req: Request) -> Response:
    _authorize(tenant, req, "openpipeline:configurations:read")
    return json_response([{"id": "logs", "editable": True}])


def get_configuration(tenant: Tenant, req: Request, configId: str) -> Response:  # noqa: N803
    _authorize(tenant, req, "openpipeline:configurations:read")
    if configId != "logs":
        raise PlatformError(404, f"Configuration {configId} not found", "NOT_FOUND")
    return json_response(copy.deepcopy(_config(tenant)))


def put_configuration(tenant: Tenant, req: Request, configId: str) -> Response:  # noqa: N803
    _authorize(tenant, req, "openpipeline:configurations:write")
    if configId != "logs":
        raise PlatformError(404, f"Configuration {configId} not found", "NOT_FOUND")
    try:
        body = req.json()
    except (ValueError, UnicodeDecodeError):
        raise PlatformError(400, "Could not parse the request body as JSON", "BAD_REQUEST") from None
    if not isinstance(body, dict) or not isinstance(body.get("pipelines"), list) \
            or not isinstance(body.get("routing"), dict):
        raise PlatformError(400, "The configuration must carry pipelines and routing", "BAD_REQUEST")
    with _lock:
        current = tenant.openpipeline_v1 or _initial()
        if body.get("version") != current["version"] or body.get("updateToken") != current["updateToken"]:
            raise PlatformError(409, "The configuration was changed in the meantime: read it again",
                                "CONFLICT")
        tenant.openpipeline_v1 = {**copy.deepcopy(body), "id": "logs",
                                  "version": str(int(current["version"]) + 1),
                                  "updateToken": secrets.token_hex(8)}
        return json_response(copy.deepcopy(tenant.openpipeline_v1))


ROUTES = Router([
    Route(f"{PREFIX}/configurations", list_configurations),
    Route(f"{PREFIX}/configurations/{{configId}}", get_configuration),
    Route(f"{PREFIX}/configurations/{{configId}}", put_configuration, ("PUT",)),
], PlatformError, name="the local lab's OpenPipeline configuration API")
MOUNT = Mount(PREFIX, ROUTES)
