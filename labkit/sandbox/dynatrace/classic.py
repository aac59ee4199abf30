"""The classic Environment API v2 handlers: events, metrics, problems, entities, tokens, logs.

Each handler authorizes, parses its parameters, asks Telemetry and shapes the answer as the
reference shows it (parse -> call -> shape); errors are EnvironmentApiError (the ErrorEnvelope).
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from typing import Callable

from labkit.sandbox.dynatrace.errors import EnvironmentApiError, bad_param, violation
from labkit.sandbox.dynatrace.selectors import (CLUSTER_DIM, ENTITY_DIM, MetricQuery, criteria,
                                                parse_entity_selector, parse_metric_selector)
from labkit.sandbox.dynatrace.series import (aggregate, merged_minutes, parse_resolution,
                                             series_values, slot_bounds)
from labkit.sandbox.dynatrace.telemetry import Event, MonitoredEntity, Problem
from labkit.sandbox.dynatrace.tenant import PLATFORM_CLASSIC, Tenant, bearer
from labkit.sandbox.dynatrace.times import DAY_MS, HOUR_MS, MINUTE_MS, iso_ms, timeframe
from labkit.sandbox.http import Request, Response, json_response

EVENT_TYPES = ("AVAILABILITY_EVENT", "CUSTOM_ALERT", "CUSTOM_ANNOTATION", "CUSTOM_CONFIGURATION",
               "CUSTOM_DEPLOYMENT", "CUSTOM_INFO", "ERROR_EVENT", "MARKED_FOR_TERMINATION",
               "PERFORMANCE_EVENT", "RESOURCE_CONTENTION_EVENT", "WARNING")
# Info events may lie further in the past and future than problem-opening ones (reference §3).
INFO_EVENT_TYPES = {"CUSTOM_ANNOTATION", "CUSTOM_CONFIGURATION", "CUSTOM_DEPLOYMENT",
                    "CUSTOM_INFO", "MARKED_FOR_TERMINATION"}
TOKEN_RE = re.compile(r"^dt0[a-z]\d{2}\.[A-Z0-9]{24}\.[A-Z0-9]{64}$")


# ----- paging: an opaque key carries the first page's parameters (send it alone) -------------
def page_params(req: Request, allowed_with_key: tuple[str, ...] = ()) -> tuple[dict, int]:
    params = {k: v for k, v in req.query.items() if k != "api-token"}
    key = params.pop("nextPageKey", None)
    if not key:
        return params, 0
    extra = sorted(set(params) - set(allowed_with_key))
    if extra:
        raise bad_param("nextPageKey", "nextPageKey must be sent alone; omit "
                        + ", ".join(extra))
    try:
        saved = json.loads(base64.urlsafe_b64decode(key.encode() + b"=" * (-len(key) % 4)))
        first, offset = saved["p"], int(saved["o"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise bad_param("nextPageKey", "Invalid nextPageKey") from None
    first.update(params)
    return first, offset


def next_key(params: dict, offset: int, total: int) -> str | None:
    if offset >= total:
        return None
    raw = json.dumps({"p": params, "o": offset}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def page_size(params: dict, default: int, maximum: int) -> int:
    raw = params.get("pageSize")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise bad_param("pageSize", f"pageSize must be between 1 and {maximum}")
    return int(raw)


# ----- POST /api/v2/events/ingest and GET /api/v2/events --------------------------------------
def _property_value(value) -> str:
    """Read-back values are always strings; JSON booleans become "true"/"false"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _in_body(path: str, message: str) -> dict:
    return violation(path, message, "PAYLOAD_BODY")


def _validate_event(body) -> list[dict]:
    if not isinstance(body, dict):
        return [_in_body("", "The request body must be a JSON object")]
    out = []
    if body.get("eventType") is None:
        out.append(_in_body("eventType", "must not be null"))
    elif body["eventType"] not in EVENT_TYPES:
        out.append(_in_body("eventType", f"Invalid value '{body['eventType']}'. Allowed: "
                            + ", ".join(EVENT_TYPES)))
    title = body.get("title")
    if title is None:
        out.append(_in_body("title", "must not be null"))
    elif not isinstance(title, str) or not title.strip():
        out.append(_in_body("title", "must not be empty"))
    for key in ("startTime", "endTime", "timeout"):
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            out.append(_in_body(key, "must be an integer"))
    if body.get("entitySelector") is not None and not isinstance(body["entitySelector"], str):
        out.append(_in_body("entitySelector", "must be a string"))
    props = body.get("properties", {})
    return out + _validate_properties({} if props is None else props)


