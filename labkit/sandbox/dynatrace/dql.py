"""DQL for the subset the lab uses: tokenizer, parser and the pipeline stages over records.

A small, honest parser: what the lab's queries need parses, anything else is a DqlError whose
message names what the local lab does support (never a silently wrong answer). Reading the data
a query fetches is Grail's part (grail.py); here records are plain dicts.
"""
from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from labkit.sandbox.dynatrace.errors import EnvironmentApiError
from labkit.sandbox.dynatrace.times import parse_time


class DqlError(Exception):
    def __init__(self, message: str, position: int | None = None):
        super().__init__(message)
        self.message, self.position = message, position


@dataclass
class Tok:
    kind: str  # str, num, dur, ident, op, eof
    value: Any
    pos: int


DQL_TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<tick>`[^`]*`)
  | (?P<dur>\d+(?:\.\d+)?(?:ms|ns|us|s|m|h|d|w)\b)
  | (?P<num>\d+(?:\.\d+)?)
  | (?P<ident>[A-Za-z_][\w.]*)
  | (?P<op>==|!=|<=|>=|\[\]|[<>=(){},:|+\-*/@\[\]])
""", re.X)
DURATION_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60 * 10**9,
               "h": 3600 * 10**9, "d": 86400 * 10**9, "w": 7 * 86400 * 10**9}


def tokenize(query: str) -> list[Tok]:
    toks, i = [], 0
    while i < len(query):
        m = DQL_TOKEN_RE.match(query, i)
        if not m:
            raise DqlError(f"Unexpected character '{query[i]}'", i)
        kind = m.lastgroup
        text = m.group(0)
        if kind == "str":
            toks.append(Tok("str", json.loads(text) if "\\" in text else text[1:-1], i))
        elif kind == "tick":
            toks.append(Tok("ident", text[1:-1], i))
        elif kind == "dur":
            num, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text).groups()
            toks.append(Tok("dur", int(float(num) * DURATION_NS[unit]), i))
        elif kind == "num":
            toks.append(Tok("num", float(text) if "." in text else int(text), i))
        elif kind != "ws":
            toks.append(Tok(kind, text, i))
        i = m.end()
    toks.append(Tok("eof", None, len(query)))
    return toks


@dataclass
class Stage:
    command: str
    args: dict = field(default_factory=dict)


@dataclass
class TimeseriesAgg:
    name: str
    func: str
    metric: str


@dataclass
class DqlQuery:
    text: str
    source: str  # logs | events | dt.davis.problems | spans | timeseries
    start: Callable[[int], int] | None = None
    end: Callable[[int], int] | None = None
    stages: list[Stage] = field(default_factory=list)
    aggs: list[TimeseriesAgg] = field(default_factory=list)
    by: list[str] = field(default_factory=list)
    ts_filter: Callable[[dict], Any] | None = None
    interval_ns: int | None = None


SOURCES = ("logs", "events", "dt.davis.problems", "spans")
STAGES = ("filter", "filterOut", "sort", "limit", "fields", "fieldsKeep", "fieldsAdd", "fieldsRemove",
          "fieldsFlatten", "expand", "summarize")
SUPPORTED = ("fetch logs|events|dt.davis.problems|spans [, from:, to:] and timeseries {..}, by:, "
             "filter:, interval:, from:, to:; then " + ", ".join(STAGES))
AGGREGATIONS = ("count", "countIf", "min", "max", "sum", "avg", "takeFirst", "takeLast",
                "collectDistinct")


class Parser:
    """Recursive descent over one pipe stage's tokens."""

    def __init__(self, toks: list[Tok]):
        self.toks, self.i = toks, 0

    @property
    def tok(self) -> Tok:
        return self.toks[self.i]

    def take(self, kind: str | None = None, value: str | None = None) -> Tok:
        tok = self.tok
        if (kind and tok.kind != kind) or (value is not None and tok.value != value):
            want = value or kind
            got = "end of stage" if tok.kind == "eof" else repr(tok.value)
            raise DqlError(f"Expected {want} but found {got}", tok.pos)
        self.i += 1
        return tok

    def accept(self, kind: str, value: str | None = None) -> bool:
        if self.tok.kind == kind and (value is None or self.tok.value == value):
            self.i += 1
            return True
        return False

    def done(self) -> None:
        if self.tok.kind != "eof":
            raise DqlError(f"Unexpected {self.tok.value!r}", self.tok.pos)

    # ----- expressions -----------------------------------------------------------------------
    def expr(self) -> Callable[[dict], Any]:
        return self._chain("or", self.and_expr, any)

    def and_expr(self):
        return self._chain("and", self.not_expr, all)

    def _chain(self, word: str, operand: Callable, combine: Callable):
        """`a or b or c` (and likewise `and`): only `true` counts, evaluated left to right."""
        left = operand()
        while self.tok.kind == "ident" and self.tok.value == word:
            self.i += 1
            right = operand()
            left = (lambda a, b: lambda r: combine(_truthy(f(r)) for f in (a, b)))(left, right)
        return left

    def not_expr(self):
        if self.tok.kind == "ident" and self.tok.value == "not":
            self.i += 1
            inner = self.not_expr()
            return lambda r: _not(inner(r))
        return self.comparison()

    def comparison(self):
        left = self.primary()
        if self.tok.kind == "op" and self.tok.value in ("==", "!=", "<", "<=", ">", ">="):
            op = self.take().value
            right = self.primary()
            return lambda r: _compare(op, left(r), right(r))
        return left

    def primary(self):
        tok = self.tok
        if tok.kind in ("str", "num"):
            self.i += 1
            return lambda r, v=tok.value: v
        if self.accept("op", "("):
            inner = self.expr()
            self.take("op", ")")
            return inner
        if tok.kind == "ident":
            self.i += 1
            if tok.value in ("true", "false", "null"):
                return lambda r, v={"true": True, "false": False, "null": None}[tok.value]: v
            if self.tok.kind == "op" and self.tok.value == "(":
                return self.function(tok)
            return self.access(lambda r, k=tok.value: r.get(k))
        raise DqlError(f"Unexpected {tok.value!r}" if tok.kind != "eof"
                       else "Unexpected end of expression", tok.pos)

    def access(self, base):
        """`field[key]` (a record's field, an array's index) and `field[][key]` (each element's, for
        iAny/iAll): span.events[][span_event.name] == "exception"."""
        while self.tok.kind == "op" and self.tok.value in ("[", "[]"):
            each = self.accept("op", "[]")
            if each and not (self.tok.kind == "op" and self.tok.value == "["):
                base = (lambda b: lambda r: _each(b(r)))(base)
                continue
            self.take("op", "[")
            key = self.take().value
            self.take("op", "]")
            base = (lambda b, k, e: lambda r: _at(_each(b(r)) if e else b(r), k))(base, key, each)
        return base

    def function(self, name_tok: Tok):
        self.take("op", "(")
        args, named = [], {}
        while not self.accept("op", ")"):
            if self.tok.kind == "ident" and self.toks[self.i + 1].value == ":":
                key = self.take().value
                self.take("op", ":")
                named[key] = self.expr()
            else:
                args.append(self.expr())
            if not self.accept("op", ","):
                self.take("op", ")")
                break
        return _function(name_tok, args, named)


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
}


def _function(name_tok: Tok, args: list, named: dict):
    fn = FUNCTIONS.get(name_tok.value)
    if fn is None:
        raise DqlError(f"The local lab's DQL does not support the function "
                       f"'{name_tok.value}()'. Supported: {', '.join(FUNCTIONS)}", name_tok.pos)
    if named and set(named) != {"caseSensitive"}:
        raise DqlError(f"Unknown parameter(s) {', '.join(named)} for {name_tok.value}()",
                       name_tok.pos)

    def call(r):
        kwargs = {k: v(r) for k, v in named.items()}
        return fn(*(a(r) for a in args), **({"case_sensitive": kwargs["caseSensitive"]}
                                            if kwargs else {}))
    try:
        inspect.signature(fn).bind(*args, **({"case_sensitive": 1} if named else {}))
    except TypeError:
        raise DqlError(f"Wrong number of arguments for {name_tok.value}()", name_tok.pos) from None
    return call


def _time_expr(p: Parser) -> Callable[[int], int]:
    """now(), now()-1h, -1h, or an ISO timestamp string; evaluated against `now` (ms)."""
    tok = p.tok
    if tok.kind == "str":
        p.i += 1
        try:
            ms = parse_time(tok.value, 0)
        except EnvironmentApiError:
            raise DqlError(f"Invalid timestamp {tok.value!r}", tok.pos) from None
        return lambda now, ms=ms: ms
    offset = 0
    if p.accept("ident", "now"):
        p.take("op", "(")
        p.take("op", ")")
    elif not (tok.kind == "op" and tok.value == "-"):
        raise DqlError("Expected a time like now()-1h, -1h or \"2025-08-07T08:00:00Z\"", tok.pos)
    if p.accept("op", "-"):
        offset = -p.take("dur").value // 1_000_000
    elif p.accept("op", "+"):
        offset = p.take("dur").value // 1_000_000
    if p.tok.kind == "op" and p.tok.value == "@":
        raise DqlError("Time alignment (@) is not supported by the local lab", p.tok.pos)
    return lambda now, offset=offset: now + offset


def split_stages(toks: list[Tok]) -> list[list[Tok]]:
    stages, current, depth = [], [], 0
    for tok in toks:
        if tok.kind == "op" and tok.value in "({[":
            depth += 1
        elif tok.kind == "op" and tok.value in ")}]":
            depth -= 1
        if tok.kind == "eof" or (tok.kind == "op" and tok.value == "|" and depth == 0):
            stages.append(current + [Tok("eof", None, tok.pos)])
            current = []
        else:
            current.append(tok)
    return stages


def parse_dql(text: str) -> DqlQuery:
    if not isinstance(text, str) or not text.strip():
        raise DqlError("The query is empty", 0)
    stages = split_stages(tokenize(text))
    first = Parser(stages[0])
    command = first.take("ident")
    if command.value == "fetch":
        query = _parse_fetch(first, text)
    elif command.value == "timeseries":
        query = _parse_timeseries(first, text)
    else:
        raise DqlError(f"The local lab's DQL does not support '{command.value}' as the first "
                       f"command. Supported: {SUPPORTED}", command.pos)
    for toks in stages[1:]:
        query.stages.append(_parse_stage(Parser(toks)))
    return query


def _parse_fetch(p: Parser, text: str) -> DqlQuery:
    source = p.take("ident")
    if source.value not in SOURCES:
        raise DqlError(f"The local lab cannot fetch '{source.value}'. Supported data objects: "
                       + ", ".join(SOURCES), source.pos)
    query = DqlQuery(text, source.value)
    while p.accept("op", ","):
        name = p.take("ident")
        p.take("op", ":")
        if name.value == "from":
            query.start = _time_expr(p)
        elif name.value == "to":
            query.end = _time_expr(p)
        elif name.value in ("scanLimitGBytes", "samplingRatio"):
            p.take("num")
        else:
            raise DqlError(f"Unknown parameter '{name.value}' for fetch", name.pos)
    p.done()
    return query


def _parse_agg(p: Parser) -> TimeseriesAgg:
    first = p.take("ident")
    name = None
    if p.accept("op", "="):
        name, func = first.value, p.take("ident")
    else:
        func = first
    if func.value not in ("sum", "avg", "min", "max", "count"):
        raise DqlError(f"The local lab's timeseries supports sum, avg, min, max and count, "
                       f"not '{func.value}'", func.pos)
    p.take("op", "(")
    metric = p.take("ident").value
    p.take("op", ")")
    return TimeseriesAgg(name or f"{func.value}({metric})", func.value, metric)


def _parse_timeseries(p: Parser, text: str) -> DqlQuery:
    query = DqlQuery(text, "timeseries")
    if p.accept("op", "{"):
        query.aggs.append(_parse_agg(p))
        while p.accept("op", ","):
            query.aggs.append(_parse_agg(p))
        p.take("op", "}")
    else:
        query.aggs.append(_parse_agg(p))
    while p.accept("op", ","):
        name = p.take("ident")
        p.take("op", ":")
        if name.value == "by":
            p.take("op", "{")
            query.by.append(p.take("ident").value)
            while p.accept("op", ","):
                query.by.append(p.take("ident").value)
            p.take("op", "}")
        elif name.value == "filter":
            braced = p.accept("op", "{")
            query.ts_filter = p.expr()
            if braced:
                p.take("op", "}")
        elif name.value == "interval":
            query.interval_ns = p.take("dur").value
        elif name.value == "from":
            query.start = _time_expr(p)
        elif name.value == "to":
            query.end = _time_expr(p)
        else:
            raise DqlError(f"The local lab's timeseries does not support '{name.value}:'",
                           name.pos)
    p.done()
    return query


def _parse_stage(p: Parser) -> Stage:
    command = p.take("ident")
    name = command.value
    if name in ("filter", "filterOut"):
        predicate = p.expr()
        p.done()
        if name == "filterOut":
            inner = predicate
            predicate = lambda r: _not(inner(r)) is True or inner(r) is None  # noqa: E731
        return Stage("filter", {"predicate": predicate})
    if name == "sort":
        keys = []
        while True:
            field_name = p.take("ident").value
            desc = False
            if p.tok.kind == "ident" and p.tok.value in ("asc", "desc"):
                desc = p.take().value == "desc"
            keys.append((field_name, desc))
            if not p.accept("op", ","):
                break
        p.done()
        return Stage("sort", {"keys": keys})
    if name == "limit":
        n = p.take("num").value
        p.done()
        return Stage("limit", {"n": int(n)})
    if name == "fieldsRemove":
        names = [p.take("ident").value]
        while p.accept("op", ","):
            names.append(p.take("ident").value)
        p.done()
        return Stage("fieldsRemove", {"names": names})
    if name in ("fields", "fieldsKeep", "fieldsAdd"):
        columns = _columns(p)
        p.done()
        return Stage("fieldsAdd" if name == "fieldsAdd" else "fields", {"columns": columns})
    if name == "expand":
        field_name = p.take("ident").value
        p.done()
        return Stage("expand", {"field": field_name})
    if name == "fieldsFlatten":
        return _parse_flatten(p)
    if name == "summarize":
        return _parse_summarize(p)
    raise DqlError(f"The local lab's DQL does not support the command '{name}'. "
                   f"Supported: {SUPPORTED}", command.pos)


def _columns(p: Parser) -> list[tuple[str, Callable]]:
    """`a, b = expr, c`: (name, value of the record) for each; a bare field keeps its name."""
    out = []
    while True:
        start = p.i
        if p.tok.kind == "ident" and p.toks[p.i + 1].kind == "op" and p.toks[p.i + 1].value == "=":
            name = p.take().value
            p.take("op", "=")
            out.append((name, p.expr()))
        else:
            value = p.expr()
            out.append((_text(p.toks[start:p.i]), value))
        if not p.accept("op", ","):
            return out


def _text(toks: list[Tok]) -> str:
    """A column's default name: its expression as written (`count()`, `span.events`)."""
    return "".join(str(t.value) if t.kind != "str" else json.dumps(t.value) for t in toks)


def _parse_flatten(p: Parser) -> Stage:
    field_name = p.take("ident").value
    args = {"field": field_name, "prefix": field_name + ".", "fields": None}
    while p.accept("op", ","):
        key = p.take("ident")
        p.take("op", ":")
        if key.value == "prefix":
            args["prefix"] = p.take("str").value
        elif key.value == "fields":
            p.take("op", "{")
            args["fields"] = [p.take("ident").value]
            while p.accept("op", ","):
                args["fields"].append(p.take("ident").value)
            p.take("op", "}")
        else:
            raise DqlError(f"The local lab's fieldsFlatten supports prefix: and fields:, not '{key.value}:'",
                           key.pos)
    p.done()
    return Stage("fieldsFlatten", args)


def _parse_summarize(p: Parser) -> Stage:
    aggs, by = [], []
    if not (p.tok.kind == "ident" and p.tok.value == "by"):
        while True:
            start = p.i
            name = None
            if p.tok.kind == "ident" and p.toks[p.i + 1].value == "=":
                name = p.take().value
                p.take("op", "=")
            func = p.take("ident")
            if func.value not in AGGREGATIONS:
                raise DqlError(f"The local lab's summarize supports {', '.join(AGGREGATIONS)}, not "
                               f"'{func.value}'", func.pos)
            p.take("op", "(")
            arg = None if p.tok.kind == "op" and p.tok.value == ")" else p.expr()
            p.take("op", ")")
            aggs.append((name or _text(p.toks[start:p.i]), func.value, arg))
            if not p.accept("op", ","):
                break
            if p.tok.kind == "ident" and p.tok.value == "by":
                break
    if p.accept("ident", "by"):
        p.take("op", ":")
        braced = p.accept("op", "{")
        by = _columns(p)
        if braced:
            p.take("op", "}")
    p.done()
    return Stage("summarize", {"aggs": aggs, "by": by})


def _aggregate(func: str, values: list):
    present = [v for v in values if v is not None]
    if func == "count":
        return len(values)
    if func == "countIf":
        return sum(1 for v in values if v is True)
    if func == "collectDistinct":
        return list(dict.fromkeys(present))
    if not present:
        return None
    if func in ("takeFirst", "takeLast"):
        return present[0] if func == "takeFirst" else present[-1]
    if func in ("min", "max"):
        try:
            return (min if func == "min" else max)(present, key=_sort_key)
        except TypeError:
            return None
    numbers = [v for v in present if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not numbers:
        return None
    return sum(numbers) if func == "sum" else sum(numbers) / len(numbers)


def _summarize(rows: list[dict], aggs: list, by: list) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = tuple(_hashable(fn(r)) for _, fn in by)
        groups.setdefault(key, []).append(r)
    if not by and not groups:
        groups[()] = []  # summarize over nothing still answers one record (count() = 0)
    out = []
    for key, members in groups.items():
        record = {name: fn(members[0]) for name, fn in by}
        for name, func, arg in aggs:
            values = [arg(r) if arg else True for r in members]
            record[name] = _aggregate(func, values)
        out.append(record)
    return out


def _hashable(value):
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def _expand(rows: list[dict], field_name: str) -> list[dict]:
    out = []
    for r in rows:
        values = r.get(field_name)
        if not isinstance(values, list):
            out.append(r)  # not an array: the record as it is
            continue
        out.extend({**r, field_name: v} for v in values)
    return out


def _flatten(rows: list[dict], field_name: str, prefix: str, keys) -> list[dict]:
    out = []
    for r in rows:
        nested = r.get(field_name)
        r = dict(r)
        if isinstance(nested, dict):
            for k in keys if keys is not None else list(nested):
                r[prefix + k] = nested.get(k)
        out.append(r)
    return out


# ----- the pipeline stages over records -------------------------------------------------------
def _sort_key(value):
    # nulls last; numbers before strings so mixed columns still sort deterministically
    if value is None:
        return (2, 0)
    if isinstance(value, (int, float)):
        return (0, value)
    return (1, str(value))


def apply_stages(rows: list[dict], stages: list[Stage]) -> list[dict]:
    for stage in stages:
        if stage.command == "filter":
            pred = stage.args["predicate"]
            rows = [r for r in rows if pred(r) is True]
        elif stage.command == "sort":
            for name, desc in reversed(stage.args["keys"]):
                key = "_ms" if name == "timestamp" and rows and "_ms" in rows[0] else name
                present = [r for r in rows if r.get(key) is not None]
                missing = [r for r in rows if r.get(key) is None]
                # records written in the same millisecond keep the order they were written in
                present.sort(key=lambda r: (_sort_key(r.get(key)), r.get("_seq", 0)), reverse=desc)
                rows = present + missing
        elif stage.command == "limit":
            rows = rows[:stage.args["n"]]
        elif stage.command == "fields":
            columns = stage.args["columns"]
            rows = [{n: fn(r) for n, fn in columns} for r in rows]
        elif stage.command == "fieldsAdd":
            columns = stage.args["columns"]
            rows = [{**r, **{n: fn(r) for n, fn in columns}} for r in rows]
        elif stage.command == "expand":
            rows = _expand(rows, stage.args["field"])
        elif stage.command == "fieldsFlatten":
            rows = _flatten(rows, stage.args["field"], stage.args["prefix"], stage.args["fields"])
        elif stage.command == "summarize":
            rows = _summarize(rows, stage.args["aggs"], stage.args["by"])
        elif stage.command == "fieldsRemove":
            drop = set(stage.args["names"])
            rows = [{k: v for k, v in r.items() if k not in drop} for r in rows]
    return rows

