"""The Grail query API: query:execute, poll, cancel and verify over Telemetry's records.

A query runs for `timings.grail_delay`; a client that waits long enough gets the result at once,
otherwise a request token to poll. Records are shaped as Grail returns them (long integers as
strings, ISO timestamps with nanoseconds, a `types` block); errors are PlatformError.
"""
from __future__ import annotations

import time
import uuid
from typing import Any

from labkit.sandbox.dynatrace.dql import DqlContext, DqlError, DqlQuery, apply_stages, parse_dql
from labkit.sandbox.dynatrace.errors import EnvironmentApiError, PlatformError
from labkit.sandbox.dynatrace.series import merged_minutes, parse_resolution, series_values
from labkit.sandbox.dynatrace.telemetry import (OPENPIPELINE, PROBLEM_CATEGORIES, Event, MonitoredEntity,
                                                Problem, Span)
from labkit.sandbox.dynatrace.tenant import GrailJob, Tenant, bearer
from labkit.sandbox.dynatrace.times import HOUR_MS, MINUTE_MS, iso, iso_ns, parse_time
from labkit.sandbox.http import Request, Response, json_response


# ----- records as Grail returns them ------------------------------------------------------------
def _entity_fields(entity: MonitoredEntity) -> dict:
    """dt.entity.<type> and its .name, as Grail names an entity on a record."""
    kind = "dt.entity." + entity.type.lower()
    return {kind: entity.entity_id, kind + ".name": entity.name}


def _event_record(e: Event, now: int) -> dict:
    record = {
        "timestamp": iso(e.start), "_ms": e.start, "_end": e.end, "event.id": e.event_id,
        "event.type": e.event_type, "event.name": e.title, "event.kind": "DAVIS_EVENT",
        "event.provider": e.provider, "event.start": iso(e.start),
        "event.end": iso(e.end), "event.status": "ACTIVE" if e.end > now else "CLOSED",
        "dt.event.correlation_id": e.correlation_id, "affected_entity_ids": [e.entity.entity_id],
        "dt.source_entity": e.entity.entity_id,
    }
    if e.entity.type != "ENVIRONMENT":
        record.update(_entity_fields(e.entity))
    if e.provider == OPENPIPELINE:  # a pipeline's Davis event, as the lab's screenshots show one
        record.update({
            "event.description": e.description, "event.category": PROBLEM_CATEGORIES.get(e.event_type, "INFO"),
            "affected_entity_types": ["dt.entity." + e.entity.type.lower()],
            "dt.source_entity.type": e.entity.type.lower(), "dt.davis.impact_level": "Infrastructure",
            "dt.davis.is_frequent_event": False, "dt.davis.mute.status": "NOT_MUTED",
            "dt.davis.is_rootcause_relevant": True, "event.group_label": e.event_type.title().replace("_", " ")})
    for key, value in e.properties.items():
        if key.startswith("dt.event."):  # Davis records carry dt.davis.*, booleans as booleans (§5)
            key = "dt.davis." + key[len("dt.event."):]
            value = {"true": True, "false": False}.get(value, value)
        record.setdefault(key, value)
    return record


def _problem_record(p: Problem) -> dict:
    kind = "dt.entity." + p.entity.type.lower()
    return {
        "timestamp": iso(p.start), "_ms": p.start, "_end": p.end, "event.id": p.problem_id,
        "display_id": p.display_id, "event.name": p.title, "event.kind": "DAVIS_PROBLEM",
        "event.category": p.category, "event.status": "ACTIVE" if p.open else "CLOSED",
        "event.start": iso(p.start), "event.end": None if p.open else iso(p.end),
        "affected_entity_ids": [p.entity.entity_id], "affected_entity_types": [kind],
        "root_cause_entity_id": p.entity.entity_id, "root_cause_entity_name": p.entity.name,
        kind: [p.entity.entity_id], "dt.davis.is_duplicate": False,
        "dt.davis.event_ids": [e.event_id for e in p.events],
        "k8s.cluster.name": sorted(p.clusters), "k8s.namespace.name": ["default"],
        "maintenance.is_under_maintenance": False, "event.description": p.description,
    }


def _span_record(s: Span, telemetry) -> dict:
    """A span as `fetch spans` returns it (OTel attributes flat, its events as span.events): built
    once per span (a stored span no longer changes) once its service's entity exists; a copy each
    read, as the stages may add fields."""
    if s.record is None:
        record = _new_span_record(s, telemetry)
        if "dt.entity.service" not in record:
            return record
        s.record = record
    return dict(s.record)


