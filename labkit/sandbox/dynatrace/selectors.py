"""Selector parsing: the quote-aware scanner, entitySelector and metricSelector (the lab's subset).

Values may be quoted ("...", with '~' escaping inside quotes); anything outside the subset the lab
uses is a 400 whose message says the local lab does not support it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from labkit.sandbox.dynatrace.errors import bad_param
from labkit.sandbox.dynatrace.telemetry import MonitoredEntity


def _scan(text: str, start: int = 0):
    """(index, char, depth) of each character outside Dynatrace quotes ('~' escapes inside them);
    depth counts the parentheses open before it. Raises ValueError on unbalanced text at the end."""
    depth, quoted, i = 0, False, start
    while i < len(text):
        c = text[i]
        if quoted and c == "~":
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif not quoted:
            yield i, c, depth
            depth += (c == "(") - (c == ")")
        i += 1
    if quoted or depth:
        raise ValueError("unbalanced quotes or parentheses")


def split_top(text: str, sep: str = ",") -> list[str]:
    """Split on `sep` outside quotes and parentheses."""
    cuts = [i for i, c, depth in _scan(text) if c == sep and depth == 0]
    bounds = zip([-1, *cuts], [*cuts, len(text)])
    return [text[a + 1:b].strip() for a, b in bounds]


def closing_paren(text: str, start: int) -> int:
    """Index of the parenthesis that closes the one at `start`."""
    for i, c, depth in _scan(text, start):
        if c == ")" and depth == 1:
            return i
    raise ValueError("unbalanced parentheses")


CALL_RE = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*\((.*)\)\s*$", re.S)


def parse_call(text: str) -> tuple[str, str]:
    """`name(args)` -> (name, raw args). Raises ValueError when it is not a call."""
    m = CALL_RE.match(text)
    if not m:
        raise ValueError(f"expected name(value), got '{text}'")
    split_top(m.group(2))  # checks the parentheses belong together
    return m.group(1), m.group(2)


def unquote(value: str) -> tuple[str, bool]:
    """A selector value: '"a~"b"' -> ('a"b', True); 'cart' -> ('cart', False)."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"~(.)", r"\1", value[1:-1]), True
    return value, False


def call_values(args: str, require_quotes: bool = False) -> list[str]:
    values = []
    for raw in split_top(args):
        if raw == "":
            continue
        value, quoted = unquote(raw)
        if require_quotes and not quoted:
            raise ValueError(f"value {raw} must be quoted")
        values.append(value)
    return values


def criteria(text: str, criterion: Callable[[str, list[str]], Callable],
             require_quotes: bool = False) -> Callable:
    """`a(x),b("y")` -> one predicate that holds when each criterion's does (ValueError if bad)."""
    tests = []
    for part in split_top(text):
        name, args = parse_call(part)
        tests.append(criterion(name, call_values(args, require_quotes)))
    return lambda item: all(t(item) for t in tests)


@dataclass
class EntitySelector:
    text: str
    predicates: list[Callable[[MonitoredEntity], bool]]
    by_id: bool  # entityId(...) bypasses the "seen in the last 24 h" rule of event ingest

    def matches(self, entity: MonitoredEntity) -> bool:
        return all(p(entity) for p in self.predicates)


def _name_predicate(kind: str, values: list[str], case_sensitive: bool):
    fold = (lambda s: s) if case_sensitive else str.lower
    wanted = [fold(v) for v in values]
    tests = {
        "entityName.equals": lambda n: fold(n) in wanted,
        "entityName.in": lambda n: fold(n) in wanted,
        "entityName": lambda n: any(w in fold(n) for w in wanted),
        "entityName.contains": lambda n: any(w in fold(n) for w in wanted),
        "entityName.startsWith": lambda n: any(fold(n).startswith(w) for w in wanted),
    }
    test = tests[kind]
    return lambda e: test(e.name)


def parse_entity_selector(text: str, path: str = "entitySelector",
                          location: str = "QUERY") -> EntitySelector:
    if len(text) > 2000:
        raise bad_param(path, "The entity selector is longer than 2,000 characters", location)
    predicates, has_anchor, by_id = [], False, False
    try:
        for criterion in split_top(text):
            name, args = parse_call(criterion)
            case_sensitive = False
            if name == "caseSensitive":
                name, args = parse_call(args)
                case_sensitive = True
            values = call_values(args)
            if not values:
                raise ValueError(f"{name}() needs a value")
            if name == "type":
                has_anchor = True
                types = {v.upper() for v in values}
                predicates.append(lambda e, types=types: e.type.upper() in types)
            elif name == "entityId":
                has_anchor = by_id = True
                ids = set(values)
                predicates.append(lambda e, ids=ids: e.entity_id in ids)
            elif name.startswith("entityName"):
                if name not in ("entityName", "entityName.equals", "entityName.in",
                                "entityName.contains", "entityName.startsWith"):
                    raise ValueError(f"unknown criterion '{name}'")
                predicates.append(_name_predicate(name, values, case_sensitive))
            else:
                raise ValueError(f"the local lab does not support the criterion '{name}'")
    except ValueError as exc:
        raise bad_param(path, f"Invalid entity selector: {exc}", location) from None
    if not has_anchor:
        raise bad_param(path, "Invalid entity selector: missing 'type' or 'entityId'", location)
    return EntitySelector(text, predicates, by_id)


# ----- metricSelector -------------------------------------------------------------------------
ENTITY_DIM = "dt.entity.service"
CLUSTER_DIM = "k8s.cluster.name"  # the workload's cluster, a dimension of the unified service metrics
FILTER_DIMS = (ENTITY_DIM, CLUSTER_DIM)
AGGREGATIONS = ("value", "sum", "avg", "count", "max", "min", "auto")
KEY_RE = re.compile(r"^(?:[A-Za-z][\w\-]*:)?[\w.\-]+")


