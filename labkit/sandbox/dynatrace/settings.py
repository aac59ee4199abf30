"""The Settings 2.0 objects and schemas API (classic Environment API v2) over `tenant.settings`.

Served at /api/v2/settings/... (Api-Token: settings.read / settings.write) and at
/platform/classic/environment-api/v2/settings/... (Bearer platform token: settings:objects:read /
settings:objects:write, settings:schemas:read for schemas). Shapes from the reference
(tenant-setup.md §B) and the SDK `@dynatrace-sdk/client-classic-environment-v2` 9.0.1.

Choices where no public source settles it (also in the lead's report):
- POST to the single-object routing schema when its object exists REPLACES that object's value
  (same objectId, new updateToken), the Settings 2.0 upsert for a multiObject:false schema that
  Terraform's "Deploying ... will overwrite the existing one" describes. So a POST drops the other
  routes, as on a tenant: labkit must GET the object and PUT it with its updateToken.
- A pipeline that the routing object still references is not deleted: 400 with a message naming
  the referencing schema and object (the schema's deletionConstraint REFERENTIAL_INTEGRITY; the
  real wording was not found).
- A platform token lacking the scope gets 403 {"error":{"code":403,"message":"Access denied"}},
  the body a live tenant gave for a settings list (dtwiz's OpenPipeline design note); an Api-Token
  lacking it gets the classic "Token is missing required scope. Use one of: settings.read".
- An unknown schema is 404 "Schema ... not found" (GET /schemas/{id}, a list naming it, a POST item).
- Owner: every platform token is the local lab's one user (LOCAL_USER); an Api-Token leaves no owner.
"""
from __future__ import annotations

import json
import re

from labkit.sandbox.dynatrace import schema as schemas
from labkit.sandbox.dynatrace.classic import next_key, page_params, page_size
from labkit.sandbox.dynatrace.errors import EnvironmentApiError, bad_param
from labkit.sandbox.dynatrace.store import ConfigError, SettingsObject
from labkit.sandbox.dynatrace.tenant import LOCAL_USER, PLATFORM_CLASSIC, Tenant, bearer
from labkit.sandbox.http import Request, Response, json_response

READ = ("settings.read", "settings:objects:read")
WRITE = ("settings.write", "settings:objects:write")
SCHEMAS_READ = ("settings.read", "settings:schemas:read")
ADMIN = "settings:objects:admin"
DEFAULT_FIELDS = ("objectId", "value")
FIELDS = ("objectId", "summary", "searchSummary", "created", "modified", "createdBy", "modifiedBy",
          "author", "updateToken", "scope", "modificationInfo", "resourceContext", "owner",
          "schemaId", "schemaVersion", "value", "externalId")


def matcher_problem(text: str) -> str | None:
    """HOOK (the lead wires it): why a DQL matcher cannot be used, or None. It asks
    `labkit.sandbox.dynatrace.openpipeline.parse_matcher` (ValueError when the local lab cannot
    parse it) once that module exists; until then every non-blank matcher is accepted."""
    try:
        from labkit.sandbox.dynatrace.openpipeline import parse_matcher  # type: ignore[attr-defined]
    except ImportError:
        return None
    try:
        parse_matcher(text)
    except ValueError as err:
        return f"Invalid DQL matcher: {err}"
    return None


# ----- auth: one scope per API family ----------------------------------------------------------
def _authorize(tenant: Tenant, req: Request, need: tuple[str, str]) -> dict:
    """Who calls: {"owner": user or None, "by": a name for createdBy}. Checks the scope for the path."""
    admin = _flag(req, "adminAccess")
    if req.path.startswith(PLATFORM_CLASSIC + "/"):
        tenant.authorize_platform(req)  # 401 for a missing or unknown Bearer token
        held = tenant.platform_tokens.scopes(bearer(req))
        if need[1] not in held or (admin and ADMIN not in held):
            raise EnvironmentApiError(403, "Access denied")
        return {"owner": LOCAL_USER, "by": LOCAL_USER}
    info = tenant.authorize(req, need[0])
    return {"owner": None, "by": info.name if info else None}


def _flag(req: Request, name: str) -> bool:
    raw = req.query.get(name, "false").lower()
    if raw not in ("true", "false"):
        raise bad_param(name, f"{name} must be true or false")
    return raw == "true"


def _schema(tenant: Tenant, schema_id: str) -> dict:
    found = schemas.load(schema_id)
    if found is None or (not tenant.openpipeline_migrated and schema_id.startswith("builtin:openpipeline.")):
        raise EnvironmentApiError(404, f"Schema {schema_id} not found")
    return found