def _new_span_record(s: Span, telemetry) -> dict:
    entity = telemetry.entity_of(s.service, s.cluster)
    record = {
        "start_time": iso_ns(s.start_ns), "end_time": iso_ns(s.end_ns), "_ms": s.time,
        "duration": s.end_ns - s.start_ns, "trace.id": s.trace_id, "span.id": s.span_id,
        "span.parent_id": s.parent_id, "span.name": s.name, "span.kind": s.kind,
        "span.status_code": s.status, "service.name": s.service,
        "dt.entity.service": entity.entity_id if entity else None,
        "k8s.cluster.name": s.cluster, "k8s.namespace.name": "default", **s.attributes,
        "span.events": [{**ev, "timestamp": iso_ns(ev["timestamp"])} for ev in s.events],
    }
    if s.kind == "server":  # Dynatrace's request fields: a server span is a request
        record.update({"request.is_failed": s.failed, "endpoint.name": s.name})
    return {k: v for k, v in record.items() if v is not None}


def _fetch(tenant: Tenant, source: str, start: int, end: int, now: int, cluster: str | None = None) -> list[dict]:
    """The records of `source` in [start, end); `cluster`: only that k8s.cluster.name's logs and
    spans (the query's first filter keeps only them anyway)."""
    if source == "logs":
        rows = [dict(r) for r in tenant.telemetry.logs(start, end, cluster)]
        rows.reverse()  # newest first, as Grail returns logs without an explicit sort
        return rows
    if source == "events":
        return [_event_record(e, now) for e in tenant.telemetry.events() if start <= e.start < end]
    if source == "spans":  # newest first, as Grail returns them without a sort
        return [_span_record(s, tenant.telemetry) for s in reversed(tenant.telemetry.spans(start, end, cluster))]
    return [_problem_record(p) for p in tenant.telemetry.problems()
            if p.start < end and (p.open or p.end >= start)]


# What each data object needs of a platform token (reference §10).
GRAIL_SCOPES = {"logs": ("storage:logs:read", "storage:buckets:read"),
                "events": ("storage:events:read", "storage:buckets:read"),
                "dt.davis.problems": ("storage:events:read", "storage:buckets:read"),
                "spans": ("storage:spans:read", "storage:buckets:read"),
                "timeseries": ("storage:metrics:read", "storage:buckets:read"),
                "entities": ("storage:entities:read",)}


def authorize_table(tenant: Tenant, req: Request, source: str | set[str]) -> None:
    """A query on a table the token may not read (its own, an appended one, the entities that
    entityName() reads): Grail's 403 NOT_AUTHORIZED_FOR_TABLE, which names the table in `arguments`
    and carries no missingScopes (dynatrace-answers.md §2)."""
    tenant.authorize_platform(req)
    held = tenant.platform_tokens.scopes(bearer(req))
    for table in sorted({source} if isinstance(source, str) else source):
        _authorize(table, held)


def _authorize(source: str, held) -> None:
    if not set(GRAIL_SCOPES.get(source, ())) <= held:
        table = "metrics" if source == "timeseries" else source
        raise PlatformError(403, "NOT_AUTHORIZED_FOR_TABLE", "NOT_AUTHORIZED_FOR_TABLE",
                            exceptionType="DQL-AUTHORIZATION",
                            errorMessage=f"Insufficient permission to access table ({table}).",
                            arguments=[table])

GRAIL_METRICS = {"dt.service.request.count": 0, "dt.service.request.failure_count": 1}


