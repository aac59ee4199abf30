"""Settings 2.0 objects (`/api/v2/settings/objects`): list, get, create, update, delete.

The OpenPipeline pipelines and routing of a 2026 tenant are Settings objects (tenant-setup.md A, B).
With an API token the calls go to `/api/v2/settings/objects` (settings.read / settings.write); with a
platform token to `/platform/classic/environment-api/v2/settings/objects` (settings:objects:read /
settings:objects:write): the one request path (`_http`) chooses, as for every classic call.

Writes carry the object's `updateToken`, so a write on data someone changed since it was read is a
409 (`Conflict`) and never an overwrite; the caller re-reads. `validate_only=True` has the tenant
check a write without saving it (the setup's dry check before its first real write).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labkit.dynatrace._http import json_object
from labkit.errors import BadInput, LabError

if TYPE_CHECKING:  # pragma: no cover
    from labkit.dynatrace._http import Http

OBJECTS = "/api/v2/settings/objects"
READ, WRITE = "settings.read", "settings.write"
FIELDS = "objectId,value,updateToken,schemaId,scope,owner"  # `fields` replaces the default objectId,value
SCOPE = "environment"  # the only scope the OpenPipeline schemas allow


@dataclass
class SettingsObject:
    """One settings object as the tenant lists it."""

    object_id: str
    schema_id: str
    value: dict = field(default_factory=dict)
    update_token: str | None = None
    scope: str = SCOPE
    owner: str | None = None

    @classmethod
    def from_item(cls, item: dict, schema_id: str = "") -> "SettingsObject":
        return cls(str(item.get("objectId") or ""), str(item.get("schemaId") or schema_id),
                   item.get("value") if isinstance(item.get("value"), dict) else {},
                   item.get("updateToken"), str(item.get("scope") or SCOPE), item.get("owner"))


class SettingsObjects:
    """The tenant's Settings 2.0 objects, through the lab's one request path."""

    def __init__(self, http: "Http"):
        self._http = http

    def _call(self, method: str, path: str, *, scope: str, what: str, **kw):
        return self._http.request("classic", method, path, scope=scope, what=what, **kw)

    def list(self, schema_id: str, max_pages: int = 50) -> list[SettingsObject]:
        """Every object of `schema_id` in the tenant's order, with its updateToken (all pages)."""
        what = f"to list the settings of {schema_id}"
        params: dict[str, Any] = {"schemaIds": schema_id, "scopes": SCOPE, "fields": FIELDS,
                                  "pageSize": 500}
        found: list[SettingsObject] = []
        for _ in range(max_pages):
            page = json_object(self._call("GET", OBJECTS, scope=READ, what=what, params=params), what)
            found += [SettingsObject.from_item(i, schema_id) for i in page.get("items") or []
                      if isinstance(i, dict)]
            if not page.get("nextPageKey"):
                return found
            params = {"nextPageKey": page["nextPageKey"]}  # alone: the tenant refuses any other param
        raise LabError(f"The tenant kept paging {schema_id} after {max_pages} pages; try again.")

    def get(self, object_id: str) -> SettingsObject:
        what = f"to read the settings object {object_id}"
        body = json_object(self._call("GET", f"{OBJECTS}/{object_id}", scope=READ, what=what), what)
        return SettingsObject.from_item(body)

    def create(self, schema_id: str, value: dict, *, validate_only: bool = False) -> str | None:
        """POST one object; its new objectId (None when only validated). BadInput (400, with the
        tenant's constraint violations), Conflict (409) or a LabError naming the refusal."""
        what = f"to {'check' if validate_only else 'create'} a {schema_id} object"
        resp = self._call("POST", OBJECTS, scope=WRITE, what=what, idempotent=False,
                          params={"validateOnly": "true" if validate_only else None},
                          body=[{"schemaId": schema_id, "scope": SCOPE, "value": value}])
        results = resp.json() if resp.content else []
        result = results[0] if isinstance(results, list) and results and isinstance(results[0], dict) else {}
        if not 200 <= int(result.get("code") or resp.status_code) < 300:  # a 207 with this item refused
            raise BadInput(f"Dynatrace refused {what}: {self._http.scrub(_result_error(result))}")
        return None if validate_only else result.get("objectId")

    def update(self, obj: SettingsObject, value: dict, *, validate_only: bool = False) -> None:
        """PUT `value` guarded by the updateToken `obj` was read with: Conflict (409) when the object
        changed since (re-read and apply again on the fresh value; never overwrite)."""
        what = f"to {'check' if validate_only else 'update'} the {obj.schema_id} object {obj.object_id}"
        self._call("PUT", f"{OBJECTS}/{obj.object_id}", scope=WRITE, what=what, idempotent=False,
                   params={"validateOnly": "true" if validate_only else None},
                   body={"value": value, "updateToken": obj.update_token})

    def delete(self, obj: SettingsObject) -> None:
        """DELETE guarded by its updateToken (Conflict when it changed since it was read)."""
        what = f"to delete the {obj.schema_id} object {obj.object_id}"
        self._call("DELETE", f"{OBJECTS}/{obj.object_id}", scope=WRITE, what=what, idempotent=False,
                   params={"updateToken": obj.update_token})


def _result_error(result: dict) -> str:
    """A SettingsObjectResponse's error in words: its message and constraint violations."""
    err = result.get("error") if isinstance(result.get("error"), dict) else {}
    parts = [str(err.get("message") or f"code {result.get('code')}")]
    parts += [f"{v.get('path', '')}: {v.get('message', '')}".strip(": ")
              for v in err.get("constraintViolations") or [] if isinstance(v, dict)]
    return "; ".join(parts)
