"""Settings 2.0 schemas as the tenant ships them, and a value checked against one (no HTTP here).

The two OpenPipeline schemas are the Terraform provider's copies (version 1.69, schemas/*.json):
types, enums, `nullable`, `default`, `precondition`, LENGTH / NOT_BLANK / NOT_EMPTY / PATTERN /
NO_WHITESPACE / UNIQUE constraints, `minObjects`/`maxObjects`, `referencedType` and
`modificationPolicy: NEVER` are read from them, not re-typed here.

Choices where the schema does not say (written down, not observed on a tenant):
- a property the schema does not have is a violation ("Unknown property"), so a typo is not lost;
- a missing property takes the schema's `default` (a missing list is empty), a missing nullable one
  stays absent; a property whose precondition does not hold is dropped from the stored value;
- messages follow the tenant's observed form "Given property 'x' with value: 'v' violates the
  following constraint: ..." (Terraform provider, settings/services/.../customlogsource);
  a `setting` that names no object of its referencedType: "Must be of type setting" (observed on a
  live tenant for a routing entry's pipelineId that was a customId, dtwiz's OpenPipeline design note).
"""
from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Callable

HERE = Path(__file__).parent / "schemas"
FILES = {"builtin:openpipeline.logs.pipelines": "logs_pipelines.schema.json",
         "builtin:openpipeline.logs.routing": "logs_routing.schema.json"}

Violation = tuple[str, str]  # (path inside the value, message)


@cache
def load(schema_id: str) -> dict | None:
    name = FILES.get(schema_id)
    return json.loads((HERE / name).read_text()) if name else None


def immutable(schema: dict) -> list[str]:
    """Top-level properties a PUT may not change (modificationPolicy NEVER)."""
    return [k for k, p in schema["properties"].items() if p.get("modificationPolicy") == "NEVER"]


def unique_properties(schema: dict) -> list[tuple[list[str], str | None]]:
    """The schema-wide UNIQUE constraints: (properties, customMessage)."""
    return [(c["uniqueProperties"], c.get("customMessage")) for c in schema.get("schemaConstraints", [])
            if c["type"] == "UNIQUE"]


def references(schema: dict, value: dict) -> list[tuple[str, str]]:
    """(referencedType, objectId) of each `setting` property in a normalised value."""
    found: list[tuple[str, str]] = []
    _walk_refs(schema, schema["properties"], value, found)
    return found


def _walk_refs(schema, props, value, found):
    for name, prop in props.items():
        if name not in value:
            continue
        kind, item = prop["type"], value[name]
        items = item if prop["type"] in ("list", "set") else [item]
        kind = prop["items"]["type"] if prop["type"] in ("list", "set") else kind
        for one in items:
            if kind == "setting" and isinstance(one, str):
                found.append((prop["referencedType"], one))
            elif isinstance(kind, dict) and "/types/" in kind["$ref"] and isinstance(one, dict):
                _walk_refs(schema, _ref(schema, kind)["properties"], one, found)


