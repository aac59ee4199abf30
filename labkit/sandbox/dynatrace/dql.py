"""DQL for the subset the lab uses: the parser (its words are dql_tokens, its values and functions
dql_functions, its stages over records dql_stages; all re-exported here).

A small, honest parser: what the lab's queries need parses, anything else is a DqlError whose
message names what the local lab does support (never a silently wrong answer). Reading the data
a query fetches is Grail's part (grail.py); here records are plain dicts.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from labkit.sandbox.dynatrace.dql_functions import FUNCTIONS, DqlContext, _function, _not  # noqa: F401
from labkit.sandbox.dynatrace.dql_functions import _at, _compare, _each, _truthy
from labkit.sandbox.dynatrace.dql_stages import AGGREGATIONS, apply_stages  # noqa: F401
from labkit.sandbox.dynatrace.dql_tokens import DqlError, Tok, tokenize  # noqa: F401
from labkit.sandbox.dynatrace.errors import EnvironmentApiError
from labkit.sandbox.dynatrace.times import parse_time


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
    reads: set[str] = field(default_factory=set)  # tables beyond `source`: appended ones, entities

    def tables(self) -> set[str]:
        """Every table the query reads, for the token's scopes."""
        return {self.source} | self.reads


SOURCES = ("logs", "events", "dt.davis.problems", "spans")
STAGES = ("filter", "filterOut", "sort", "limit", "fields", "fieldsKeep", "fieldsAdd", "fieldsRemove",
          "fieldsFlatten", "expand", "summarize", "makeTimeseries", "append")
SUPPORTED = ("fetch logs|events|dt.davis.problems|spans [, from:, to:] and timeseries {..}, by:, "
             "filter:, interval:, from:, to:; then " + ", ".join(STAGES))


class Parser:
    """Recursive descent over one pipe stage's tokens."""

    def __init__(self, toks: list[Tok], text: str = ""):
        self.toks, self.i, self.text = toks, 0, text

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
    return _parse_query(tokenize(text), text)


def _parse_query(toks: list[Tok], text: str) -> DqlQuery:
    stages = split_stages(toks)
    first = Parser(stages[0], text)
    command = first.take("ident")
    if command.value == "fetch":
        query = _parse_fetch(first, text)
    elif command.value == "timeseries":
        query = _parse_timeseries(first, text)
    else:
        raise DqlError(f"The local lab's DQL does not support '{command.value}' as the first "
                       f"command. Supported: {SUPPORTED}", command.pos)
    for stage_toks in stages[1:]:
        stage = _parse_stage(Parser(stage_toks, text))
        if stage.command == "append":
            query.reads |= stage.args["query"].tables()
        query.stages.append(stage)
    if any(t.kind == "ident" and t.value == "entityName" and n.value == "(" for t, n in zip(toks, toks[1:])):
        query.reads.add("entities")  # entityName() reads the entity model (storage:entities:read)
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


def _one_cluster(toks: list[Tok]) -> str | None:
    """The seat a filter keeps when it is exactly `k8s.cluster.name == "x"` (what labkit adds after
    fetch on a shared tenant), so the store reads only that cluster's records, as Grail reads only
    the buckets a filter needs; the filter still runs on them."""
    shape = [(t.kind, t.value if t.kind != "str" else None) for t in toks]
    if shape == [("ident", "k8s.cluster.name"), ("op", "=="), ("str", None), ("eof", None)]:
        return toks[2].value
    return None


def _parse_stage(p: Parser) -> Stage:
    command = p.take("ident")
    name = command.value
    if name in ("filter", "filterOut"):
        first = p.i
        predicate = p.expr()
        p.done()
        if name == "filterOut":
            inner = predicate
            predicate = lambda r: _not(inner(r)) is True or inner(r) is None  # noqa: E731
            return Stage("filter", {"predicate": predicate})
        return Stage("filter", {"predicate": predicate, "cluster": _one_cluster(p.toks[first:])})
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
    if name == "makeTimeseries":
        return _parse_make_timeseries(p)
    if name == "append":
        return _parse_append(p)
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


def _aggregation(p: Parser, allowed: tuple[str, ...], command: str) -> tuple[str, str, Callable | None]:
    """`[name =] func([expr])`: its column's name (as written when unnamed), the function, its argument."""
    start = p.i
    name = None
    if p.tok.kind == "ident" and p.toks[p.i + 1].value == "=":
        name = p.take().value
        p.take("op", "=")
    func = p.take("ident")
    if func.value not in allowed:
        raise DqlError(f"The local lab's {command} supports {', '.join(allowed)}, not "
                       f"'{func.value}'", func.pos)
    p.take("op", "(")
    arg = None if p.tok.kind == "op" and p.tok.value == ")" else p.expr()
    p.take("op", ")")
    return name or _text(p.toks[start:p.i]), func.value, arg


MAKE_TIMESERIES = ("count", "countIf", "sum", "avg", "min", "max")


def _parse_make_timeseries(p: Parser) -> Stage:
    """`makeTimeseries [name =] agg(..), .., by: {..}, interval: 5m | bins: n, time: field`; the
    parameters and aggregations in any order (Grail's canonical form puts by: first)."""
    args: dict = {"aggs": [], "by": [], "interval_ns": None, "bins": None, "time": "timestamp"}
    while True:
        if p.tok.kind == "ident" and p.toks[p.i + 1].value == ":":
            key = p.take()
            p.take("op", ":")
            if key.value == "by":
                braced = p.accept("op", "{")
                args["by"] = _columns(p)
                if braced:
                    p.take("op", "}")
            elif key.value == "interval":
                args["interval_ns"] = p.take("dur").value
            elif key.value == "bins":
                args["bins"] = int(p.take("num").value)
            elif key.value == "time":
                args["time"] = p.take("ident").value
            else:
                raise DqlError(f"The local lab's makeTimeseries supports by:, interval:, bins: and "
                               f"time:, not '{key.value}:'", key.pos)
        else:
            args["aggs"].append(_aggregation(p, MAKE_TIMESERIES, "makeTimeseries"))
        if not p.accept("op", ","):
            break
    p.done()
    if not args["aggs"]:
        raise DqlError("makeTimeseries needs an aggregation, e.g. count()", p.tok.pos)
    return Stage("makeTimeseries", args)


def _parse_append(p: Parser) -> Stage:
    """`append [subquery]`: the subquery's records after the query's, over the same timeframe."""
    open_tok = p.take("op", "[")
    depth, start = 1, p.i
    while depth:
        tok = p.take()
        if tok.kind == "eof":
            raise DqlError("append's subquery has no closing ']'", open_tok.pos)
        depth += {"[": 1, "]": -1}.get(tok.value, 0) if tok.kind == "op" else 0
    close = p.toks[p.i - 1]
    p.done()
    inner = p.toks[start:p.i - 1] + [Tok("eof", None, close.pos)]
    sub = _parse_query(inner, p.text[open_tok.pos + 1:close.pos].strip() if p.text else "")
    return Stage("append", {"query": sub})


def _parse_summarize(p: Parser) -> Stage:
    aggs, by = [], []
    if not (p.tok.kind == "ident" and p.tok.value == "by"):
        while True:
            aggs.append(_aggregation(p, AGGREGATIONS, "summarize"))
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


