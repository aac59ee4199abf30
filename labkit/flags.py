"""The flagd flag file as a value: read it, list flags, change one default variant, diff, write it back.

Pure: no I/O. A `FlagFile` keeps the exact JSON text it was read from; changing a flag's default is a
minimal text edit of that one `defaultVariant` token, so key order, whitespace, `$schema`,
`$evaluators`, `targeting`, `metadata` and every other flag stay byte-identical (and the edit is
checked by re-parsing). Built from a ConfigMap manifest, it writes a manifest `kubectl apply` accepts.
"""
from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass, field

import yaml

from labkit import cards
from labkit.errors import BadInput, LabError, NotFound, nearest

# The lab's names (kept here too: this module imports nothing of labkit but its errors).
CONFIGMAP = "flagd-config"
CONFIG_KEY = "demo.flagd.json"
NAMESPACE = "default"

# Metadata the API server owns: never written back into a manifest.
_SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation",
                  "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds")
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def format_value(value) -> str:
    """A variant value as flagd's JSON spells it: true, 0.25, "red", {"a": 1}."""
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


@dataclass(frozen=True)
class Flag:
    """One flag of the file, as a user reads it."""

    key: str
    description: str
    state: str
    variants: dict
    default_variant: str | None
    default_value: object
    has_targeting: bool

    @property
    def enabled(self) -> bool:
        return self.state != "DISABLED"


@dataclass(frozen=True)
class FlagChange:
    """One flag's default variant changed: what it was, what it is, and both whole files."""

    flag: str
    old_variant: str | None
    new_variant: str
    old_value: object
    new_value: object
    before: "FlagFile"
    after: "FlagFile"

    @property
    def changed(self) -> bool:
        return self.before.text != self.after.text

    @property
    def diff(self) -> str:
        """A unified diff of the flag file (empty when nothing changed)."""
        name = self.before.key
        return "".join(difflib.unified_diff(
            self.before.text.splitlines(keepends=True), self.after.text.splitlines(keepends=True),
            fromfile=f"a/{name}", tofile=f"b/{name}"))

    def summary(self) -> str:
        if not self.changed:
            return f"{self.flag} already defaults to {self.new_variant!r}; nothing to change."
        text = (f"{self.flag}: default variant {self.old_variant!r} ({format_value(self.old_value)}) "
                f"-> {self.new_variant!r} ({format_value(self.new_value)})")
        if self.before.flag(self.flag).has_targeting:
            text += (" (only defaultVariant changed; its targeting rules are kept and still choose the "
                     "variant for the contexts they match: the default serves the rest)")
        return text

    __repr__ = summary

    def _repr_html_(self) -> str:
        return cards.flag_change(self, self.summary())


