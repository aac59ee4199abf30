"""flagd v0.16's `fractional` operator: which variant of a rollout a user falls in.

The demo's flagd image (v0.16.1, its `core` module v0.15.6) buckets as `core/pkg/evaluator/fractional.go`
does: a 32-bit murmur3 (seed 0) of the bucketing string's UTF-8 bytes, `(uint64(hash) * totalWeight) >> 32`,
and the variant whose cumulative weight first exceeds that bucket. The bucketing string is the first
argument when it is a string, else flagKey + targetingKey. OpenFeature's Python flagd core (2.0.0) hashes a
CBOR encoding of the value instead, so it puts other users in other variants; the shares match, the users
do not. Everything else stays the core's: only this operator is replaced, and only while the local lab's
flagd evaluates (`as_flagd()`), so OpenFeature's in-process provider running in the same Python process
keeps the core's own algorithm, as it really does.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import logging

import mmh3
from openfeature.contrib.tools.flagd.core.targeting import custom_ops

MAX_WEIGHT_SUM = 2 ** 31 - 1  # math.MaxInt32: flagd refuses a larger total weight
log = logging.getLogger(__name__)
# the module, not its `targeting` function, which the package exports under the same name
_CORE = importlib.import_module("openfeature.contrib.tools.flagd.core.targeting.targeting")
_FLAGD = contextvars.ContextVar("labkit_flagd_v016", default=False)


class _Refused(ValueError):
    """A rule flagd's parseFractionalEvaluationData refuses: it logs a warning, the operator gives nil."""


def fractional(data: dict, *args):
    """flagd v0.16's Fractional.Evaluate(values, data): a variant, or None where flagd gives nil."""
    try:
        bucket_by, weighted = _parsed(data, list(args))
    except _Refused as exc:
        log.debug("parse fractional evaluation data: %s", exc)
        return None
    if weighted is None:
        return None
    return distribute(mmh3.hash(bucket_by.encode("utf-8"), 0, signed=False), weighted)


def distribute(hash_value: int, weighted: list[tuple[object, int]]):
    """flagd's distributeValue: map the 32-bit hash onto [0, totalWeight), take that bucket's variant."""
    total = sum(weight for _, weight in weighted)
    if total == 0:
        return None
    bucket = (hash_value * total) >> 32
    end = 0
    for variant, weight in weighted:
        end += weight
        if bucket < end:
            return variant
    return None


def _parsed(data, values: list) -> tuple[str, list | None]:
    """parseFractionalEvaluationData -> (bucketing string, weighted variants); None variants: flagd's nil
    distribution (no targetingKey, or an empty one), which the flag answers with its default."""
    if not values:
        raise _Refused("fractional evaluation data must contain at least one distribution")
    if not isinstance(data, dict):
        raise _Refused("data isn't of type map[string]any")
    flag_key = (data.get("$flagd") or {}).get("flagKey", "")
    if isinstance(values[0], str):
        return values[0], _weighted(values[1:], flag_key)
    if values[0] is None:  # a custom property that is missing: flagd drops it and buckets by targetingKey
        values = values[1:]
    key = data.get("targetingKey")
    if key is None or key == "":
        return "", None
    if not isinstance(key, str):
        raise _Refused(f"flag {flag_key!r}: bucketing value not supplied and no targetingKey in context")
    return f"{flag_key}{key}", _weighted(values, flag_key)


def _weighted(values: list, flag_key: str) -> list[tuple[object, int]]:
    """parseFractionalEvaluationDistributions: [variant, weight?] pairs; weight 1 when absent or null,
    a whole number at most MaxInt32 (negative clamped to 0), entries past the second ignored as Go does."""
    out, total = [], 0
    for entry in values:
        if not isinstance(entry, list) or not entry:
            raise _Refused(f"flag {flag_key!r}: distribution elements aren't of type []any")
        variant = entry[0]
        if variant is not None and not isinstance(variant, (str, bool, int, float)):
            raise _Refused(f"flag {flag_key!r}: first element of distribution element must be a string, "
                           "bool, number, or nil")
        out.append((variant, _weight(entry[1] if len(entry) >= 2 else None, flag_key)))
        total += out[-1][1]
    if total > MAX_WEIGHT_SUM:
        raise _Refused(f"flag {flag_key!r}: sum of all weights ({total}) exceeds maximum allowed value")
    return out


def _weight(raw, flag_key: str) -> int:
    if raw is None:
        return 1
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):  # Go: not a float64
        raise _Refused(f"flag {flag_key!r}: weight must be a number")
    if raw != raw or raw != int(raw):  # NaN, or a fraction: flagd wants integers
        raise _Refused(f"flag {flag_key!r}: weights must be integers")
    if raw > MAX_WEIGHT_SUM:
        raise _Refused(f"flag {flag_key!r}: weight {int(raw)} exceeds maximum allowed value")
    return max(0, int(raw))


def _dispatch(data: dict, *args):
    """The core's `fractional` slot: flagd v0.16's inside `as_flagd()`, the core's own elsewhere."""
    return fractional(data, *args) if _FLAGD.get() else custom_ops.fractional(data, *args)


@contextlib.contextmanager
def as_flagd():
    """Evaluate with flagd v0.16's `fractional` in this thread (the core's targeting reads its operators
    from one module dict, so the slot is taken once and dispatches per thread/context)."""
    token = _FLAGD.set(True)
    try:
        yield
    finally:
        _FLAGD.reset(token)


_CORE.OPERATORS["fractional"] = _dispatch
