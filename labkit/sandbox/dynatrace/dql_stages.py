"""DQL's pipeline stages over records: filter, sort, fields*, expand, summarize, and the rest."""
from __future__ import annotations

import json

from labkit.sandbox.dynatrace.dql_functions import CONTEXT, DqlContext
from labkit.sandbox.dynatrace.dql_tokens import DqlError
from labkit.sandbox.dynatrace.errors import EnvironmentApiError
from labkit.sandbox.dynatrace.times import iso, parse_time

AGGREGATIONS = ("count", "countIf", "min", "max", "sum", "avg", "takeFirst", "takeLast",
                "collectDistinct")


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


# makeTimeseries' bin lengths (s). Choice, fitted to the lab's own notebook result (Redis
# Troubleshooting.json: a 24 h frame answered 145 bins of 10 min): the longest length that still
# gives at least 120 bins; so 2 h -> 1 min, 30 min -> 15 s.
BIN_SECONDS = (1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
DEFAULT_BINS = 120


def _bin_ms(frame: tuple[int, int], interval_ns: int | None, bins: int | None) -> int:
    if interval_ns:
        return max(interval_ns // 1_000_000, 1)
    span = frame[1] - frame[0]
    fitting = [s * 1000 for s in BIN_SECONDS if span // (s * 1000) >= (bins or DEFAULT_BINS)]
    return fitting[-1] if fitting else BIN_SECONDS[0] * 1000


def _time_of(r: dict, name: str) -> int | None:
    if name == "timestamp" and isinstance(r.get("_ms"), int):
        return r["_ms"]
    value = r.get(name)
    try:
        return parse_time(value, 0) if isinstance(value, str) else None
    except EnvironmentApiError:  # a field that is not a timestamp: the record is in no bin
        return None


def _bin_value(func: str, values: list):
    """One bin's value, a double as Grail answers makeTimeseries (the lab's notebook result);
    count() and countIf() of an empty bin are 0, every other aggregation's is null."""
    if func in ("count", "countIf"):
        return float(_aggregate(func, values))
    value = _aggregate(func, values)
    return None if value is None else float(value)


def _make_timeseries(rows: list[dict], args: dict, context: DqlContext | None) -> list[dict]:
    """One record per `by:` group the records have: timeframe, interval (ns) and an array per
    aggregation, the query's timeframe cut into bins aligned to the bin length."""
    times = [t for t in (_time_of(r, args["time"]) for r in rows) if t is not None]
    if context is not None:
        frame = context.frame
    elif times:
        frame = (min(times), max(times) + 1)
    else:
        return []
    step = _bin_ms(frame, args["interval_ns"], args["bins"])
    first, last = frame[0] - frame[0] % step, -(-frame[1] // step) * step
    groups: dict[tuple, tuple[dict, list[list[dict]]]] = {}
    for r in rows:
        t = _time_of(r, args["time"])
        if t is None or not first <= t < last:
            continue
        key = tuple(_hashable(fn(r)) for _, fn in args["by"])
        if key not in groups:
            groups[key] = ({n: fn(r) for n, fn in args["by"]}, [[] for _ in range((last - first) // step)])
        groups[key][1][(t - first) // step].append(r)
    out = []
    for by_values, bins in groups.values():
        record = {"timeframe": {"start": iso(first), "end": iso(last)}, "interval": str(step * 1_000_000),
                  **by_values}
        for name, func, arg in args["aggs"]:
            record[name] = [_bin_value(func, [arg(r) if arg else True for r in members]) for members in bins]
        out.append(record)
    return out


def _append(rows: list[dict], query, context: DqlContext | None) -> list[dict]:
    if context is None:
        raise DqlError("append runs its subquery on a tenant; this query has none to run on")
    return rows + context.run(query)


# ----- the pipeline stages over records -------------------------------------------------------
def _sort_key(value):
    # nulls last; numbers before strings so mixed columns still sort deterministically
    if value is None:
        return (2, 0)
    if isinstance(value, (int, float)):
        return (0, value)
    return (1, str(value))


def apply_stages(rows: list[dict], stages: list, context: DqlContext | None = None) -> list[dict]:
    """The stages in order; `context` is the tenant they run on (entityName(), append, bins)."""
    token = CONTEXT.set(context) if context is not None else None
    try:
        return _apply(rows, stages, context or CONTEXT.get())
    finally:
        if token is not None:
            CONTEXT.reset(token)


def _apply(rows: list[dict], stages: list, context: DqlContext | None) -> list[dict]:
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
        elif stage.command == "makeTimeseries":
            rows = _make_timeseries(rows, stage.args, context)
        elif stage.command == "append":
            rows = _append(rows, stage.args["query"], context)
        elif stage.command == "fieldsRemove":
            drop = set(stage.args["names"])
            rows = [{k: v for k, v in r.items() if k not in drop} for r in rows]
    return rows