@dataclass(frozen=True)
class FlagFile:
    """The flagd JSON (the text as read) plus where it lives (ConfigMap name, data key, metadata)."""

    text: str
    data: dict = field(repr=False, compare=False)
    name: str = CONFIGMAP
    key: str = CONFIG_KEY
    metadata: dict | None = field(default=None, repr=False, compare=False)

    # ---- reading -------------------------------------------------------------------------------
    @classmethod
    def from_json(cls, text: str, *, name: str = CONFIGMAP, key: str = CONFIG_KEY,
                  metadata: dict | None = None, _line_offset: tuple[int, int] | None = None,
                  _where: str | None = None) -> "FlagFile":
        if not isinstance(text, str):
            raise BadInput(f"{key} of ConfigMap {name} is not text; refusing to write.")
        where = _where or f"{key} (ConfigMap {name})"
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            loc = f"line {exc.lineno}, column {exc.colno}"
            if _line_offset:
                loc += (f" (line {exc.lineno + _line_offset[0]}, column {exc.colno + _line_offset[1]}"
                        " of the manifest)")
            raise BadInput(
                f"{where} is not valid JSON at {loc}: {exc.msg}. flagd cannot load it; "
                "refusing to write. Fix the JSON (e.g. a missing comma or quote) and try again."
            ) from None
        _check_shape(data, where)
        return cls(text=text, data=data, name=name, key=key, metadata=metadata)

    @classmethod
    def from_manifest(cls, yaml_text: str, *, key: str = CONFIG_KEY) -> "FlagFile":
        """From a ConfigMap manifest like the lab's flags.yaml."""
        try:
            doc = yaml.safe_load(yaml_text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            loc = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or "cannot be parsed"
            raise BadInput(f"The manifest is not valid YAML{loc}: {problem}; refusing to write. "
                           "Check the indentation around that line.") from None
        if not isinstance(doc, dict) or doc.get("kind") != "ConfigMap":
            raise BadInput("The manifest is not a ConfigMap (kind: ConfigMap with data."
                           f"{key}); refusing to write.")
        metadata = doc.get("metadata") or {}
        name = metadata.get("name") or CONFIGMAP
        return cls.from_configmap(doc.get("data") or {}, name=name, key=key, metadata=metadata,
                                  _line_offset=_block_offset(yaml_text, key))

    @classmethod
    def from_configmap(cls, data: dict | None, *, name: str = CONFIGMAP, key: str = CONFIG_KEY,
                       metadata: dict | None = None, _line_offset=None) -> "FlagFile":
        """From a ConfigMap's `data` dict (the key holds the flagd JSON)."""
        data = data or {}
        if key not in data:
            present = ", ".join(sorted(data)) or "none"
            raise NotFound(
                f"ConfigMap {name} has no data key {key!r} (keys: {present}), so flagd has no flags "
                f"to serve. Restore it with: kubectl apply -f flags.yaml")
        return cls.from_json(data[key], name=name, key=key, metadata=metadata,
                             _line_offset=_line_offset)

    # ---- listing -------------------------------------------------------------------------------
    @property
    def flags(self) -> list[Flag]:
        return [_flag(k, v) for k, v in self.data["flags"].items()]

    @property
    def keys(self) -> list[str]:
        return list(self.data["flags"])

    def flag(self, key: str) -> Flag:
        flags = self.data["flags"]
        if not isinstance(key, str) or key not in flags:
            raise BadInput(
                f"No flag {_shown(key)} in {self.key} (ConfigMap {self.name}).{nearest(str(key), flags)} "
                f"Flags: {', '.join(flags)}.")
        return _flag(key, flags[key])

    def variants(self, key: str) -> dict:
        return dict(self.flag(key).variants)

    # ---- changing ------------------------------------------------------------------------------
    def set_default_variant(self, flag: str, variant: str) -> FlagChange:
        """A new file where only `flag`'s defaultVariant is `variant` (a minimal text edit)."""
        current = self.flag(flag)
        if not isinstance(variant, str) or variant not in current.variants:
            allowed = ", ".join(f"{name} ({format_value(v)})" for name, v in current.variants.items())
            raise BadInput(
                f"Flag {flag!r} has no variant {_shown(variant)}.{nearest(str(variant), current.variants)} "
                f"Allowed variants: {allowed or 'none'}.")
        if current.default_variant == variant:
            after = self
        else:
            text = _edit_default_variant(self.text, flag, variant)
            expected = copy.deepcopy(self.data)
            expected["flags"][flag]["defaultVariant"] = variant
            new_data = json.loads(text)
            if _canonical(new_data) != _canonical(expected):  # never ship an edit that did more
                raise LabError(f"Internal check failed while editing {flag!r}; nothing was written.")
            after = FlagFile(text=text, data=new_data, name=self.name, key=self.key,
                             metadata=self.metadata)
        return FlagChange(flag=flag, old_variant=current.default_variant, new_variant=variant,
                          old_value=current.default_value, new_value=current.variants[variant],
                          before=self, after=after)

    def with_flag(self, flag: str, body: dict) -> "FlagFile":
        """A new file where `flag` is `body`: only its members that differ are rewritten (a missing flag
        is added whole), so every other flag and field stays byte-identical; checked by re-parsing."""
        current = self.data["flags"].get(flag)
        text = self.text
        if not isinstance(current, dict):
            text = _set_member(text, ["flags"], flag, body)
        else:
            for key, value in body.items():
                if key not in current or current[key] != value or type(current[key]) is not type(value):
                    text = _set_member(text, ["flags", flag], key, value)
        expected = copy.deepcopy(self.data)
        expected["flags"][flag] = dict(current or {}, **body) if isinstance(current, dict) else body
        return self._checked(text, expected, flag)

    def without_flag(self, flag: str) -> "FlagFile":
        """A new file without `flag` (the rest byte-identical)."""
        if flag not in self.data["flags"]:
            return self
        expected = copy.deepcopy(self.data)
        del expected["flags"][flag]
        return self._checked(_drop_member(self.text, ["flags"], flag), expected, flag)

    def _checked(self, text: str, expected: dict, flag: str) -> "FlagFile":
        new_data = json.loads(text)
        if _canonical(new_data) != _canonical(expected):  # never ship an edit that did more
            raise LabError(f"Internal check failed while editing {flag!r}; nothing was written.")
        return FlagFile(text=text, data=new_data, name=self.name, key=self.key, metadata=self.metadata)

    # ---- writing -------------------------------------------------------------------------------
    def to_json(self) -> str:
        return self.text

    def to_manifest(self, metadata: dict | None = None, namespace: str | None = None) -> str:
        """A ConfigMap manifest (`kubectl apply -f` accepts it) with the JSON as a literal block."""
        meta = dict(metadata if metadata is not None else (self.metadata or {}))
        for k in _SERVER_FIELDS:
            meta.pop(k, None)
        if isinstance(meta.get("annotations"), dict):
            meta["annotations"] = {k: v for k, v in meta["annotations"].items() if k != _LAST_APPLIED}
            if not meta["annotations"]:
                del meta["annotations"]
        meta["name"] = meta.get("name") or self.name
        meta["namespace"] = namespace or meta.get("namespace") or NAMESPACE
        head = yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta},
                              sort_keys=False, default_flow_style=False, allow_unicode=True)
        literal = _literal_block(self.text, indent=4)
        if literal is not None:
            out = f"---\n{head}data:\n  {_yaml_key(self.key)}: {literal}"
            if _manifest_ok(out, self.key, self.text):
                return out
        # Text a literal block cannot hold exactly (e.g. control characters): let YAML quote it.
        return "---\n" + head + yaml.safe_dump({"data": {self.key: self.text}}, sort_keys=False,
                                                allow_unicode=True, width=1 << 30)