def _validate_properties(props) -> list[dict]:
    if not isinstance(props, dict):
        return [_in_body("properties", "must be a JSON object")]
    out = []
    if len(props) > 100:
        out.append(_in_body("properties", "At most 100 properties are allowed"))
    for key, value in props.items():
        path = f"properties.{key}"
        if len(key) > 100:
            out.append(_in_body(path, "Property keys are limited to 100 characters"))
        if key.startswith("dt.") and not key.startswith(("dt.event.", "dt.davis.", "dt.entity.")):
            out.append(_in_body(path, "Property keys starting with 'dt.' are reserved (allowed: "
                                "dt.event.*, dt.davis.*, dt.entity.*)"))
        if len(_property_value(value)) > 4096:
            out.append(_in_body(path, "Property values are limited to 4096 characters"))
    return out


def _timestamps_ok(event_type: str, start: int, end: int, now: int) -> bool:
    info = event_type in INFO_EVENT_TYPES
    past = 30 * DAY_MS if info else 6 * HOUR_MS
    future = 7 * DAY_MS if info else 5 * MINUTE_MS
    return now - past <= start <= now + future and end >= start


def ingest_event(tenant: Tenant, req: Request) -> Response:
    tenant.authorize(req, "events.ingest")
    try:
        body = req.json()
    except (ValueError, UnicodeDecodeError):
        raise EnvironmentApiError(400, "Could not parse the request body as JSON") from None
    problems = _validate_event(body)
    if problems:
        raise EnvironmentApiError(400, "Constraints violated.", problems)
    now = tenant.telemetry.clock()
    text = body.get("entitySelector")
    if text:
        selector = parse_entity_selector(text, "entitySelector", "PAYLOAD_BODY")
        recent = lambda e: selector.by_id or e.last_seen >= now - DAY_MS  # noqa: E731
        targets = [e for e in tenant.telemetry.entity_list() if selector.matches(e) and recent(e)]
    else:
        targets = [tenant.telemetry.environment]
    start = body.get("startTime") or now
    timeout = min(body.get("timeout") or 15, 360)
    end = body.get("endTime") or start + timeout * MINUTE_MS
    props = {k: _property_value(v) for k, v in (body.get("properties") or {}).items()}
    results = []
    for entity in targets:
        if not _timestamps_ok(body["eventType"], start, end, now):
            results.append({"correlationId": secrets.token_hex(8), "status": "INVALID_TIMESTAMPS"})
            continue
        event = tenant.telemetry.add_event(body["eventType"], body["title"], entity, start, end,
                                           props)
        results.append({"correlationId": event.correlation_id, "status": "OK"})
    return json_response({"reportCount": len(results), "eventIngestResults": results}, 201)


def _event_json(event: Event, now: int) -> dict:
    return {
        "eventId": event.event_id, "startTime": event.start, "endTime": event.end,
        "eventType": event.event_type, "title": event.title, "entityId": event.entity.stub(),
        "properties": [{"key": k, "value": v} for k, v in sorted(event.properties.items())],
        "status": event.status(now), "correlationId": event.correlation_id, "entityTags": [],
        "managementZones": [], "underMaintenance": False, "suppressAlert": False,
        "suppressProblem": False, "frequentEvent": False,
    }


# eventSelector criteria that match one of the given ids
EVENT_IDS: dict[str, Callable[[Event], str]] = {
    "entityId": lambda e: e.entity.entity_id, "eventId": lambda e: e.event_id,
    "correlationId": lambda e: e.correlation_id}


def _event_filter(text: str, now: int) -> Callable[[Event], bool]:
    try:
        return criteria(text, lambda name, values: _event_criterion(name, values, now))
    except ValueError as exc:
        raise bad_param("eventSelector", f"Invalid event selector: {exc}") from None