@dataclass
class MetricQuery:
    raw: str
    key: str
    filter: Callable[[dict], bool] | None = None
    filter_ids: set | None = None  # entity ids the filter can possibly match (for default(always))
    split: list[str] | None = None  # None: the metric's own dimensions
    agg: str = "value"
    default: float | None = None
    default_always: bool = False
    fold: str | None = None
    limit: int | None = None
    sort_desc: bool | None = None
    sort_agg: str = "avg"


def _transformations(text: str) -> list[tuple[str, str | None]]:
    """':splitBy("a"):value:default(0)' -> [('splitBy', '"a"'), ('value', None), ...]."""
    out, i = [], 0
    while i < len(text):
        m = re.compile(r":\s*([A-Za-z]+)").match(text, i)
        if not m:
            raise ValueError(f"unexpected text '{text[i:]}'")
        name, i = m.group(1), m.end()
        if i < len(text) and text[i] == "(":
            try:
                j = closing_paren(text, i)
            except ValueError:
                raise ValueError(f"unbalanced parentheses after :{name}") from None
            out.append((name, text[i + 1:j]))
            i = j + 1
        else:
            out.append((name, None))
    return out


def _dim_condition(services: list[MonitoredEntity], text: str
                   ) -> tuple[Callable[[dict], bool], set | None]:
    """A :filter() condition on the dimensions, and the entity ids it can match (if bounded)."""
    name, args = parse_call(text)
    if name in ("and", "or"):
        parts = [_dim_condition(services, a) for a in split_top(args)]
        tests = [p[0] for p in parts]
        combine = all if name == "and" else any
        return (lambda d: combine(t(d) for t in tests)), None
    if name == "not":
        inner, _ = _dim_condition(services, args)
        return (lambda d: not inner(d)), None
    parts = split_top(args)
    dim, _ = unquote(parts[0])
    if dim not in FILTER_DIMS:
        raise ValueError(f"dimension '{dim}' does not exist for this metric (use "
                         f"{' or '.join(FILTER_DIMS)})")
    if name == "in":
        ids: set[str] = set()
        for part in parts[1:]:
            if part.startswith("entitySelector"):
                _, sel_args = parse_call(part)
                selector = parse_entity_selector(unquote(sel_args)[0], "metricSelector")
                ids |= {e.entity_id for e in services if selector.matches(e)}
            else:
                ids.add(unquote(part)[0])
        return (lambda d: d.get(dim) in ids), ids
    value = unquote(parts[1])[0] if len(parts) > 1 else ""
    tests = {"eq": lambda v: v == value, "ne": lambda v: v != value,
             "prefix": lambda v: v.startswith(value), "suffix": lambda v: v.endswith(value),
             "contains": lambda v: value in v, "existsKey": lambda v: True}
    if name not in tests:
        raise ValueError(f"the local lab does not support the filter condition '{name}'")
    test = tests[name]
    return (lambda d: test(d.get(dim) or "")), ({value} if name == "eq" and dim == ENTITY_DIM else None)


def parse_metric_selector(services: list[MonitoredEntity], text: str) -> list[MetricQuery]:
    queries = []
    try:
        parts = split_top(text)
    except ValueError as exc:
        raise bad_param("metricSelector", f"Invalid metric selector: {exc}") from None
    if len(parts) > 10:
        raise bad_param("metricSelector", "At most 10 metric selectors are allowed")
    for raw in parts:
        if raw.startswith("(") or re.search(r"\)\s*[-+*/]", raw):
            raise bad_param("metricSelector", "Metric expressions (a)/(b) are not supported by "
                            "the local lab: query the keys separately and divide")
        m = KEY_RE.match(raw)
        if not m:
            raise bad_param("metricSelector", f"Invalid metric selector '{raw}'")
        q = MetricQuery(raw=raw, key=m.group(0))
        try:
            for name, args in _transformations(raw[m.end():]):
                _apply_transformation(services, q, name, args)
        except ValueError as exc:
            raise bad_param("metricSelector", f"Invalid metric selector '{raw}': {exc}") from None
        queries.append(q)
    return queries


def _apply_transformation(services: list[MonitoredEntity], q: MetricQuery, name: str,
                          args: str | None) -> None:
    if name == "filter":
        q.filter, q.filter_ids = _dim_condition(services, args or "")
    elif name == "splitBy":
        dims = call_values(args or "")
        for dim in dims:
            if dim != ENTITY_DIM:
                raise ValueError(f"dimension '{dim}' does not exist for this metric")
        q.split = dims
    elif name in AGGREGATIONS:
        q.agg = "value" if name == "auto" else name
    elif name == "default":
        values = [v.strip() for v in (args or "").split(",")]
        q.default = float(values[0])
        q.default_always = len(values) > 1 and values[1] == "always"
    elif name == "fold":
        q.fold = (args or "").strip() or q.agg
    elif name == "limit":
        q.limit = int(args or "0")
    elif name == "names":
        pass  # adds display names to dimensions; the local lab's ids are already readable enough
    elif name == "sort":
        m = re.fullmatch(r'\s*value\(\s*(\w+)\s*,\s*(ascending|descending)\s*\)\s*', args or "")
        if not m:
            raise ValueError("the local lab supports only sort(value(<agg>,ascending|descending))")
        q.sort_agg, q.sort_desc = m.group(1), m.group(2) == "descending"
    else:
        raise ValueError(f"the local lab does not support the transformation ':{name}'")


