"""What a flagd pod does with its flag file: load it at start into OpenFeature's flagd core, evaluate from it.

OFREP answers (`evaluate`) are OpenFeature's core's own (`openfeature-flagd-core`: JsonLogic targeting,
`$evaluators`/`$ref`, metadata, flagd's reasons) but for `fractional`, which is flagd v0.16's in both
paths (fractional.py: the core's newer algorithm buckets users differently), shaped as flagd's OFREP service does
(flagd v0.16 `core/pkg/service/ofrep/models.go`). Typed answers (`resolve`, what 8013 serves) follow
flagd's Go `evaluateVariant` and `resolve[T]` (core/pkg/evaluator/json.go) step by step, with the
core's JsonLogic only for the targeting rule: the core's own typed reads are looser than flagd's
(its float read of `true` is 1.0, flagd's is TYPE_MISMATCH).
"""
from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field

from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.contrib.tools.flagd.core.targeting import targeting
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import FlagNotFoundError, OpenFeatureError, ParseError

from labkit.sandbox.flagd import gojson
from labkit.sandbox.flagd.fractional import as_flagd

FLAG_FILE = "demo.flagd.json"  # flagd's --uri: ./etc/flagd/demo.flagd.json, the init container's copy
# What the core's flag model takes: it refuses any other key (the demo's `description`), flagd ignores them.
MODELED = ("state", "variants", "defaultVariant", "targeting", "metadata")
_RESOLVE = {bool: "boolean", str: "string", int: "float", float: "float", dict: "object", list: "object"}
KINDS = ("boolean", "string", "float", "int", "object")
INT64 = 2 ** 63


@dataclass
class Resolution:
    """One typed evaluation as flagd's resolver returns it. `value` None where flagd sets none (DISABLED,
    a fallback answered as DEFAULT, an error), `variant` too except on TYPE_MISMATCH (the variant whose
    value had the wrong type); `error_code` is flagd's (model/error.go), `message` its readable text."""

    value: object = None
    variant: str | None = None
    reason: str = "STATIC"
    error_code: str | None = None
    message: str | None = None
    metadata: dict = field(default_factory=dict)


# flagd's readable messages (core/pkg/model/error.go), what its gRPC/Connect errors say
MESSAGES = {"FLAG_NOT_FOUND": "Flag not found", "PARSE_ERROR": "Error parsing input or configuration",
            "TYPE_MISMATCH": "Type mismatch error", "GENERAL": "General error"}


class FlagSet:
    """The flags one flagd pod loaded at its start (none when flagd refused the file)."""

    def __init__(self, doc: dict | None = None):
        self.doc = doc if doc is not None else {"flags": {}}
        self.core = FlagdCore()
        self.core.set_flags(_modeled(self.doc))  # raises ParseError where the core refuses the file
        self.flags = _transposed(self.doc)  # as flagd's store holds them: `$ref`s to `$evaluators` replaced

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
            with as_flagd():
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

    def resolve(self, key: str, kind: str, context: dict | None = None, v1: bool = False) -> Resolution:
        """flagd's typed read of one flag (`ResolveBoolean/String/Float/Int/Object`), as its Go
        `resolve[T]` gives it: the variant's value must already be that type (JSON numbers are
        float64, so a float read of `true` is TYPE_MISMATCH; an int read truncates the float64; an
        object read takes a JSON object only). `kind` "any" takes any value (ResolveAll, OFREP).
        `v1`: flagd.evaluation.v1 asks, where a flag with no default variant is FLAG_NOT_FOUND
        (flagd's ProtoVersionKey) instead of a fallback."""
        if kind not in KINDS + ("any",):
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        variant, reason, metadata, error = self._variant(key, context, v1)
        if error is not None:
            return Resolution(None, variant or None, "ERROR", error, MESSAGES[error], metadata)
        if reason == "FALLBACK":  # no default variant: the caller's default, answered as DEFAULT
            return Resolution(None, None, "DEFAULT", None, None, metadata)
        if reason == "DISABLED":
            return Resolution(None, None, "DISABLED", None, None, metadata)
        value = _typed(self.flags[key]["variants"][variant], kind)
        if value is _MISMATCH:
            return Resolution(None, variant, "ERROR", "TYPE_MISMATCH", MESSAGES["TYPE_MISMATCH"], metadata)
        return Resolution(value, variant, reason, None, None, metadata)

    def _variant(self, key: str, context, v1: bool) -> tuple[str, str, dict, str | None]:
        """flagd's evaluateVariant -> (variant, reason, metadata, error code or None)."""
        flag = self.flags.get(key)
        if not isinstance(flag, dict):
            return "", "ERROR", {}, "FLAG_NOT_FOUND"
        metadata = {k: v for k, v in self._metadata(flag).items() if v is not None}
        if flag.get("state") == "DISABLED":
            return "", "DISABLED", metadata, None
        variants, default = flag.get("variants") or {}, flag.get("defaultVariant") or ""
        rule = flag.get("targeting")
        if rule:
            try:
                with as_flagd():
                    result = targeting(key, rule, _context(context))
            except Exception:  # jsonlogic.Apply failed: flagd answers PARSE_ERROR
                return "", "ERROR", metadata, "PARSE_ERROR"
            if result is not None:
                variant = gojson.dumps(result).replace('"', "")
                if variant in variants:
                    return variant, "TARGETING_MATCH", metadata, None
                return "", "ERROR", metadata, "GENERAL"
            if default:
                return default, "DEFAULT", metadata, None
        elif default:
            return default, "STATIC", metadata, None
        return ("", "ERROR", metadata, "FLAG_NOT_FOUND") if v1 else ("", "FALLBACK", metadata, None)

    def _metadata(self, flag) -> dict:
        meta = dict(self.core.get_flag_set_metadata())
        if isinstance(flag, dict) and isinstance(flag.get("metadata"), dict):
            meta.update(flag["metadata"])
        return meta


_MISMATCH = object()


def _typed(value, kind: str):
    """Go's type assertion `variants[variant].(T)` on a value decoded from JSON, or _MISMATCH."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "any":
        return float(value) if number else value
    if kind == "boolean":
        return value if isinstance(value, bool) else _MISMATCH
    if kind == "string":
        return value if isinstance(value, str) else _MISMATCH
    if kind == "object":
        return value if isinstance(value, dict) else _MISMATCH
    if not number:
        return _MISMATCH
    if kind == "float":
        return float(value)
    return _int64(float(value))


def _int64(value: float) -> int:
    """Go's int64(float64) conversion on amd64: truncation; out of range or NaN is math.MinInt64."""
    if math.isnan(value) or not -INT64 <= value < INT64:
        return -INT64
    return int(value)


def _transposed(doc: dict) -> dict:
    """The flags with each `{"$ref": name}` replaced by that evaluator's rule (flagd's transposeEvaluators)."""
    evaluators = doc.get("$evaluators")
    if not isinstance(evaluators, dict) or not evaluators:
        return doc["flags"]
    text = json.dumps(doc["flags"])
    for name, rule in evaluators.items():
        text = re.sub(r'\{\s*"\$ref":\s*"' + re.escape(name) + r'"\s*\}', lambda _: json.dumps(rule), text)
    return json.loads(text)


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