# ----- the object as the API shows it ----------------------------------------------------------
def _item(obj: SettingsObject, fields) -> dict:
    never = schemas.immutable(schemas.load(obj.schema_id) or {"properties": {}})
    summary = obj.value.get("displayName") or (schemas.load(obj.schema_id) or {}).get("displayName", "")
    full = {
        "objectId": obj.object_id, "summary": summary, "searchSummary": summary,
        "created": obj.created, "modified": obj.modified, "createdBy": obj.created_by,
        "modifiedBy": obj.modified_by, "author": obj.modified_by, "updateToken": obj.update_token,
        "scope": obj.scope, "schemaId": obj.schema_id,
        "schemaVersion": (schemas.load(obj.schema_id) or {}).get("version"),
        "modificationInfo": {"deletable": True, "modifiable": True, "movable": False,
                             "modifiablePaths": [], "nonModifiablePaths": never},
        "resourceContext": {"operations": ["read", "write", "delete"],
                            "modifications": {"modifiablePaths": [], "nonModifiablePaths": never}},
        "owner": {"type": "USER", "id": obj.owner} if obj.owner else None,
        "value": obj.value, "externalId": obj.external_id}
    return {k: full[k] for k in fields}


def _fields(raw: str | None) -> tuple[str, ...]:
    if raw is None:
        return DEFAULT_FIELDS
    asked = tuple(f.strip() for f in raw.split(",") if f.strip())
    unknown = [f for f in asked if f not in FIELDS]
    if unknown:
        raise bad_param("fields", f"Unknown field(s) {', '.join(unknown)}; supported: {', '.join(FIELDS)}")
    return asked


# ----- filter: the subset labkit and the SDK use ("value.customId = 'x' and ...") ---------------
CLAUSE = re.compile(r"""\s*([\w.]+)\s*(=|!=|contains|starts-with)\s*('(?:[^'\\]|\\.)*'|true|false|-?\d+)\s*""")


def _filter(raw: str | None, fields):
    if not raw:
        return lambda item: True
    groups = [[_clause(part, fields) for part in re.split(r"\s+and\s+", alt)]
              for alt in re.split(r"\s+or\s+", raw.strip())]
    return lambda item: any(all(c(item) for c in group) for group in groups)


def _clause(text: str, fields):
    found = CLAUSE.fullmatch(text)
    if not found:
        raise bad_param("filter", f"Cannot parse the filter clause {text.strip()!r}")
    path, op, literal = found.groups()
    if path.split(".")[0] not in fields:
        raise bad_param("filter", f"The filter uses {path.split('.')[0]}, which is not in fields")
    want = literal[1:-1].replace("\\'", "'") if literal.startswith("'") else json.loads(literal)

    def test(item: dict) -> bool:
        have = item
        for part in path.split("."):
            have = have.get(part) if isinstance(have, dict) else None
        if op == "=":
            return have == want
        if op == "!=":
            return have != want
        return isinstance(have, str) and (want in have if op == "contains" else have.startswith(want))
    return test


# ----- GET /settings/objects --------------------------------------------------------------------
def list_objects(tenant: Tenant, req: Request) -> Response:
    _authorize(tenant, req, READ)
    params, offset = page_params(req)
    params.pop("adminAccess", None)
    if not params.get("schemaIds") and not params.get("scopes"):
        raise bad_param("schemaIds", "Either schemaIds or scopes must be provided")
    ids = [s for s in params.get("schemaIds", "").split(",") if s]
    for schema_id in ids:
        _schema(tenant, schema_id)
    scopes = [s for s in params.get("scopes", "").split(",") if s]
    externals = [s for s in params.get("externalIds", "").split(",") if s]
    fields = _fields(params.get("fields"))
    keep = _filter(params.get("filter"), fields)
    size = page_size(params, 100, 500)
    found = [_item(o, FIELDS) for o in tenant.settings.items()
             if (not ids or o.schema_id in ids) and (not scopes or o.scope in scopes)
             and (not externals or o.external_id in externals)]
    found = [i for i in found if keep(i)]
    _sort(found, params.get("sort"), fields)
    page = found[offset:offset + size]
    body = {"items": [{k: i[k] for k in fields} for i in page], "totalCount": len(found),
            "pageSize": size}
    key = next_key(params, offset + size, len(found))
    if key:
        body["nextPageKey"] = key
    return json_response(body)


def _sort(items: list[dict], raw: str | None, fields) -> None:
    for part in reversed([p.strip() for p in (raw or "").split(",") if p.strip()]):
        name = part.lstrip("+-")
        if name not in fields:
            raise bad_param("sort", f"Cannot sort by {name}: it is not in fields")
        items.sort(key=lambda i: json.dumps(i.get(name)), reverse=part.startswith("-"))


