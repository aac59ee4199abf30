"""What a flagd pod does with its flag file: load it at start into OpenFeature's flagd core, evaluate from it.

The evaluation is OpenFeature's own (`openfeature-flagd-core`: JsonLogic targeting, `fractional`,
`$evaluators`/`$ref`, metadata, flagd's reasons); this module only hands it the file and shapes the
answers as flagd's OFREP service does (flagd v0.16 `core/pkg/service/ofrep/models.go`).
"""
from __future__ import annotations

import copy
import json

from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import FlagNotFoundError, OpenFeatureError, ParseError

FLAG_FILE = "demo.flagd.json"  # flagd's --uri: ./etc/flagd/demo.flagd.json, the init container's copy
# What the core's flag model takes: it refuses any other key (the demo's `description`), flagd ignores them.
MODELED = ("state", "variants", "defaultVariant", "targeting", "metadata")
_RESOLVE = {bool: "boolean", str: "string", int: "float", float: "float", dict: "object", list: "object"}


class FlagSet:
    """The flags one flagd pod loaded at its start (none when flagd refused the file)."""

    def __init__(self, doc: dict | None = None):
        self.doc = doc if doc is not None else {"flags": {}}
        self.core = FlagdCore()
        self.core.set_flags(_modeled(self.doc))  # raises ParseError where the core refuses the file

    @property
    def keys(self) -> list[str]:
        return list(self.doc["flags"])

    def __len__(self) -> int:
        return len(self.doc["flags"])

    def evaluate(self, key: str, context: dict | None = None) -> tuple[int, dict]:
        """flagd's OFREP answer for one flag in `context` (targetingKey inside it): (status, body)."""
        flag = self.doc["flags"].get(key)
        metadata = self._metadata(flag)
        try:
            details = getattr(self.core, f"resolve_{_kind(flag)}_value")(key, None, _context(context))
        except FlagNotFoundError:
            return 404, {"key": key, "errorCode": "FLAG_NOT_FOUND",
                         "errorDetails": f"flag `{key}` does not exist", "metadata": {}}
        except ParseError:
            return 400, _error(key, "PARSE_ERROR", f"error parsing the flag `{key}`", metadata)
        except Exception:  # a variant that is not one, a type mismatch, a broken rule
            return 400, _error(key, "GENERAL", "error processing the flag for evaluation", metadata)
        body = {"key": key, "reason": str(details.reason), "metadata": dict(details.flag_metadata)}
        if details.variant is not None and details.reason != "DISABLED":  # flagd omits both otherwise
            body = {"value": flag["variants"][details.variant], **body, "variant": details.variant}
        return 200, body

    def evaluate_all(self, context: dict | None = None) -> tuple[int, dict]:
        """flagd's bulk answer: every flag in `context`, errors inline; top-level metadata is the
        selector's (none asked: empty)."""
        return 200, {"flags": [self.evaluate(k, context)[1] for k in self.keys], "metadata": {}}

    def _metadata(self, flag) -> dict:
        meta = dict(self.core.get_flag_set_metadata())
        if isinstance(flag, dict) and isinstance(flag.get("metadata"), dict):
            meta.update(flag["metadata"])
        return meta


def _error(key: str, code: str, details: str, metadata: dict) -> dict:
    return {"key": key, "errorCode": code, "errorDetails": details, "metadata": metadata}


def _kind(flag) -> str:
    """Which typed resolve flagd's bulk uses: the default variant value's type (numbers as float)."""
    variants = flag.get("variants") if isinstance(flag, dict) else None
    if not isinstance(variants, dict) or not variants:
        return "object"
    value = variants.get(flag.get("defaultVariant"), next(iter(variants.values())))
    return _RESOLVE.get(type(value), "object")


def _context(context) -> EvaluationContext:
    """The OFREP request's context as the core takes it: targetingKey apart, the rest attributes."""
    attrs = dict(context) if isinstance(context, dict) else {}
    key = attrs.pop("targetingKey", None)
    return EvaluationContext(targeting_key=key if isinstance(key, str) else None, attributes=attrs)


def _modeled(doc: dict) -> dict:
    """The file as the core models it: each flag without the keys it refuses; the file itself untouched."""
    out = {k: copy.deepcopy(v) for k, v in doc.items() if k in ("metadata", "$evaluators")}
    out["flags"] = {key: {k: copy.deepcopy(v) for k, v in body.items() if k in MODELED}
                    if isinstance(body, dict) else body for key, body in doc["flags"].items()}
    return out


def _refused(doc) -> str | None:
    """Why flagd's SetState refuses the whole file (it then serves no flags), None if it takes it."""
    if not isinstance(doc, dict) or not isinstance(doc.get("flags"), dict):
        return "unmarshalling flags map: the file has no \"flags\" object"
    for key, body in doc["flags"].items():
        if not isinstance(body, dict):
            return f"unmarshalling flags map: flag {key!r} is not an object"
        default = body.get("defaultVariant")
        if default not in (None, "") and default not in (body.get("variants") or {}):
            return f"default variant: '{default}' isn't a valid variant of flag: '{key}'"
    return None


def load_flags(text: str | None) -> tuple[FlagSet | None, str | None]:
    """The flag file's text as a starting flagd takes it -> (flags, error).

    (None, why) when flagd cannot start (no file: the init container had nothing to copy); a file
    flagd cannot use gives (no flags, why): flagd logs "error setting state" and serves nothing
    (flagd's runtime.updateAndEmit logs the SetState error and keeps running)."""
    if text is None:
        return None, f"open ./etc/flagd/{FLAG_FILE}: no such file or directory"
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return FlagSet(), f"error setting state: failed to unmarshal JSON string: {exc}"
    why = _refused(doc)
    if why is not None:
        return FlagSet(), f"error setting state: {why}"
    try:
        return FlagSet(doc), None
    except OpenFeatureError as exc:  # the core refuses what flagd might take: say so in the log
        return FlagSet(), f"error setting state: {exc}"