class Checker:
    """One value against one schema: `check()` gives the normalised value and the violations.
    `exists(schema_id, object_id)` answers whether a referenced settings object is there."""

    def __init__(self, schema: dict, exists: Callable[[str, str], bool]):
        self.schema, self.exists = schema, exists
        self.violations: list[Violation] = []

    def check(self, value) -> tuple[dict, list[Violation]]:
        if not isinstance(value, dict):
            self.violations.append(("", "Value must be a JSON object"))
            return {}, self.violations
        return self._object(self.schema["properties"], value, ""), self.violations

    def _fail(self, path: str, name: str, value, constraint: str) -> None:
        shown = value if isinstance(value, str) else json.dumps(value)
        self.violations.append((path, f"Given property '{name}' with value: '{shown}' violates the "
                                      f"following constraint: {constraint}"))

    def _object(self, props: dict, value: dict, path: str) -> dict:
        out = {}
        for name in value:
            if name not in props:
                self.violations.append((_join(path, name), f"Unknown property '{name}'"))
        # Preconditions read the siblings as stored: a missing one by its default.
        seen = {n: p.get("default") for n, p in props.items() if n not in value} | value
        for name, prop in props.items():
            if not _holds(prop.get("precondition"), seen):
                continue  # not applicable here: dropped, as the UI hides it
            here = _join(path, name)
            if name not in value or value[name] is None:
                if prop.get("nullable"):
                    if name in value:
                        out[name] = None
                    continue
                if prop["type"] in ("list", "set") and "default" not in prop:
                    out[name] = self._list(prop, [], here, name)
                    continue
                if "default" not in prop:
                    self.violations.append((here, f"Required property '{name}' is missing"))
                    continue
                out[name] = self._property(prop, copy.deepcopy(prop["default"]), here, name)
                continue
            out[name] = self._property(prop, value[name], here, name)
        return {k: out[k] for k in value if k in out} | out  # the sender's order, then defaults

    def _property(self, prop: dict, value, path: str, name: str):
        if prop["type"] in ("list", "set"):
            if not isinstance(value, list):
                self._fail(path, name, value, "Must be a list")
                return value
            return self._list(prop, value, path, name)
        return self._single(prop["type"], prop.get("constraints", []), prop, value, path, name)

    def _list(self, prop: dict, value: list, path: str, name: str) -> list:
        low, high = prop.get("minObjects", 0), prop.get("maxObjects")
        if len(value) < low:
            self._fail(path, name, len(value), "fell below the collection's lower size limit which "
                                               f"was set to {low}.")
        if high is not None and len(value) > high:
            self._fail(path, name, len(value), "exceeded the collection's upper size limit which "
                                               f"was set to {high}.")
        item = prop["items"]
        out = [self._single(item["type"], item.get("constraints", []), item, v, f"{path}/{i}", name)
               for i, v in enumerate(value)]
        for c in prop.get("constraints", []):
            if c["type"] == "UNIQUE":
                self._unique(out, c["uniqueProperties"], path, name)
        return out

    def _unique(self, items: list, keys: list[str], path: str, name: str) -> None:
        seen: dict[tuple, int] = {}
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            key = tuple(json.dumps(item.get(k)) for k in keys)
            if key in seen:
                self._fail(f"{path}/{i}", name, "/".join(str(item.get(k)) for k in keys),
                           f"Entries must be unique by {', '.join(keys)} (same as entry {seen[key]})")
            seen.setdefault(key, i)

    def _single(self, kind, constraints: list, prop: dict, value, path: str, name: str):
        if isinstance(kind, dict):
            target = _ref(self.schema, kind)
            if target["type"] == "enum":
                allowed = [i["value"] for i in target["items"]]
                if value not in allowed:
                    self._fail(path, name, value, "Must be one of " + ", ".join(map(str, allowed)))
                return value
            if not isinstance(value, dict):
                self._fail(path, name, value, "Must be an object")
                return value
            return self._object(target["properties"], value, path)
        if kind == "boolean":
            if not isinstance(value, bool):
                self._fail(path, name, value, "Must be a boolean")
            return value
        if kind in ("integer", "float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self._fail(path, name, value, f"Must be of type {kind}")
            return value
        if not isinstance(value, str):
            self._fail(path, name, value, f"Must be of type {kind}")
            return value
        if kind == "setting" and not self.exists(prop["referencedType"], value):
            self.violations.append((path, "Must be of type setting"))
        for c in constraints:
            problem = _text_problem(c, value)
            if problem:
                self._fail(path, name, value, problem)
        return value


def _text_problem(c: dict, value: str) -> str | None:
    kind = c["type"]
    if kind == "NOT_BLANK" and not value.strip():
        return "Must not be blank"
    if kind == "NOT_EMPTY" and not value:
        return "Must not be empty"
    if kind == "NO_WHITESPACE" and re.search(r"\s", value):
        return "Must not contain whitespace"
    if kind == "LENGTH":
        low, high = c.get("minLength", 0), c.get("maxLength")
        if len(value) < low or (high is not None and len(value) > high):
            return f"Text length must be between {low} and {high} characters"
    if kind == "PATTERN" and not re.fullmatch(c["pattern"], value, re.DOTALL):
        return c.get("customMessage") or f"Must match pattern {c['pattern']}"
    return None


def _holds(pre: dict | None, value: dict) -> bool:
    """A schema precondition (EQUALS, NULL, IN, NOT, AND, OR) on the sibling properties."""
    if pre is None:
        return True
    kind = pre["type"]
    if kind == "EQUALS":
        return value.get(pre["property"]) == pre["expectedValue"]
    if kind == "IN":
        return value.get(pre["property"]) in pre["expectedValues"]
    if kind == "NULL":
        return value.get(pre["property"]) is None
    if kind == "NOT":
        return not _holds(pre["precondition"], value)
    if kind == "AND":
        return all(_holds(p, value) for p in pre["preconditions"])
    if kind == "OR":
        return any(_holds(p, value) for p in pre["preconditions"])
    return True  # a kind the two schemas do not use


def _ref(schema: dict, kind: dict) -> dict:
    _, section, name = kind["$ref"].split("/")
    return schema[section][name]


def _join(path: str, name: str) -> str:
    return f"{path}/{name}" if path else name