def _event_criterion(name: str, values: list[str], now: int) -> Callable[[Event], bool]:
    wanted = set(values)
    if name == "eventType":
        if len(values) != 1:
            raise ValueError("eventType() takes exactly one type")
        return lambda e: e.event_type == values[0]
    if name == "status":
        statuses = {v.upper() for v in values}
        return lambda e: e.status(now) in statuses
    if name in EVENT_IDS:
        field = EVENT_IDS[name]
        return lambda e: field(e) in wanted
    if name.startswith("property.") and len(name) > len("property."):
        key = name[len("property."):]
        return lambda e: e.properties.get(key) in wanted
    raise ValueError(f"the local lab does not support the criterion '{name}'")


def list_events(tenant: Tenant, req: Request) -> Response:
    tenant.authorize(req, "events.read")
    params, offset = page_params(req)
    now = tenant.telemetry.clock()
    start, end = timeframe(params, now, 2 * HOUR_MS)
    size = page_size(params, 100, 1000)
    keep = _event_filter(params["eventSelector"], now) if params.get("eventSelector") else None
    selector = parse_entity_selector(params["entitySelector"]) \
        if params.get("entitySelector") else None
    events = [e for e in tenant.telemetry.events()
              if e.start <= end and e.end >= start
              and (keep is None or keep(e)) and (selector is None or selector.matches(e.entity))]
    events.sort(key=lambda e: e.start, reverse=True)
    page = events[offset:offset + size]
    return json_response({
        "totalCount": len(events), "pageSize": size,
        "nextPageKey": next_key(params, offset + size, len(events)), "warnings": [],
        "events": [_event_json(e, now) for e in page]})


def get_event(tenant: Tenant, req: Request, eventId: str) -> Response:  # noqa: N803
    """GET /api/v2/events/{eventId}: one event (the SDK's getEvent)."""
    tenant.authorize(req, "events.read")
    now = tenant.telemetry.clock()
    for event in tenant.telemetry.events():
        if event.event_id == eventId:
            return json_response(_event_json(event, now))
    raise EnvironmentApiError(404, f"Event {eventId} not found")


# ----- GET /api/v2/metrics/query ----------------------------------------------------------------
# Unified (OTel-only) service metrics carry data; the OneAgent keys exist but stay empty here,
# as they do for the lab's services (so a client's fallback logic is exercised).
DATA_KEYS = {"builtin:service.request.count": 0, "builtin:service.request.failure_count": 1}
EMPTY_KEYS = {"builtin:service.errors.total.count", "builtin:service.errors.server.count",
              "builtin:service.errors.total.rate", "builtin:service.errors.server.rate",
              "builtin:service.requestCount.total", "builtin:service.requestCount.server",
              "builtin:service.response.time"}


def run_metric_query(tenant: Tenant, q: MetricQuery, start: int, end: int, step: int | None,
                     allowed_ids: set | None) -> dict:
    result = {"metricId": q.raw, "dataPointCountRatio": 0.0, "dimensionCountRatio": 0.0,
              "warnings": [], "data": []}
    if q.key in EMPTY_KEYS:
        result["warnings"].append(f"The metric {q.key} has no data in the requested timeframe "
                                  "(it is reported for OneAgent services only)")
        return result
    counters = [(e, c) for e, c in tenant.telemetry.series()
                if e.type == "SERVICE" and (allowed_ids is None or e.entity_id in allowed_ids)
                and (q.filter is None or q.filter({ENTITY_DIM: e.entity_id, CLUSTER_DIM: c}))]
    merged = q.split == []
    by_entity: dict[str, tuple] = {}
    for e, c in counters:
        by_entity.setdefault(e.entity_id, (e, []))[1].append((e, c))
    groups = [(None, counters)] if merged else list(by_entity.values())
    bounded = allowed_ids is not None or q.filter_ids is not None
    slots = slot_bounds(start, end, step)
    data = []
    for entity, members in groups:
        ts, values = _metric_values(tenant, q, members, slots)
        has_data = any(v is not None for v in values)
        if not has_data and not (q.default_always and (merged or bounded)):
            continue  # a series exists only where data exists
        if q.default is not None and (has_data or q.default_always):
            values = [q.default if v is None else v for v in values]
        data.append({"dimensions": [] if entity is None else [entity.entity_id],
                     "dimensionMap": {} if entity is None else {ENTITY_DIM: entity.entity_id},
                     "timestamps": ts, "values": [_number(v) for v in values]})
    data = _ranked(q, data)
    points = sum(len(d["values"]) for d in data)
    result.update(data=data, dataPointCountRatio=round(points / 20_000_000, 7),
                  dimensionCountRatio=round(len(data) / 100_000, 7))
    return result