def get_object(tenant: Tenant, req: Request, objectId: str) -> Response:  # noqa: N803
    _authorize(tenant, req, READ)
    return json_response(_item(_existing(tenant, objectId, EnvironmentApiError), FIELDS))


# ----- POST /settings/objects: a list in, a list of SettingsObjectResponse out ------------------
def _violations(schema_id: str, prefix: str, found: list[tuple[str, str]]) -> dict:
    return {"code": 400, "message": "Constraints violated.",
            "constraintViolations": [{"path": f"{prefix}{p}" if p else prefix.rstrip("/"),
                                      "message": m, "parameterLocation": "PAYLOAD_BODY",
                                      "location": None} for p, m in found]}


def _checked(tenant: Tenant, schema_id: str, value, object_id: str | None) -> tuple[dict, list]:
    """The normalised value and its violations: the schema, the matchers, UNIQUE across objects."""
    schema = schemas.load(schema_id)

    def exists(ref_type: str, ref_id: str) -> bool:
        return any(o.object_id == ref_id for o in tenant.settings.items(ref_type))

    value, found = schemas.Checker(schema, exists).check(value)
    for path, text in _matchers(value, ""):
        problem = matcher_problem(text)
        if problem:
            found.append((path, problem))
    for props, message in schemas.unique_properties(schema):
        key = [value.get(p) for p in props]
        for other_id, other in tenant.settings.values(schema_id):
            if other_id != object_id and [other.get(p) for p in props] == key:
                found.append((props[0], message or f"{', '.join(props)} must be unique"))
    return value, found


def _matchers(value, path: str):
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{path}/{k}" if path else k
            if k == "matcher" and isinstance(v, str) and v.strip():
                yield here, v
            else:
                yield from _matchers(v, here)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _matchers(v, f"{path}/{i}")


def _create_one(tenant: Tenant, item, index: int, who: dict, dry: bool) -> dict:
    if not isinstance(item, dict) or not isinstance(item.get("schemaId"), str):
        return {"code": 400, "error": {"code": 400, "message": "schemaId must be given"}}
    schema_id, scope = item["schemaId"], item.get("scope")
    try:
        schema = _schema(tenant, schema_id)
    except EnvironmentApiError as err:
        return {"code": 404, "error": {"code": 404, "message": err.message}}
    prefix = f"{schema_id}/{index}/"
    if scope not in schema["allowedScopes"]:
        return {"code": 400, "error": _violations(schema_id, prefix, [
            ("scope", f"Scope {scope!r} is not allowed; allowed: {', '.join(schema['allowedScopes'])}")]),
            "invalidValue": item.get("value")}
    single = None if schema.get("multiObject") else next(iter(tenant.settings.items(schema_id)), None)
    value, found = _checked(tenant, schema_id, item.get("value"), single and single.object_id)
    if not found and single is None and len(tenant.settings.items(schema_id)) >= schema["maxObjects"]:
        found = [("", f"The maximum number of objects ({schema['maxObjects']}) for {schema_id} is reached")]
    if found:
        return {"code": 400, "error": _violations(schema_id, prefix, found), "invalidValue": item.get("value")}
    if dry:
        return {"code": 200}
    if single is not None:  # multiObject: false -> the one object's value is replaced (see module doc)
        obj = tenant.settings.update(single.object_id, value, by=who["by"])
    else:
        obj = tenant.settings.create(schema_id, value, scope, who["owner"], item.get("externalId"),
                                     by=who["by"])
    return {"code": 200, "objectId": obj.object_id}


def create_objects(tenant: Tenant, req: Request) -> Response:
    who = _authorize(tenant, req, WRITE)
    dry = _flag(req, "validateOnly")
    try:
        body = req.json()
    except (ValueError, UnicodeDecodeError):
        raise EnvironmentApiError(400, "Could not parse the request body as JSON") from None
    if not isinstance(body, list) or not body:
        raise EnvironmentApiError(400, "The request body must be a non-empty list of settings objects")
    with tenant.settings.lock:  # one batch at a time: UNIQUE and maxObjects see each other's items
        results = [_create_one(tenant, item, i, who, dry) for i, item in enumerate(body)]
    codes = {r["code"] for r in results}
    return json_response(results, codes.pop() if len(codes) == 1 else 207)