def _timeseries(tenant: Tenant, q: DqlQuery, start: int, end: int) -> tuple[list[dict], dict]:
    """`timeseries` records, one per `by:` group with data, and the frame widened to whole slots."""
    if q.interval_ns:
        step = max(q.interval_ns // 1_000_000, MINUTE_MS)
        step -= step % MINUTE_MS
    else:
        step, _ = parse_resolution("120", start, end)
    first_slot = start - start % step
    last_slot = -(-end // step) * step
    slots = [(s, s + step) for s in range(first_slot, last_slot, step)]
    records = []
    for key, members in _groups(tenant, q).items():
        record: dict[str, Any] = {"timeframe": {"start": iso(first_slot), "end": iso(last_slot)},
                                  "interval": str(step * 1_000_000)}
        record.update(zip(q.by, key))
        has_data = False
        for agg in q.aggs:
            values = _agg_values(tenant, agg.metric, agg.func, members, slots)
            has_data |= any(v is not None for v in values)
            record[agg.name] = values
        if has_data:
            records.append(record)
    metrics = [{"metric.key": a.metric, "fieldName": a.name} for a in q.aggs]
    return records, {"metrics": metrics, "frame": (first_slot, last_slot)}


def _groups(tenant: Tenant, q: DqlQuery) -> dict[tuple, list[tuple[MonitoredEntity, str]]]:
    """The (service, k8s.cluster.name) counters that pass `filter:`, grouped by the `by:`
    dimensions' values."""
    groups: dict[tuple, list[tuple[MonitoredEntity, str]]] = {}
    for e, cluster in tenant.telemetry.series():
        if e.type != "SERVICE":
            continue
        dims = {"dt.entity.service": e.entity_id, "dt.service.name": e.name,
                "k8s.cluster.name": cluster}
        if q.ts_filter and q.ts_filter(dims) is not True:
            continue
        groups.setdefault(tuple(dims.get(d) for d in q.by), []).append((e, cluster))
    return groups


def _agg_values(tenant: Tenant, metric: str, func: str, members: list[tuple[MonitoredEntity, str]],
                slots: list[tuple[int, int]]) -> list[float | None]:
    index = GRAIL_METRICS.get(metric)
    if index is None:
        return [None] * len(slots)  # a metric the lab does not record: no data, not an error
    first, last = slots[0][0] // MINUTE_MS, slots[-1][1] // MINUTE_MS
    minutes = merged_minutes(tenant.telemetry, members, index, first, last)
    return [None if v is None else float(v)
            for v in series_values(minutes, first, slots, func)]


def _type_of(name: str, value) -> dict:
    if name == "timeframe":
        return {"type": "timeframe"}
    if name in ("interval", "duration"):
        return {"type": "duration"}
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "long"}
    if isinstance(value, float):
        return {"type": "double"}
    if isinstance(value, list):
        element = next((v for v in value if v is not None), "")
        return {"type": "array", "types": [{"indexRange": [0, max(len(value) - 1, 0)],
                                            "mappings": {"element": _type_of("", element)}}]}
    if isinstance(value, dict):
        return {"type": "record"}
    if name in ("timestamp", "event.start", "event.end", "start_time", "end_time") and value is not None:
        return {"type": "timestamp"}
    return {"type": "string"}


def _encode(value):
    """Grail's JSON encoding: long integers as strings, everything else as is."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _types(records: list[dict]) -> list[dict]:
    if not records:
        return []
    mappings: dict[str, dict] = {}
    for r in records:
        for k, v in r.items():
            if k not in mappings or (v is not None and mappings[k].get("_null")):
                mappings[k] = _type_of(k, v) if v is not None else {"type": "string", "_null": 1}
    for m in mappings.values():
        m.pop("_null", None)
    return [{"indexRange": [0, len(records) - 1], "mappings": mappings}]


def _source_records(tenant: Tenant, q: DqlQuery, frame: tuple[int, int], now: int) -> tuple[list[dict], dict]:
    """The records a query's first command reads, and (timeseries) its metrics and widened frame."""
    if q.source == "timeseries":
        return _timeseries(tenant, q, *frame)
    first = q.stages[0] if q.stages else None
    cluster = first.args.get("cluster") if first is not None and first.command == "filter" else None
    return _fetch(tenant, q.source, *frame, now, cluster), {"metrics": [], "frame": frame}


def _context(tenant: Tenant, frame: tuple[int, int], now: int) -> DqlContext:
    """The tenant the stages run on: append's subquery over the same timeframe, entity names."""
    def run(sub: DqlQuery) -> list[dict]:
        return apply_stages(_source_records(tenant, sub, frame, now)[0], sub.stages)

    def entity_name(entity_id: str) -> str | None:
        entity = tenant.telemetry.entity_by_id(entity_id)
        return entity.name if entity else None
    return DqlContext(frame, run, entity_name)


def execute_dql(tenant: Tenant, job: GrailJob) -> dict:
    started = time.perf_counter()
    q = job.query
    now = tenant.telemetry.clock()
    rows, info = _source_records(tenant, q, job.frame, now)
    metadata_metrics = info["metrics"]
    start, end = info["frame"]
    scanned = len(rows)
    rows = apply_stages(rows, q.stages, _context(tenant, job.frame, now))
    notifications = []
    if len(rows) > job.max_records:
        rows = rows[:job.max_records]
        notifications.append({
            "severity": "WARNING", "notificationType": "RESULT_TRUNCATED",
            "message": f"The result has been limited to {job.max_records} records."})
    records = [{k: _encode(v) for k, v in r.items() if not k.startswith("_")} for r in rows]
    grail = {
        "query": q.text, "canonicalQuery": q.text, "timezone": "Z", "locale": "und",
        "dqlVersion": "V1_0", "queryId": str(uuid.uuid4()), "scannedRecords": scanned,
        "scannedBytes": 0, "scannedDataPoints": 0, "sampled": False,
        "executionTimeMilliseconds": int((time.perf_counter() - started) * 1000),
        "notifications": notifications,
        "analysisTimeframe": {"start": iso(start), "end": iso(end)},
    }
    metadata: dict[str, Any] = {"grail": grail}
    if metadata_metrics:
        metadata["metrics"] = metadata_metrics
    return {"records": records, "types": _types(records), "metadata": metadata}


# ----- the endpoints -----------------------------------------------------------------------------
def _dql_error(err: DqlError, query: str) -> Response:
    details: dict[str, Any] = {"exceptionType": "DQL-SYNTAX-ERROR", "queryString": query,
                               "errorMessageFormat": err.message,
                               "errorMessageFormatSpecifierTypes": [],
                               "queryId": str(uuid.uuid4())}
    if err.position is not None:
        line = query.count("\n", 0, err.position) + 1
        column = err.position - (query.rfind("\n", 0, err.position) + 1) + 1
        pos = {"column": column, "index": err.position, "line": line}
        details["syntaxErrorPosition"] = {"start": pos, "end": pos}
    return PlatformError(400, err.message, "PARSE_ERROR", **details).response()


def query_frame(q: DqlQuery, body: dict, now: int) -> tuple[int, int]:
    """The query's own from:/to:, else the body's default timeframe, else the last 2 hours."""
    def default(key: str):
        text = body.get(key)
        if not text:
            return None
        try:
            return parse_time(str(text), now, key)
        except EnvironmentApiError:
            raise PlatformError(400, f"Invalid {key} '{text}'", "INVALID_PARAMETER") from None
    start = q.start(now) if q.start else default("defaultTimeframeStart")
    end = q.end(now) if q.end else default("defaultTimeframeEnd")
    end = now if end is None else end
    start = end - 2 * HOUR_MS if start is None else start
    if start >= end:
        raise PlatformError(400, "The timeframe start must be before its end", "INVALID_TIMEFRAME")
    return start, end


def _int_param(value, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise PlatformError(400, f"{name} must be an integer", "INVALID_PARAMETER") from None


def grail_execute(tenant: Tenant, req: Request) -> Response:
    tenant.authorize_platform(req)
    try:
        body = req.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        raise PlatformError(400, 'The body must be JSON with a "query" string', "INVALID_BODY")
    try:
        query = parse_dql(body["query"])
    except DqlError as err:
        return _dql_error(err, body["query"])
    authorize_table(tenant, req, query.tables())
    frame = query_frame(query, body, tenant.telemetry.clock())
    wait_ms = _int_param(body.get("requestTimeoutMilliseconds"), "requestTimeoutMilliseconds",
                         1000)
    max_records = _int_param(body.get("maxResultRecords"), "maxResultRecords", 1000)
    delay = float(tenant.timings.grail_delay)
    job = GrailJob(query, frame, time.monotonic() + delay, max_records)
    job.expires_at = job.ready_at + 500  # a token nobody polls is dropped after its ttl
    if delay * 1000 <= wait_ms:
        if delay > 0:
            time.sleep(delay)  # the query's own duration, not a wait for a condition
        return json_response({"state": "SUCCEEDED", "progress": 100, "ttlSeconds": 500,
                              "result": execute_dql(tenant, job)})
    return json_response({"state": "RUNNING", "requestToken": tenant.keep_job(job),
                          "ttlSeconds": 500, "progress": 0}, 202)


def grail_poll(tenant: Tenant, req: Request) -> Response:
    tenant.authorize_platform(req)
    job = tenant.job(req.query.get("request-token"))
    hold = _int_param(req.query.get("request-timeout-milliseconds"),
                      "request-timeout-milliseconds", 1000) / 1000
    remaining = job.ready_at - time.monotonic()
    if remaining > 0:
        time.sleep(min(remaining, max(hold, 0)))  # holds the poll like Grail does, bounded
    if time.monotonic() < job.ready_at:
        total = max(float(tenant.timings.grail_delay), 1e-6)
        progress = int(100 * (1 - (job.ready_at - time.monotonic()) / total))
        return json_response({"state": "RUNNING", "progress": max(min(progress, 99), 0),
                              "ttlSeconds": 500})
    result = tenant.job_result(job, lambda job: execute_dql(tenant, job))
    return json_response({"state": "SUCCEEDED", "progress": 100, "ttlSeconds": 500,
                          "result": result})


def grail_cancel(tenant: Tenant, req: Request) -> Response:
    tenant.authorize_platform(req)
    tenant.cancel_job(req.query.get("request-token"))
    return Response(202, b"", "application/json")


def grail_verify(tenant: Tenant, req: Request) -> Response:
    tenant.authorize_platform(req)
    try:
        body = req.json()
        parse_dql(body["query"])
    except DqlError as err:
        return json_response({"valid": False, "notifications": [
            {"severity": "ERROR", "notificationType": "PARSE_ERROR", "message": err.message}]})
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise PlatformError(400, 'The body must be JSON with a "query" string',
                            "INVALID_BODY") from None
    return json_response({"valid": True, "notifications": []})