def _metric_values(tenant: Tenant, q: MetricQuery, members: list[tuple[MonitoredEntity, str]],
                   slots: list[tuple[int, int]]) -> tuple[list[int], list[float | None]]:
    """(timestamps, values) of one series: the slot ends, or one folded value at the end."""
    first, last = slots[0][0] // MINUTE_MS, -(-slots[-1][1] // MINUTE_MS)
    minutes = merged_minutes(tenant.telemetry, members, DATA_KEYS[q.key], first, last)
    if q.fold:
        return [slots[-1][1]], [aggregate([v for v in minutes if v is not None], q.fold)]
    return [e for _, e in slots], series_values(minutes, first, slots, q.agg)


def _ranked(q: MetricQuery, data: list[dict]) -> list[dict]:
    """:sort(value(avg,descending)) and :limit(n) over the series."""
    if q.sort_desc is not None:
        def key(one: dict) -> float:
            return aggregate([v for v in one["values"] if v is not None], q.sort_agg) or 0
        data.sort(key=key, reverse=q.sort_desc)
    return data[:q.limit] if q.limit else data


def _number(v: float | None):
    """JSON numbers like the example: whole values as ints, others as floats."""
    if v is None:
        return None
    return int(v) if float(v).is_integer() else v


def query_metrics(tenant: Tenant, req: Request) -> Response:
    tenant.authorize(req, "metrics.read")
    accept = req.headers.get("accept", "application/json")
    if "json" not in accept and "*/*" not in accept:
        raise EnvironmentApiError(406, "Not acceptable: the local lab answers application/json, "
                                       f"not {accept}")
    params = {k: v for k, v in req.query.items() if k != "api-token"}
    if not params.get("metricSelector"):
        raise bad_param("metricSelector", "metricSelector is required")
    now = tenant.telemetry.clock()
    start, end = timeframe(params, now, 2 * HOUR_MS)
    queries = parse_metric_selector(tenant.services(), params["metricSelector"])
    for q in queries:
        if q.key not in DATA_KEYS and q.key not in EMPTY_KEYS:
            raise EnvironmentApiError(404, f"Metric key {q.key} not found")
    step, resolution = parse_resolution(params.get("resolution"), start, end)
    allowed = None
    if params.get("entitySelector"):
        selector = parse_entity_selector(params["entitySelector"])
        allowed = {e.entity_id for e in tenant.services() if selector.matches(e)}
    results = [run_metric_query(tenant, q, start, end, step, allowed) for q in queries]
    return json_response({
        "totalCount": max((len(r["data"]) for r in results), default=0), "nextPageKey": None,
        "resolution": resolution, "warnings": [], "result": results})


# ----- GET /api/v2/problems and /api/v2/problems/{problemId} ----------------------------------
# problemSelector criteria that match one of the given ids (every lab problem has one entity)
PROBLEM_IDS: dict[str, Callable[[Problem], str]] = {
    "affectedEntities": lambda p: p.entity.entity_id,
    "impactedEntities": lambda p: p.entity.entity_id,
    "rootCauseEntity": lambda p: p.entity.entity_id, "displayId": lambda p: p.display_id,
    "problemId": lambda p: p.problem_id}


def _problem_filter(text: str) -> Callable[[Problem], bool]:
    try:
        return criteria(text, _problem_criterion, require_quotes=True)
    except ValueError as exc:
        raise bad_param("problemSelector", f"Invalid problem selector: {exc}") from None