# ----- PUT / DELETE /settings/objects/{objectId}: one SettingsObjectResponse ------------------
class ObjectError(EnvironmentApiError):
    """A PUT's or DELETE's refusal: one SettingsObjectResponse {code, error, invalidValue?}."""

    def __init__(self, status: int, message: str, invalid=None, error: dict | None = None):
        super().__init__(status, message)
        self.invalid, self.error = invalid, error or {"code": status, "message": message}

    def response(self) -> Response:
        body = {"code": self.status, "error": self.error}
        if self.invalid is not None:
            body["invalidValue"] = self.invalid
        return json_response(body, self.status)



def _existing(tenant: Tenant, object_id: str, error: type[EnvironmentApiError] = ObjectError) -> SettingsObject:
    """The object, else a 404 in `error`'s body (GET: the ErrorEnvelope; PUT/DELETE: one
    SettingsObjectResponse); an unmigrated tenant has no OpenPipeline objects."""
    try:
        obj = tenant.settings.get(object_id)
    except ConfigError as err:
        raise error(404, err.message) from None
    if not tenant.openpipeline_migrated and obj.schema_id.startswith("builtin:openpipeline."):
        raise error(404, f"Settings not found: no object with id {object_id}")
    return obj


def update_object(tenant: Tenant, req: Request, objectId: str) -> Response:  # noqa: N803
    who = _authorize(tenant, req, WRITE)
    dry = _flag(req, "validateOnly")
    try:
        body = req.json()
    except (ValueError, UnicodeDecodeError):
        raise ObjectError(400, "Could not parse the request body as JSON") from None
    if not isinstance(body, dict) or "value" not in body:
        raise ObjectError(400, "The request body must be a SettingsObjectUpdate with a value")
    with tenant.settings.lock:
        obj = _existing(tenant, objectId)
        token = body.get("updateToken")
        if token is not None and token != obj.update_token:
            raise ObjectError(409, "Failed. Conflicting resource.")
        value, found = _checked(tenant, obj.schema_id, body["value"], obj.object_id)
        schema = schemas.load(obj.schema_id)
        found += [(name, f"Property '{name}' cannot be modified (modificationPolicy NEVER)")
                  for name in schemas.immutable(schema)
                  if isinstance(value, dict) and value.get(name) != obj.value.get(name)]
        if found:
            raise ObjectError(400, "Constraints violated.", body["value"],
                             _violations(obj.schema_id, "", found))
        if not dry:
            tenant.settings.update(objectId, value, token, by=who["by"])
    return json_response({"code": 200, "objectId": objectId})


def delete_object(tenant: Tenant, req: Request, objectId: str) -> Response:  # noqa: N803
    _authorize(tenant, req, WRITE)
    with tenant.settings.lock:
        obj = _existing(tenant, objectId)
        token = req.query.get("updateToken")
        if token is not None and token != obj.update_token:
            raise ObjectError(409, "Failed. Conflicting resource.")
        for other in tenant.settings.items():
            other_schema = schemas.load(other.schema_id)
            if other_schema and (obj.schema_id, objectId) in schemas.references(other_schema, other.value):
                raise ObjectError(400, f"Cannot delete {objectId}: it is referenced by {other.schema_id} "
                                      f"object {other.object_id} (referential integrity). Remove the "
                                      "reference first.")
        tenant.settings.delete(objectId, token)
    return Response(204, b"")


# ----- schemas ----------------------------------------------------------------------------------
def list_schemas(tenant: Tenant, req: Request) -> Response:
    _authorize(tenant, req, SCHEMAS_READ)
    known = [schemas.load(s) for s in schemas.FILES
             if tenant.openpipeline_migrated or not s.startswith("builtin:openpipeline.")]
    return json_response({"items": [{"schemaId": s["schemaId"], "displayName": s["displayName"],
                                     "latestSchemaVersion": s["version"]} for s in known],
                          "totalCount": len(known)})


def get_schema(tenant: Tenant, req: Request, schemaId: str) -> Response:  # noqa: N803
    _authorize(tenant, req, SCHEMAS_READ)
    found = _schema(tenant, schemaId)
    version = req.query.get("schemaVersion")
    if version and version != found["version"]:
        raise EnvironmentApiError(404, f"Schema {schemaId} has no version {version}")
    return json_response(found)


# The paths after /api/v2 (and after /platform/classic/environment-api/v2), for routes.py.
SETTINGS_API = [
    ("/settings/objects", list_objects, ("GET",)),
    ("/settings/objects", create_objects, ("POST",)),
    ("/settings/objects/{objectId}", get_object, ("GET",)),
    ("/settings/objects/{objectId}", update_object, ("PUT",)),
    ("/settings/objects/{objectId}", delete_object, ("DELETE",)),
    ("/settings/schemas", list_schemas, ("GET",)),
    ("/settings/schemas/{schemaId}", get_schema, ("GET",)),
]