# ---- helpers --------------------------------------------------------------------------------------
def _shown(value, limit: int = 60) -> str:
    """A name the user gave, for a message: its repr, cut short when it is long."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}… ({len(value)} characters)"
    return repr(value)


def _flag(key: str, body: dict) -> Flag:
    variants = body.get("variants") or {}
    default = body.get("defaultVariant")
    return Flag(key=key, description=str(body.get("description", "")),
                state=str(body.get("state", "ENABLED")), variants=dict(variants),
                default_variant=default, default_value=variants.get(default) if default else None,
                has_targeting=bool(body.get("targeting")))


def _check_shape(data, where: str) -> None:
    if not isinstance(data, dict) or not isinstance(data.get("flags"), dict):
        raise BadInput(f"{where} has no \"flags\" object, so it is not a flagd flag file; "
                       "refusing to write.")
    for key, body in data["flags"].items():
        if not isinstance(body, dict) or not isinstance(body.get("variants", {}), dict):
            raise BadInput(f"Flag {key!r} in {where} is not a flag object with \"variants\"; "
                           "refusing to write.")


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True)


_WS = " \t\n\r"
_DECODER = json.JSONDecoder()


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _members(text: str, i: int):
    """The members of the JSON object at text[i]: [(key, key_start, value_start, value_end)]."""
    if text[i] != "{":
        raise ValueError(f"expected an object at offset {i}")
    out = []
    i = _skip(text, i + 1)
    if text[i] == "}":
        return out, i + 1
    while True:
        if text[i] != '"':
            raise ValueError(f"expected a key at offset {i}")
        key, j = json.decoder.scanstring(text, i + 1)
        j = _skip(text, j)
        if text[j] != ":":
            raise ValueError(f"expected ':' at offset {j}")
        start = _skip(text, j + 1)
        _, end = _DECODER.raw_decode(text, start)
        out.append((key, i, start, end))
        i = _skip(text, end)
        if text[i] == ",":
            i = _skip(text, i + 1)
        elif text[i] == "}":
            return out, i + 1
        else:
            raise ValueError(f"expected ',' or '}}' at offset {i}")


def _last(members, key):
    found = [m for m in members if m[0] == key]  # json.loads keeps the last duplicate; so do we
    return found[-1] if found else None


def _edit_default_variant(text: str, flag: str, variant: str) -> str:
    top, _ = _members(text, _skip(text, 0))
    flags = _last(top, "flags")
    flag_member = _last(_members(text, flags[2])[0], flag)
    fields, end = _members(text, flag_member[2])
    token = json.dumps(variant, ensure_ascii=False)
    current = _last(fields, "defaultVariant")
    if current:
        return text[:current[2]] + token + text[current[3]:]
    # No defaultVariant yet: add one after the last member, indented like it.
    last = fields[-1]
    k = last[1]
    while k > 0 and text[k - 1] in " \t":
        k -= 1
    indent = text[k:last[1]]
    sep = ",\n" + indent if text[k - 1:k] == "\n" else ", "
    return text[:last[3]] + f'{sep}"defaultVariant": {token}' + text[last[3]:]


def _object_at(text: str, path: list[str]) -> int:
    """The offset of the JSON object reached from the top through the member keys in `path`."""
    i = _skip(text, 0)
    for key in path:
        i = _last(_members(text, i)[0], key)[2]
    return i


def _indent_of(text: str, start: int) -> str | None:
    """The whitespace before `start` on its line, None when something else comes first."""
    k = start
    while k > 0 and text[k - 1] in " \t":
        k -= 1
    return text[k:start] if k == 0 or text[k - 1] == "\n" else None


def _dump(value, indent: str | None) -> str:
    """`value` as JSON laid out like its neighbours: nested lines below the key's indent (or one line)."""
    if indent is None or not isinstance(value, (dict, list)) or not value:
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, indent=2).replace("\n", "\n" + indent)