def _problem_criterion(name: str, values: list[str]) -> Callable[[Problem], bool]:
    wanted, upper = set(values), {v.upper() for v in values}
    if name == "status":
        statuses = {v.lower() for v in values}
        if not statuses <= {"open", "closed"}:
            raise ValueError('status() takes "open" or "closed"')
        return lambda p: ("open" if p.open else "closed") in statuses
    if name in PROBLEM_IDS:
        field = PROBLEM_IDS[name]
        return lambda p: field(p) in wanted
    if name == "affectedEntityTypes":
        return lambda p: p.entity.type in upper
    if name == "severityLevel":
        return lambda p: _severity(p) in upper
    if name == "impactLevel":
        return lambda p: _impact(p) in upper
    if name == "text":
        if any(len(v) > 30 for v in values):
            raise ValueError("text() is limited to 30 characters")
        words = [v.lower() for v in values]
        return lambda p: any(w in p.title.lower() or w in p.entity.name.lower() for w in words)
    raise ValueError(f"the local lab does not support the criterion '{name}'")


# Grail's event.category -> the classic API's severityLevel
SEVERITY = {"SLOWDOWN": "PERFORMANCE"}


def _severity(p: Problem) -> str:
    return SEVERITY.get(p.category, p.category)


def _impact(p: Problem) -> str:
    return "SERVICES" if p.entity.type == "SERVICE" else "INFRASTRUCTURE"


def _event_evidence(e: Event, end: int) -> dict:
    stub = e.entity.stub()
    return {"evidenceType": "EVENT", "displayName": e.title, "entity": stub, "groupingEntity": stub,
            "rootCauseRelevant": True, "startTime": e.start, "endTime": end, "eventId": e.event_id,
            "eventType": e.event_type,
            "data": {"properties": [{"key": k, "value": v} for k, v in sorted(e.properties.items())]}}


def _evidence(tenant: Tenant, p: Problem) -> dict:
    now = tenant.telemetry.clock()
    details = [_event_evidence(e, e.end if e.end <= now else -1) for e in p.events]
    details += [_event_evidence(e, e.end) for e in tenant.telemetry.change_evidence(p)]
    return {"totalCount": len(details), "details": details}


def _problem_json(tenant: Tenant, p: Problem, fields: set[str]) -> dict:
    stub = p.entity.stub()
    out = {
        "problemId": p.problem_id, "displayId": p.display_id, "title": p.title,
        "status": "OPEN" if p.open else "CLOSED", "severityLevel": _severity(p),
        "impactLevel": _impact(p), "startTime": p.start, "endTime": p.end,
        "affectedEntities": [stub], "impactedEntities": [stub], "rootCauseEntity": stub,
        "managementZones": [], "entityTags": [],
        "problemFilters": [{"id": "c21f969b-5f03-333d-83e0-4f8f136e7682", "name": "Default"}],
        "k8s.cluster.name": sorted(p.clusters), "k8s.namespace.name": ["default"],
    }
    if "evidenceDetails" in fields:
        out["evidenceDetails"] = _evidence(tenant, p)
    if "impactAnalysis" in fields:
        out["impactAnalysis"] = {"impacts": [{"impactType": _impact(p), "impactedEntity": stub,
                                              "estimatedAffectedUsers": 0}]}
    if "recentComments" in fields:
        out["recentComments"] = {"totalCount": 0, "pageSize": 5, "nextPageKey": None,
                                 "comments": []}
    return out


def _problem_fields(text: str | None) -> set[str]:
    fields = {f.strip().lstrip("+") for f in (text or "").split(",") if f.strip()}
    unknown = fields - {"evidenceDetails", "impactAnalysis", "recentComments"}
    if unknown:
        raise bad_param("fields", f"Unknown field(s): {', '.join(sorted(unknown))}. Use "
                                  "evidenceDetails, impactAnalysis, recentComments")
    return fields


