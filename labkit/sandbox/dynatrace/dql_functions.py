"""DQL's values and functions: null-aware comparisons, arrays in iterative expressions, and the
functions the lab's queries call. Functions see one record; what they need of the tenant (entity
names) comes from the context the stages run in (dql_stages.CONTEXT)."""
from __future__ import annotations

import inspect
import re
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable

from labkit.sandbox.dynatrace.dql_tokens import DqlError, Tok


@dataclass
class DqlContext:
    """What a query's stages need of the tenant they run on: the query's timeframe (makeTimeseries'
    bins), a subquery's records over that timeframe (append), an entity's name (entityName())."""
    frame: tuple[int, int]
    run: Callable[[Any], list[dict]]
    entity_name: Callable[[str], str | None]


CONTEXT: ContextVar[DqlContext | None] = ContextVar("dql_context", default=None)


def _entity_name(entity_id, type=None):  # noqa: A002  (DQL's own parameter name)
    """entityName(dt.entity.service): the entity's name as the tenant knows it, null for an id it
    does not know or a record without one (as any DQL function on null)."""
    context = CONTEXT.get()
    if not isinstance(entity_id, str) or context is None:
        return None
    return context.entity_name(entity_id)


def _truthy(v) -> bool:
    return v is True


def _not(v):
    return None if v is None else not v


class Each(list):
    """The elements of an array in an iterative expression (`arr[]`): iAny/iAll reduce them."""


def _each(value):
    return Each(value) if isinstance(value, list) else None


def _at(value, key):
    if isinstance(value, Each):
        return Each(_at(v, key) for v in value)
    if isinstance(value, dict):
        return value.get(key)
    if isinstance(value, list) and isinstance(key, int) and -len(value) <= key < len(value):
        return value[key]
    return None


def _compare(op: str, a, b):
    if isinstance(a, Each) or isinstance(b, Each):
        pairs = zip(a, b) if isinstance(a, Each) and isinstance(b, Each) else (
            ((x, b) for x in a) if isinstance(a, Each) else ((a, y) for y in b))
        return Each(_compare(op, x, y) for x, y in pairs)
    if a is None or b is None:
        return None  # DQL: comparisons with null are null, so filter drops the record
    if isinstance(a, bool) != isinstance(b, bool) or isinstance(a, str) != isinstance(b, str):
        return op == "!="
    try:
        return {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b,
                ">=": a >= b}[op]
    except TypeError:
        return None


def _phrase(text, phrase) -> bool | None:
    if not isinstance(text, str) or not isinstance(phrase, str):
        return None
    return re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", text, re.I) is not None


def _string_test(test):
    def fn(value, needle, case_sensitive=True):
        if not isinstance(value, str) or not isinstance(needle, str):
            return None
        if not case_sensitive:
            value, needle = value.lower(), needle.lower()
        return test(value, needle)
    return fn


def _in(value, *options):
    if value is None:
        return None
    if isinstance(value, list):
        return any(v in options for v in value)
    return value in options


def _matches_value(value, pattern, case_sensitive=False):
    """matchesValue(): the whole value (any element of an array), case-insensitive, `*` wildcards."""
    if isinstance(value, list):
        return any(_matches_value(v, pattern, case_sensitive) is True for v in value)
    if not isinstance(value, str) or not isinstance(pattern, str):
        return None
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, value, 0 if case_sensitive else re.I) is not None


FUNCTIONS: dict[str, Callable] = {
    "matchesPhrase": _phrase,
    "matchesValue": _matches_value,
    "contains": _string_test(lambda v, n: n in v),
    "startsWith": _string_test(lambda v, n: v.startswith(n)),
    "endsWith": _string_test(lambda v, n: v.endswith(n)),
    "in": _in,
    "isNull": lambda v: v is None,
    "isNotNull": lambda v: v is not None,
    "isTrue": lambda v: v is True,
    "isFalse": lambda v: v is False,
    "lower": lambda v: v.lower() if isinstance(v, str) else None,
    "upper": lambda v: v.upper() if isinstance(v, str) else None,
    "not": _not,
    "iAny": lambda v: any(x is True for x in v) if isinstance(v, Each) else None,
    "iAll": lambda v: all(x is True for x in v) if isinstance(v, Each) else None,
    "arraySize": lambda v: len(v) if isinstance(v, list) else None,
    "entityName": _entity_name,
}
NAMED = {"caseSensitive": "case_sensitive", "type": "type"}


def _function(name_tok: Tok, args: list, named: dict):
    fn = FUNCTIONS.get(name_tok.value)
    if fn is None:
        raise DqlError(f"The local lab's DQL does not support the function "
                       f"'{name_tok.value}()'. Supported: {', '.join(FUNCTIONS)}", name_tok.pos)
    unknown = [k for k in named if k not in NAMED]
    try:
        if unknown:
            raise TypeError
        inspect.signature(fn).bind(*args, **{NAMED[k]: 1 for k in named})
    except TypeError:
        what = f"parameter(s) {', '.join(named)}" if named else "number of arguments"
        raise DqlError(f"Wrong {what} for {name_tok.value}()", name_tok.pos) from None

    def call(r):
        return fn(*(a(r) for a in args), **{NAMED[k]: v(r) for k, v in named.items()})
    return call