def _set_member(text: str, path: list[str], key: str, value) -> str:
    """`text` with member `key` of the object at `path` set to `value`: its value replaced in place,
    or a new member after the last one, indented like it."""
    fields, end = _members(text, _object_at(text, path))
    current = _last(fields, key)
    if current:
        return text[:current[2]] + _dump(value, _indent_of(text, current[1])) + text[current[3]:]
    if not fields:  # an empty object: the member goes inside the braces
        return text[:end - 1] + f"{json.dumps(key)}: {_dump(value, None)}" + text[end - 1:]
    last = fields[-1]
    indent = _indent_of(text, last[1])
    sep = ",\n" + indent if indent is not None else ", "
    return text[:last[3]] + f"{sep}{json.dumps(key, ensure_ascii=False)}: {_dump(value, indent)}" + text[last[3]:]


def _drop_member(text: str, path: list[str], key: str) -> str:
    """`text` without member `key` of the object at `path` (and the comma that joined it)."""
    fields, _ = _members(text, _object_at(text, path))
    i = [f[0] for f in fields].index(key)
    if len(fields) == 1:
        return text[:fields[0][1]] + text[fields[0][3]:]
    if i + 1 < len(fields):
        return text[:fields[i][1]] + text[fields[i + 1][1]:]
    return text[:fields[i - 1][3]] + text[fields[i][3]:]


def _block_offset(yaml_text: str, key: str) -> tuple[int, int] | None:
    """(lines, columns) from the JSON inside data.<key> to the manifest, for error locations."""
    try:
        root = yaml.compose(yaml_text)
        for k, v in root.value:
            if k.value == "data":
                for dk, dv in v.value:
                    if dk.value == key and dv.style in ("|", ">"):
                        lines = yaml_text.splitlines()
                        first = dv.start_mark.line + 1
                        while first < len(lines) and not lines[first].strip():
                            first += 1
                        indent = len(lines[first]) - len(lines[first].lstrip(" "))
                        return first, indent
    except Exception:  # only a nicer error location; never a reason to fail
        return None
    return None


def _yaml_key(key: str) -> str:
    dumped = yaml.safe_dump(key, default_style=None).strip()
    return dumped.removesuffix("\n...").removesuffix("...").strip()


def _literal_block(text: str, indent: int) -> str | None:
    if not text.strip() or "\r" in text:
        return None
    stripped = text.rstrip("\n")
    trailing = len(text) - len(stripped)
    chomp = "-" if trailing == 0 else ("" if trailing == 1 else "+")
    first = next(line for line in text.split("\n") if line.strip())
    indicator = str(indent - 2) if first[:1] in " \t" else ""  # relative to the key's column
    pad = " " * indent
    body = "".join((pad + line if line else "") + "\n" for line in stripped.split("\n"))
    body += "\n" * max(trailing - 1, 0)
    return f"|{indicator}{chomp}\n{body}"


def _manifest_ok(manifest: str, key: str, text: str) -> bool:
    try:
        doc = yaml.safe_load(manifest)
    except yaml.YAMLError:
        return False
    return isinstance(doc, dict) and (doc.get("data") or {}).get(key) == text