def list_problems(tenant: Tenant, req: Request) -> Response:
    tenant.authorize(req, "problems.read")
    params, offset = page_params(req, allowed_with_key=("fields",))
    now = tenant.telemetry.clock()
    start, end = timeframe(params, now, 2 * HOUR_MS)
    size = page_size(params, 50, 500)
    fields = _problem_fields(params.get("fields"))
    keep = _problem_filter(params["problemSelector"]) \
        if params.get("problemSelector") else None
    selector = parse_entity_selector(params["entitySelector"]) \
        if params.get("entitySelector") else None
    found = [p for p in tenant.telemetry.problems()
             if p.start <= end and (p.open or p.end >= start)
             and (keep is None or keep(p)) and (selector is None or selector.matches(p.entity))]
    found.sort(key=lambda p: p.start, reverse=True)
    if params.get("sort", "").startswith("+status") or params.get("sort") == "status":
        found.sort(key=lambda p: not p.open)
    page = found[offset:offset + size]
    key_params = {k: v for k, v in params.items() if k != "fields"}
    return json_response({
        "totalCount": len(found), "pageSize": size,
        "nextPageKey": next_key(key_params, offset + size, len(found)), "warnings": [],
        "problems": [_problem_json(tenant, p, fields) for p in page]})


def get_problem(tenant: Tenant, req: Request, problemId: str) -> Response:  # noqa: N803
    tenant.authorize(req, "problems.read")
    for p in tenant.telemetry.problems():
        if p.problem_id == problemId:
            return json_response(_problem_json(tenant, p, {"evidenceDetails", "impactAnalysis",
                                                           "recentComments"}))
    raise EnvironmentApiError(404, f"Problem {problemId} not found")


# ----- GET /api/v2/entities and /api/v2/entities/{entityId}, POST /api/v2/apiTokens/lookup ----
ENTITY_FIELDS = {"lastSeenTms", "firstSeenTms", "properties", "tags", "managementZones",
                 "toRelationships", "fromRelationships", "icon"}
# Property names for unified services are UNCONFIRMED (reference §9); these are plausible.
SERVICE_PROPERTIES = {"serviceType": "UNIFIED", "serviceTechnologyTypes": ["OpenTelemetry"],
                      "agentTechnologyType": "N/A"}


def _entity_json(e: MonitoredEntity, fields: set[str]) -> dict:
    out = {"entityId": e.entity_id, "type": e.type, "displayName": e.name}
    extra = {"firstSeenTms": e.first_seen, "lastSeenTms": e.last_seen, "tags": [],
             "managementZones": [], "toRelationships": {}, "fromRelationships": {},
             "icon": {"primaryIconType": "services" if e.type == "SERVICE" else "kubernetes-pod"},
             "properties": dict(SERVICE_PROPERTIES) if e.type == "SERVICE" else {}}
    for f in sorted(fields):
        if f.startswith("properties."):
            name = f[len("properties."):]
            if name in SERVICE_PROPERTIES and e.type == "SERVICE":
                out.setdefault("properties", {})[name] = SERVICE_PROPERTIES[name]
        else:
            out[f] = extra[f]
    return out


def _entity_fields(text: str | None) -> set[str]:
    fields = {f.strip().lstrip("+") for f in (text or "").split(",") if f.strip()}
    unknown = {f for f in fields if f not in ENTITY_FIELDS and not f.startswith("properties.")}
    if unknown:
        raise bad_param("fields", f"Unknown field(s): {', '.join(sorted(unknown))}")
    return fields


def list_entities(tenant: Tenant, req: Request) -> Response:
    tenant.authorize(req, "entities.read")
    params, offset = page_params(req)
    if not params.get("entitySelector"):
        raise bad_param("entitySelector", "entitySelector is required on the first page")
    now = tenant.telemetry.clock()
    start, end = timeframe(params, now, 3 * DAY_MS)
    size = page_size(params, 50, 4000)
    fields = _entity_fields(params.get("fields"))
    selector = parse_entity_selector(params["entitySelector"])
    found = [e for e in tenant.telemetry.entity_list()
             if selector.matches(e) and e.last_seen >= start and e.first_seen <= end]
    sort = params.get("sort", "")
    if sort in ("name", "+name", "-name"):
        found.sort(key=lambda e: e.name.lower(), reverse=sort == "-name")
    page = found[offset:offset + size]
    return json_response({
        "totalCount": len(found), "pageSize": size,
        "nextPageKey": next_key(params, offset + size, len(found)),
        "entities": [_entity_json(e, fields) for e in page]})


def get_entity(tenant: Tenant, req: Request, entityId: str) -> Response:  # noqa: N803
    tenant.authorize(req, "entities.read")
    entity = tenant.telemetry.entity_by_id(entityId)
    if entity is None:
        raise EnvironmentApiError(404, f"Entity {entityId} not found")
    return json_response(_entity_json(entity, ENTITY_FIELDS))


def lookup_token(tenant: Tenant, req: Request) -> Response:
    tenant.authorize(req, None)  # any valid token may look tokens up
    try:
        body = req.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not TOKEN_RE.match(token):
        raise EnvironmentApiError(400, "Constraints violated.", [_in_body(
            "token", "must be an API token like dt0c01.<24 characters>.<64 characters>")])
    info = tenant.tokens.get(token)
    if info is None:
        raise EnvironmentApiError(404, "The requested token does not exist")
    token_id = ".".join(token.split(".")[:2])
    return json_response({
        "id": token_id, "name": info.name, "enabled": True, "personalAccessToken": False,
        "owner": "workshop.user@labkit.local", "creationDate": iso_ms(info.created),
        "modifiedDate": iso_ms(info.created), "lastUsedDate": iso_ms(info.last_used),
        "lastUsedIpAddress": "127.0.0.1", "scopes": sorted(info.scopes)})


# ----- GET /api/v2/logs/search (classic, deprecated; on Grail log storage only with a platform token)
LOG_TERM_RE = re.compile(r'^([\w.]+)\s*[=:]\s*"?(.*?)"?$')


def _log_query(text: str) -> Callable[[dict], bool]:
    """`status="ERROR" AND redis` style: field=value terms and content words, AND / OR."""
    alternatives = []
    for alt in re.split(r"\s+OR\s+", text.strip()):
        terms = []
        for term in re.split(r"\s+AND\s+", alt.strip()):
            term = term.strip()
            if not term:
                continue
            m = LOG_TERM_RE.match(term)
            if m and m.group(1) != "content":
                key, value = m.group(1), m.group(2).lower()
                terms.append(lambda r, k=key, v=value: str(r.get(k, "")).lower() == v)
            else:
                word = (m.group(2) if m else term).strip('"').lower()
                terms.append(lambda r, w=word: w in r.get("content", "").lower())
        alternatives.append(terms)
    return lambda r: any(all(t(r) for t in terms) for terms in alternatives)


GRAIL_LOGS = ("This environment keeps its logs in Grail: log search needs a platform token "
              "(Authorization: Bearer) with storage:logs:read; an API token is not enough.")


def search_logs(tenant: Tenant, req: Request) -> Response:
    if bearer(req) and not req.path.startswith(PLATFORM_CLASSIC):  # Grail log storage: both scopes
        tenant.authorize_platform(req, ["storage:logs:read", "storage:buckets:read"])
    elif tenant.authorize(req, "logs.read") is not None:  # an API token: Grail log storage says no
        raise EnvironmentApiError(403, GRAIL_LOGS)
    params = req.query
    now = tenant.telemetry.clock()
    start, end = timeframe(params, now, 14 * DAY_MS)
    limit_raw = params.get("limit", "1000")
    if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= 1000:
        raise bad_param("limit", "limit must be between 1 and 1000")
    rows = tenant.telemetry.logs(start, end)
    if params.get("query"):
        keep = _log_query(params["query"])
        rows = [r for r in rows if keep(r)]
    if params.get("sort", "-timestamp") != "+timestamp":
        rows.reverse()
    rows = rows[:int(limit_raw)]
    skip = {"timestamp", "_ms", "content", "status", "event.type"}
    results = [{"timestamp": r["_ms"], "content": r["content"], "status": r["status"],
                "eventType": "LOG",
                "additionalColumns": {k: [str(v)] for k, v in r.items() if k not in skip}}
               for r in rows]
    return json_response({"sliceSize": len(results), "nextSliceKey": None, "results": results})
