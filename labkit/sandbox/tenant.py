"""The local lab's Dynatrace tenant: the classic Environment API v2 and the Grail query API.

Speaks the shapes of shared/reference/dynatrace-api.md (and its examples) over loopback, computed
from Telemetry: what the shop served, the logs the cart wrote, the events labkit ingested and the
problems Telemetry detected. It is a stand-in, not an emulator: selectors and DQL are parsed for
the subset the lab uses, and anything else gets the real error shape with a message that says the
local lab does not support it (rather than a silently wrong answer).

Sections: errors and auth; time and selector parsing; classic endpoints (events, metrics,
problems, entities, token lookup, log search); DQL (tokenizer, parser, evaluator); Grail endpoints.
"""
from __future__ import annotations

import base64
import binascii
import inspect
import json
import math
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from labkit.sandbox.background import Background
from labkit.sandbox.http import Request, Response, json_response
from labkit.sandbox.telemetry import (MINUTE_MS, Entity, Event, Problem, Telemetry, iso, iso_ms)

READ_AND_INGEST_SCOPES = frozenset({
    "events.ingest", "events.read", "metrics.read", "problems.read", "entities.read", "logs.read",
    "logs.ingest", "metrics.ingest", "openTelemetryTrace.ingest"})
LAB_INGEST_SCOPES = frozenset({
    "logs.ingest", "metrics.ingest", "openTelemetryTrace.ingest", "events.ingest"})

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
EVENT_TYPES = ("AVAILABILITY_EVENT", "CUSTOM_ALERT", "CUSTOM_ANNOTATION", "CUSTOM_CONFIGURATION",
               "CUSTOM_DEPLOYMENT", "CUSTOM_INFO", "ERROR_EVENT", "MARKED_FOR_TERMINATION",
               "PERFORMANCE_EVENT", "RESOURCE_CONTENTION_EVENT", "WARNING")
# Info events may lie further in the past and future than problem-opening ones (reference §3).
INFO_EVENT_TYPES = {"CUSTOM_ANNOTATION", "CUSTOM_CONFIGURATION", "CUSTOM_DEPLOYMENT",
                    "CUSTOM_INFO", "MARKED_FOR_TERMINATION"}
TOKEN_RE = re.compile(r"^dt0[a-z]\d{2}\.[A-Z0-9]{24}\.[A-Z0-9]{64}$")


# =============================================================================================
# Errors and auth
# =============================================================================================
class ApiError(Exception):
    """A classic API error, answered with the ErrorEnvelope."""

    def __init__(self, status: int, message: str, violations: list[dict] | None = None):
        super().__init__(message)
        self.status, self.message, self.violations = status, message, violations

    def response(self) -> Response:
        error: dict[str, Any] = {"code": self.status, "message": self.message}
        if self.violations is not None:
            error["constraintViolations"] = self.violations
        return json_response({"error": error}, self.status)


def violation(path: str, message: str, location: str = "QUERY") -> dict:
    return {"path": path, "message": message, "parameterLocation": location, "location": None}


def bad_param(path: str, message: str, location: str = "QUERY") -> ApiError:
    return ApiError(400, "Constraints violated.", [violation(path, message, location)])


class PlatformError(Exception):
    """A platform (Grail) API error: {"error": {"code", "message", "details": {...}}}."""

    def __init__(self, status: int, message: str, error_type: str, **details):
        super().__init__(message)
        self.status, self.message, self.error_type, self.details = status, message, error_type, details

    def response(self) -> Response:
        details = {"errorType": self.error_type, "errorMessage": self.message, "arguments": [],
                   **self.details}
        return json_response({"error": {"code": self.status, "message": self.message,
                                        "details": details}}, self.status)


@dataclass
class TokenInfo:
    token: str
    scopes: frozenset
    name: str
    created: int
    last_used: int


def _api_token(req: Request) -> str | None:
    auth = req.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "api-token" and value.strip():
        return value.strip()
    return req.query.get("api-token") or None


# =============================================================================================
# Time parsing (reference §2): epoch ms, ISO with or without zone, now-2h, now-1d/d
# =============================================================================================
UNIT_MS = {"s": 1000, "m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS, "w": 7 * DAY_MS,
           "M": 30 * DAY_MS, "q": 91 * DAY_MS, "y": 365 * DAY_MS}
RELATIVE_RE = re.compile(r"^now(?:\s*-\s*(\d+)([smhdwMy]))?(?:/([smhdwMy]))?$")
ISO_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?"
                    r"\s*(Z|[+-]\d{2}:?\d{2})?$")


def _align(ms: int, unit: str) -> int:
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    if unit in ("s", "m", "h", "d"):
        return ms - ms % UNIT_MS[unit]
    day = dt.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "w":
        day -= timedelta(days=day.weekday())
    elif unit == "M":
        day = day.replace(day=1)
    elif unit == "y":
        day = day.replace(month=1, day=1)
    return int(day.timestamp() * 1000)


def parse_time(text: str | None, now: int, param: str = "from") -> int | None:
    """A timeframe bound in any of the classic API's formats; None when not given."""
    if text is None or text.strip() == "":
        return None
    text = text.strip()
    if text.isdigit():
        return int(text)
    m = RELATIVE_RE.match(text)
    if m:
        t = now - (int(m.group(1)) * UNIT_MS[m.group(2)] if m.group(1) else 0)
        return _align(t, m.group(3)) if m.group(3) else t
    # A '+' in an unencoded query string arrives as a space: "…01.123 01:00".
    text = re.sub(r"(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})$", r"\1+\2", text)
    m = ISO_RE.match(text)
    if not m:
        raise bad_param(param, f"Invalid timestamp '{text}': use epoch milliseconds, "
                               "ISO 8601 (2021-01-25T05:57:01.123+01:00) or now-2h")
    y, mo, d, h, mi, s, frac, zone = m.groups()
    tz = timezone.utc
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    micro = int((frac or "0").ljust(6, "0")[:6])
    dt = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0), micro, tz)
    return int(dt.timestamp() * 1000)


def timeframe(req_params: dict, now: int, default_from: int) -> tuple[int, int]:
    start = parse_time(req_params.get("from"), now, "from")
    end = parse_time(req_params.get("to"), now, "to")
    start = now - default_from if start is None else start
    end = now if end is None else end
    if start >= end:
        raise bad_param("from", "The start of the timeframe must be before its end")
    return start, end


# =============================================================================================
# Selector parsing shared by entitySelector, eventSelector, problemSelector and metricSelector
# =============================================================================================
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


@dataclass
class EntitySelector:
    text: str
    predicates: list[Callable[[Entity], bool]]
    by_id: bool  # entityId(...) bypasses the "seen in the last 24 h" rule of event ingest

    def matches(self, entity: Entity) -> bool:
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


# =============================================================================================
# Pagination: an opaque key that carries the first page's parameters (send it alone)
# =============================================================================================
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


# =============================================================================================
# The tenant
# =============================================================================================
@dataclass
class GrailJob:
    query: "DqlQuery"
    frame: tuple[int, int]
    ready_at: float
    max_records: int
    result: dict | None = None
    expires_at: float = math.inf


class Tenant:
    """The local lab's Dynatrace environment. Tokens map to scopes; platform tokens use Grail."""

    RESULT_TTL = 60.0  # s a finished Grail result stays available (reference §10)

    def __init__(self, telemetry: Telemetry, timings, tokens: dict[str, set | frozenset],
                 platform_tokens: set[str] | frozenset = frozenset()):
        self.telemetry = telemetry
        self.timings = timings
        now = telemetry.clock()
        self.tokens = {t: TokenInfo(t, frozenset(s), self._token_name(s), now, now)
                       for t, s in tokens.items()}
        self.platform_tokens = set(platform_tokens)
        self._jobs: dict[str, GrailJob] = {}
        self._gone: set[str] = set()
        self._lock = threading.Lock()
        # A timer, not a wait for a condition: problems close after a quiet period of time.
        self._housekeeper = Background("labkit-tenant", self._housekeeping, lambda: 0.5)

    @staticmethod
    def _token_name(scopes) -> str:
        return "obslab-workshop (ingest only)" if set(scopes) <= LAB_INGEST_SCOPES \
            else "labkit local lab (read + ingest)"

    def start(self) -> "Tenant":
        self._housekeeper.start()
        return self

    def stop(self) -> None:
        self._housekeeper.stop()

    def _housekeeping(self) -> None:
        self.telemetry.check_problems()
        now = time.monotonic()
        with self._lock:
            for token in [t for t, j in self._jobs.items() if j.expires_at < now]:
                del self._jobs[token]
                self._gone.add(token)

    # ----- auth ------------------------------------------------------------------------------
    def authorize(self, req: Request, scope: str | None) -> TokenInfo:
        token = _api_token(req)
        if not token:
            raise ApiError(401, "Missing authorization parameter.")
        info = self.tokens.get(token)
        if info is None:
            raise ApiError(401, "Token Authentication failed")
        if scope and scope not in info.scopes:
            raise ApiError(403, f"Token is missing required scope. Use one of: {scope}")
        info.last_used = self.telemetry.clock()
        return info

    def authorize_platform(self, req: Request) -> None:
        scheme, _, value = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise PlatformError(401, "Authentication required: send Authorization: Bearer "
                                     "<platform token>", "UNAUTHORIZED")
        if value.strip() not in self.platform_tokens:
            raise PlatformError(401, "The bearer token is not valid", "UNAUTHORIZED")

    def services(self) -> list[Entity]:
        return [e for e in self.telemetry.entity_list() if e.type == "SERVICE"]


# =============================================================================================
# POST /api/v2/events/ingest and GET /api/v2/events
# =============================================================================================
def _property_value(value) -> str:
    """Read-back values are always strings; JSON booleans become "true"/"false"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _validate_event(body) -> list[dict]:
    if not isinstance(body, dict):
        return [violation("", "The request body must be a JSON object", "PAYLOAD_BODY")]
    out = []
    if body.get("eventType") is None:
        out.append(violation("eventType", "must not be null", "PAYLOAD_BODY"))
    elif body["eventType"] not in EVENT_TYPES:
        out.append(violation("eventType", f"Invalid value '{body['eventType']}'. Allowed: "
                             + ", ".join(EVENT_TYPES), "PAYLOAD_BODY"))
    title = body.get("title")
    if title is None:
        out.append(violation("title", "must not be null", "PAYLOAD_BODY"))
    elif not isinstance(title, str) or not title.strip():
        out.append(violation("title", "must not be empty", "PAYLOAD_BODY"))
    for key in ("startTime", "endTime", "timeout"):
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            out.append(violation(key, "must be an integer", "PAYLOAD_BODY"))
    if body.get("entitySelector") is not None and not isinstance(body["entitySelector"], str):
        out.append(violation("entitySelector", "must be a string", "PAYLOAD_BODY"))
    props = body.get("properties", {})
    if props is None:
        props = {}
    if not isinstance(props, dict):
        out.append(violation("properties", "must be a JSON object", "PAYLOAD_BODY"))
        return out
    if len(props) > 100:
        out.append(violation("properties", "At most 100 properties are allowed", "PAYLOAD_BODY"))
    for key, value in props.items():
        path = f"properties.{key}"
        if len(key) > 100:
            out.append(violation(path, "Property keys are limited to 100 characters",
                                 "PAYLOAD_BODY"))
        if key.startswith("dt.") and not key.startswith(("dt.event.", "dt.davis.", "dt.entity.")):
            out.append(violation(path, "Property keys starting with 'dt.' are reserved (allowed: "
                                 "dt.event.*, dt.davis.*, dt.entity.*)", "PAYLOAD_BODY"))
        if len(_property_value(value)) > 4096:
            out.append(violation(path, "Property values are limited to 4096 characters",
                                 "PAYLOAD_BODY"))
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
        raise ApiError(400, "Could not parse the request body as JSON") from None
    problems = _validate_event(body)
    if problems:
        raise ApiError(400, "Constraints violated.", problems)
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


def _event_filter(text: str, now: int) -> Callable[[Event], bool]:
    tests: list[Callable[[Event], bool]] = []
    try:
        for criterion in split_top(text):
            name, args = parse_call(criterion)
            values = call_values(args)
            if name == "eventType":
                if len(values) != 1:
                    raise ValueError("eventType() takes exactly one type")
                tests.append(lambda e, v=values[0]: e.event_type == v)
            elif name == "status":
                wanted = {v.upper() for v in values}
                tests.append(lambda e, w=wanted: e.status(now) in w)
            elif name == "entityId":
                tests.append(lambda e, v=set(values): e.entity.entity_id in v)
            elif name == "eventId":
                tests.append(lambda e, v=set(values): e.event_id in v)
            elif name == "correlationId":
                tests.append(lambda e, v=set(values): e.correlation_id in v)
            elif name.startswith("property.") and len(name) > len("property."):
                key = name[len("property."):]
                tests.append(lambda e, k=key, v=set(values): e.properties.get(k) in v)
            else:
                raise ValueError(f"the local lab does not support the criterion '{name}'")
    except ValueError as exc:
        raise bad_param("eventSelector", f"Invalid event selector: {exc}") from None
    return lambda e: all(t(e) for t in tests)


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


# =============================================================================================
# GET /api/v2/metrics/query
# =============================================================================================
# Unified (OTel-only) service metrics carry data; the OneAgent keys exist but stay empty here,
# as they do for the lab's services (so a client's fallback logic is exercised).
DATA_KEYS = {"builtin:service.request.count": 0, "builtin:service.request.failure_count": 1}
EMPTY_KEYS = {"builtin:service.errors.total.count", "builtin:service.errors.server.count",
              "builtin:service.errors.total.rate", "builtin:service.errors.server.rate",
              "builtin:service.requestCount.total", "builtin:service.requestCount.server",
              "builtin:service.response.time"}
ENTITY_DIM = "dt.entity.service"
AGGREGATIONS = ("value", "sum", "avg", "count", "max", "min", "auto")
NICE_MINUTES = (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 10080)
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


def _dim_condition(tenant: Tenant, text: str) -> tuple[Callable[[dict], bool], set | None]:
    """A :filter() condition on the dimensions, and the entity ids it can match (if bounded)."""
    name, args = parse_call(text)
    if name in ("and", "or"):
        parts = [_dim_condition(tenant, a) for a in split_top(args)]
        tests = [p[0] for p in parts]
        combine = all if name == "and" else any
        return (lambda d: combine(t(d) for t in tests)), None
    if name == "not":
        inner, _ = _dim_condition(tenant, args)
        return (lambda d: not inner(d)), None
    parts = split_top(args)
    dim, _ = unquote(parts[0])
    if dim != ENTITY_DIM:
        raise ValueError(f"dimension '{dim}' does not exist for this metric (use {ENTITY_DIM})")
    if name == "in":
        ids: set[str] = set()
        for part in parts[1:]:
            if part.startswith("entitySelector"):
                _, sel_args = parse_call(part)
                selector = parse_entity_selector(unquote(sel_args)[0], "metricSelector")
                ids |= {e.entity_id for e in tenant.services() if selector.matches(e)}
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
    return (lambda d: test(d.get(dim) or "")), ({value} if name == "eq" else None)


def parse_metric_selector(tenant: Tenant, text: str) -> list[MetricQuery]:
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
                _apply_transformation(tenant, q, name, args)
        except ValueError as exc:
            raise bad_param("metricSelector", f"Invalid metric selector '{raw}': {exc}") from None
        queries.append(q)
    return queries


def _apply_transformation(tenant: Tenant, q: MetricQuery, name: str, args: str | None) -> None:
    if name == "filter":
        q.filter, q.filter_ids = _dim_condition(tenant, args or "")
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


def parse_resolution(text: str | None, start: int, end: int) -> tuple[int | None, str]:
    """(slot length ms or None for Inf, the resolution string the response reports)."""
    if text in (None, ""):
        text = "120"
    if text == "Inf":
        return None, "Inf"
    if text.isdigit():
        points = max(int(text), 1)
        want = math.ceil((end - start) / points / MINUTE_MS)
        minutes = next((n for n in NICE_MINUTES if n >= want), NICE_MINUTES[-1])
    else:
        m = re.fullmatch(r"(\d+)([mhdwMqy])", text)
        if not m or int(m.group(1)) == 0:
            raise bad_param("resolution", f"Invalid resolution '{text}': use a point count, "
                                          "a timespan like 1m or 1h, or Inf")
        minutes = max(int(m.group(1)) * UNIT_MS[m.group(2)] // MINUTE_MS, 1)
    return minutes * MINUTE_MS, _span_text(minutes)


def _span_text(minutes: int) -> str:
    for unit, size in (("d", 1440), ("h", 60)):
        if minutes % size == 0:
            return f"{minutes // size}{unit}"
    return f"{minutes}m"


def _aggregate(values: list[float], agg: str) -> float | None:
    if not values:
        return None
    if agg in ("value", "sum"):
        return sum(values)
    if agg == "avg":
        return sum(values) / len(values)
    if agg == "count":
        return float(len(values))
    return max(values) if agg == "max" else min(values)


def _merged_minutes(tenant: Tenant, services: list[Entity], index: int, first: int, last: int
                    ) -> list[float | None]:
    """Per-minute values of one series (several services summed minute by minute)."""
    merged: list[float | None] = [None] * (last - first)
    for entity in services:
        for i, slot in enumerate(tenant.telemetry.minute_counts(entity.name, first, last)):
            if slot is not None:
                merged[i] = (merged[i] or 0) + slot[index]
    return merged


def _slots(start: int, end: int, step: int | None) -> list[tuple[int, int]]:
    """Slot [start, end) bounds; timestamps reported are the slot ENDS (reference §5)."""
    if step is None:
        return [(start, end)]
    first = start - start % step
    return [(s, s + step) for s in range(first, end, step)]


def _series_values(minutes: list[float | None], first_minute: int, slots, agg: str
                   ) -> list[float | None]:
    out = []
    for s, e in slots:
        lo = max(s // MINUTE_MS - first_minute, 0)
        hi = max(-(-e // MINUTE_MS) - first_minute, 0)
        out.append(_aggregate([v for v in minutes[lo:hi] if v is not None], agg))
    return out


def run_metric_query(tenant: Tenant, q: MetricQuery, start: int, end: int, step: int | None,
                     allowed_ids: set | None) -> dict:
    result = {"metricId": q.raw, "dataPointCountRatio": 0.0, "dimensionCountRatio": 0.0,
              "warnings": [], "data": []}
    if q.key in EMPTY_KEYS:
        result["warnings"].append(f"The metric {q.key} has no data in the requested timeframe "
                                  "(it is reported for OneAgent services only)")
        return result
    index = DATA_KEYS[q.key]
    slots = _slots(start, end, step)
    first, last = slots[0][0] // MINUTE_MS, -(-slots[-1][1] // MINUTE_MS)
    services = [e for e in tenant.services()
                if (allowed_ids is None or e.entity_id in allowed_ids)
                and (q.filter is None or q.filter({ENTITY_DIM: e.entity_id}))]
    merged = q.split == []
    groups = [(None, services)] if merged else [(e, [e]) for e in services]
    bounded = allowed_ids is not None or q.filter_ids is not None
    data = []
    for entity, members in groups:
        minutes = _merged_minutes(tenant, members, index, first, last)
        if q.fold:
            ts = [slots[-1][1]]
            values = [_aggregate([v for v in minutes if v is not None], q.fold)]
        else:
            ts = [e for _, e in slots]
            values = _series_values(minutes, first, slots, q.agg)
        has_data = any(v is not None for v in values)
        if not has_data and not (q.default_always and (merged or bounded)):
            continue  # a series exists only where data exists
        if q.default is not None and (has_data or q.default_always):
            values = [q.default if v is None else v for v in values]
        dims = [] if entity is None else [entity.entity_id]
        dim_map = {} if entity is None else {ENTITY_DIM: entity.entity_id}
        data.append({"dimensions": dims, "dimensionMap": dim_map, "timestamps": ts,
                     "values": [_number(v) for v in values]})
    if q.sort_desc is not None:
        def key(series):
            return _aggregate([v for v in series["values"] if v is not None], q.sort_agg) or 0
        data.sort(key=key, reverse=q.sort_desc)
    if q.limit:
        data = data[:q.limit]
    points = sum(len(d["values"]) for d in data)
    result.update(data=data, dataPointCountRatio=round(points / 20_000_000, 7),
                  dimensionCountRatio=round(len(data) / 100_000, 7))
    return result


def _number(v: float | None):
    """JSON numbers like the example: whole values as ints, others as floats."""
    if v is None:
        return None
    return int(v) if float(v).is_integer() else v


def query_metrics(tenant: Tenant, req: Request) -> Response:
    tenant.authorize(req, "metrics.read")
    accept = req.headers.get("accept", "application/json")
    if "json" not in accept and "*/*" not in accept:
        raise ApiError(406, f"Not acceptable: the local lab answers application/json, not {accept}")
    params = {k: v for k, v in req.query.items() if k != "api-token"}
    if not params.get("metricSelector"):
        raise bad_param("metricSelector", "metricSelector is required")
    now = tenant.telemetry.clock()
    start, end = timeframe(params, now, 2 * HOUR_MS)
    queries = parse_metric_selector(tenant, params["metricSelector"])
    for q in queries:
        if q.key not in DATA_KEYS and q.key not in EMPTY_KEYS:
            raise ApiError(404, f"Metric key {q.key} not found")
    step, resolution = parse_resolution(params.get("resolution"), start, end)
    allowed = None
    if params.get("entitySelector"):
        selector = parse_entity_selector(params["entitySelector"])
        allowed = {e.entity_id for e in tenant.services() if selector.matches(e)}
    results = [run_metric_query(tenant, q, start, end, step, allowed) for q in queries]
    return json_response({
        "totalCount": max((len(r["data"]) for r in results), default=0), "nextPageKey": None,
        "resolution": resolution, "warnings": [], "result": results})


# =============================================================================================
# GET /api/v2/problems
# =============================================================================================
def _problem_filter(tenant: Tenant, text: str) -> Callable[[Problem], bool]:
    tests: list[Callable[[Problem], bool]] = []
    try:
        for criterion in split_top(text):
            name, args = parse_call(criterion)
            values = call_values(args, require_quotes=True)
            if name == "status":
                wanted = {v.lower() for v in values}
                if not wanted <= {"open", "closed"}:
                    raise ValueError('status() takes "open" or "closed"')
                tests.append(lambda p, w=wanted: ("open" if p.open else "closed") in w)
            elif name in ("affectedEntities", "impactedEntities", "rootCauseEntity"):
                tests.append(lambda p, v=set(values): p.entity.entity_id in v)
            elif name == "affectedEntityTypes":
                tests.append(lambda p, v={x.upper() for x in values}: p.entity.type in v)
            elif name == "displayId":
                tests.append(lambda p, v=set(values): p.display_id in v)
            elif name == "problemId":
                tests.append(lambda p, v=set(values): p.problem_id in v)
            elif name == "severityLevel":
                tests.append(lambda p, v={x.upper() for x in values}: "ERROR" in v)
            elif name == "impactLevel":
                tests.append(lambda p, v={x.upper() for x in values}: "SERVICES" in v)
            elif name == "text":
                if any(len(v) > 30 for v in values):
                    raise ValueError("text() is limited to 30 characters")
                tests.append(lambda p, v=[x.lower() for x in values]: any(
                    w in p.title.lower() or w in p.entity.name.lower() for w in v))
            else:
                raise ValueError(f"the local lab does not support the criterion '{name}'")
    except ValueError as exc:
        raise bad_param("problemSelector", f"Invalid problem selector: {exc}") from None
    return lambda p: all(t(p) for t in tests)


def _evidence(tenant: Tenant, p: Problem) -> dict:
    stub = p.entity.stub()
    details = [{
        "evidenceType": "EVENT", "displayName": p.title, "entity": stub, "groupingEntity": stub,
        "rootCauseRelevant": True, "startTime": p.start, "endTime": p.end,
        "eventId": f"{p.problem_id}_log", "eventType": "ERROR_EVENT",
        "data": {"errorCount": str(p.error_count), "source": "OpenPipeline Davis event (logs)"}}]
    for e in tenant.telemetry.change_evidence(p):
        details.append({
            "evidenceType": "EVENT", "displayName": e.title, "entity": e.entity.stub(),
            "groupingEntity": e.entity.stub(), "rootCauseRelevant": True, "startTime": e.start,
            "endTime": e.end, "eventId": e.event_id, "eventType": e.event_type,
            "data": {"properties": [{"key": k, "value": v} for k, v in
                                    sorted(e.properties.items())]}})
    return {"totalCount": len(details), "details": details}


def _problem_json(tenant: Tenant, p: Problem, fields: set[str]) -> dict:
    stub = p.entity.stub()
    out = {
        "problemId": p.problem_id, "displayId": p.display_id, "title": p.title,
        "status": "OPEN" if p.open else "CLOSED", "severityLevel": "ERROR",
        "impactLevel": "SERVICES", "startTime": p.start, "endTime": p.end,
        "affectedEntities": [stub], "impactedEntities": [stub], "rootCauseEntity": stub,
        "managementZones": [], "entityTags": [],
        "problemFilters": [{"id": "c21f969b-5f03-333d-83e0-4f8f136e7682", "name": "Default"}],
        "k8s.cluster.name": ["obslab"], "k8s.namespace.name": ["default"],
    }
    if "evidenceDetails" in fields:
        out["evidenceDetails"] = _evidence(tenant, p)
    if "impactAnalysis" in fields:
        out["impactAnalysis"] = {"impacts": [{"impactType": "SERVICE", "impactedEntity": stub,
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
    keep = _problem_filter(tenant, params["problemSelector"]) \
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


def get_problem(tenant: Tenant, req: Request, problem_id: str) -> Response:
    tenant.authorize(req, "problems.read")
    for p in tenant.telemetry.problems():
        if p.problem_id == problem_id:
            return json_response(_problem_json(tenant, p, {"evidenceDetails", "impactAnalysis",
                                                           "recentComments"}))
    raise ApiError(404, f"Problem {problem_id} not found")


# =============================================================================================
# GET /api/v2/entities, POST /api/v2/apiTokens/lookup
# =============================================================================================
ENTITY_FIELDS = {"lastSeenTms", "firstSeenTms", "properties", "tags", "managementZones",
                 "toRelationships", "fromRelationships", "icon"}
# Property names for unified services are UNCONFIRMED (reference §9); these are plausible.
SERVICE_PROPERTIES = {"serviceType": "UNIFIED", "serviceTechnologyTypes": ["OpenTelemetry"],
                      "agentTechnologyType": "N/A"}


def _entity_json(e: Entity, fields: set[str]) -> dict:
    out = {"entityId": e.entity_id, "type": e.type, "displayName": e.name}
    extra = {"firstSeenTms": e.first_seen, "lastSeenTms": e.last_seen, "tags": [],
             "managementZones": [], "toRelationships": {}, "fromRelationships": {},
             "icon": {"primaryIconType": "services"}, "properties": dict(SERVICE_PROPERTIES)}
    for f in sorted(fields):
        if f.startswith("properties."):
            name = f[len("properties."):]
            if name in SERVICE_PROPERTIES:
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


def get_entity(tenant: Tenant, req: Request, entity_id: str) -> Response:
    tenant.authorize(req, "entities.read")
    entity = tenant.telemetry.entity_by_id(entity_id)
    if entity is None:
        raise ApiError(404, f"Entity {entity_id} not found")
    return json_response(_entity_json(entity, ENTITY_FIELDS))


def lookup_token(tenant: Tenant, req: Request) -> Response:
    tenant.authorize(req, None)  # any valid token may look tokens up
    try:
        body = req.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not TOKEN_RE.match(token):
        raise ApiError(400, "Constraints violated.", [violation(
            "token", "must be an API token like dt0c01.<24 characters>.<64 characters>",
            "PAYLOAD_BODY")])
    info = tenant.tokens.get(token)
    if info is None:
        raise ApiError(404, "The requested token does not exist")
    token_id = ".".join(token.split(".")[:2])
    return json_response({
        "id": token_id, "name": info.name, "enabled": True, "personalAccessToken": False,
        "owner": "workshop.user@labkit.local", "creationDate": iso_ms(info.created),
        "modifiedDate": iso_ms(info.created), "lastUsedDate": iso_ms(info.last_used),
        "lastUsedIpAddress": "127.0.0.1", "scopes": sorted(info.scopes)})


# =============================================================================================
# GET /api/v2/logs/search (classic, deprecated; kept for clients that still try it)
# =============================================================================================
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


def search_logs(tenant: Tenant, req: Request) -> Response:
    tenant.authorize(req, "logs.read")
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


# =============================================================================================
# DQL: a small, honest parser for the subset the lab uses
# =============================================================================================
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
    source: str  # logs | events | dt.davis.problems | timeseries
    start: Callable[[int], int] | None = None
    end: Callable[[int], int] | None = None
    stages: list[Stage] = field(default_factory=list)
    aggs: list[TimeseriesAgg] = field(default_factory=list)
    by: list[str] = field(default_factory=list)
    ts_filter: Callable[[dict], Any] | None = None
    interval_ns: int | None = None


SOURCES = ("logs", "events", "dt.davis.problems")
STAGES = ("filter", "filterOut", "sort", "limit", "fields", "fieldsKeep", "fieldsRemove")
SUPPORTED = ("fetch logs|events|dt.davis.problems [, from:, to:] and timeseries {..}, by:, "
             "filter:, interval:, from:, to:; then " + ", ".join(STAGES))


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
        left = self.and_expr()
        while self.tok.kind == "ident" and self.tok.value == "or":
            self.i += 1
            right = self.and_expr()
            left = (lambda a, b: lambda r: _truthy(a(r)) or _truthy(b(r)))(left, right)
        return left

    def and_expr(self):
        left = self.not_expr()
        while self.tok.kind == "ident" and self.tok.value == "and":
            self.i += 1
            right = self.not_expr()
            left = (lambda a, b: lambda r: _truthy(a(r)) and _truthy(b(r)))(left, right)
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
            return lambda r, k=tok.value: r.get(k)
        raise DqlError(f"Unexpected {tok.value!r}" if tok.kind != "eof"
                       else "Unexpected end of expression", tok.pos)

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


def _compare(op: str, a, b):
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


FUNCTIONS: dict[str, Callable] = {
    "matchesPhrase": _phrase,
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
        except ApiError:
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
    if name in ("fields", "fieldsKeep", "fieldsRemove"):
        names = [p.take("ident").value]
        while p.accept("op", ","):
            names.append(p.take("ident").value)
        p.done()
        return Stage("fieldsRemove" if name == "fieldsRemove" else "fields", {"names": names})
    raise DqlError(f"The local lab's DQL does not support the command '{name}'. "
                   f"Supported: {SUPPORTED}", command.pos)


# ----- DQL evaluation --------------------------------------------------------------------------
def _event_record(e: Event, now: int) -> dict:
    record = {
        "timestamp": iso(e.start), "_ms": e.start, "_end": e.end, "event.id": e.event_id,
        "event.type": e.event_type, "event.name": e.title, "event.kind": "DAVIS_EVENT",
        "event.provider": "EVENTS_REST_API_INGEST", "event.start": iso(e.start),
        "event.end": iso(e.end), "event.status": "ACTIVE" if e.end > now else "CLOSED",
        "dt.event.correlation_id": e.correlation_id, "affected_entity_ids": [e.entity.entity_id],
    }
    if e.entity.type == "SERVICE":
        record.update({"dt.entity.service": e.entity.entity_id,
                       "dt.entity.service.name": e.entity.name})
    for key, value in e.properties.items():
        record.setdefault(key, value)
    return record


def _problem_record(p: Problem) -> dict:
    return {
        "timestamp": iso(p.start), "_ms": p.start, "_end": p.end, "event.id": p.problem_id,
        "display_id": p.display_id, "event.name": p.title, "event.kind": "DAVIS_PROBLEM",
        "event.category": "ERROR", "event.status": "ACTIVE" if p.open else "CLOSED",
        "event.start": iso(p.start), "event.end": None if p.open else iso(p.end),
        "affected_entity_ids": [p.entity.entity_id], "affected_entity_types": ["dt.entity.service"],
        "root_cause_entity_id": p.entity.entity_id, "root_cause_entity_name": p.entity.name,
        "dt.entity.service": [p.entity.entity_id], "dt.davis.is_duplicate": False,
        "maintenance.is_under_maintenance": False, "event.description": (
            f"{p.error_count} error logs: Wasn't able to connect to redis"),
    }


def _fetch(tenant: Tenant, source: str, start: int, end: int, now: int) -> list[dict]:
    if source == "logs":
        rows = [dict(r) for r in tenant.telemetry.logs(start, end)]
        rows.reverse()  # newest first, as Grail returns logs without an explicit sort
        return rows
    if source == "events":
        return [_event_record(e, now) for e in tenant.telemetry.events() if start <= e.start < end]
    return [_problem_record(p) for p in tenant.telemetry.problems()
            if p.start < end and (p.open or p.end >= start)]


def _sort_key(value):
    # nulls last; numbers before strings so mixed columns still sort deterministically
    if value is None:
        return (2, 0)
    if isinstance(value, (int, float)):
        return (0, value)
    return (1, str(value))


def _apply_stages(rows: list[dict], stages: list[Stage]) -> list[dict]:
    for stage in stages:
        if stage.command == "filter":
            pred = stage.args["predicate"]
            rows = [r for r in rows if pred(r) is True]
        elif stage.command == "sort":
            for name, desc in reversed(stage.args["keys"]):
                key = "_ms" if name == "timestamp" and rows and "_ms" in rows[0] else name
                present = [r for r in rows if r.get(key) is not None]
                missing = [r for r in rows if r.get(key) is None]
                present.sort(key=lambda r: _sort_key(r.get(key)), reverse=desc)
                rows = present + missing
        elif stage.command == "limit":
            rows = rows[:stage.args["n"]]
        elif stage.command == "fields":
            names = stage.args["names"]
            rows = [{n: r.get(n) for n in names} for r in rows]
        elif stage.command == "fieldsRemove":
            drop = set(stage.args["names"])
            rows = [{k: v for k, v in r.items() if k not in drop} for r in rows]
    return rows


GRAIL_METRICS = {"dt.service.request.count": 0, "dt.service.request.failure_count": 1}


def _timeseries(tenant: Tenant, q: DqlQuery, start: int, end: int) -> tuple[list[dict], dict]:
    if q.interval_ns:
        step = max(q.interval_ns // 1_000_000, MINUTE_MS)
        step -= step % MINUTE_MS
    else:
        step, _ = parse_resolution("120", start, end)
    first_slot = start - start % step
    last_slot = -(-end // step) * step
    slots = [(s, s + step) for s in range(first_slot, last_slot, step)]
    first, last = first_slot // MINUTE_MS, last_slot // MINUTE_MS
    groups: dict[tuple, list[Entity]] = {}
    for e in tenant.services():
        dims = {"dt.entity.service": e.entity_id, "dt.service.name": e.name}
        if q.ts_filter and q.ts_filter(dims) is not True:
            continue
        key = tuple(dims.get(d) for d in q.by)
        groups.setdefault(key, []).append(e)
    records = []
    for key, members in groups.items():
        record: dict[str, Any] = {"timeframe": {"start": iso(first_slot), "end": iso(last_slot)},
                                  "interval": str(step * 1_000_000)}
        record.update(zip(q.by, key))
        has_data = False
        for agg in q.aggs:
            index = GRAIL_METRICS.get(agg.metric)
            if index is None:
                values = [None] * len(slots)
            else:
                minutes = _merged_minutes(tenant, members, index, first, last)
                values = [None if v is None else float(v)
                          for v in _series_values(minutes, first, slots, agg.func)]
            has_data |= any(v is not None for v in values)
            record[agg.name] = values
        if has_data:
            records.append(record)
    metrics = [{"metric.key": a.metric, "fieldName": a.name} for a in q.aggs]
    return records, {"metrics": metrics, "frame": (first_slot, last_slot)}


def _type_of(name: str, value) -> dict:
    if name == "timeframe":
        return {"type": "timeframe"}
    if name == "interval":
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
    if name in ("timestamp", "event.start", "event.end") and value is not None:
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


def execute_dql(tenant: Tenant, job: GrailJob) -> dict:
    started = time.perf_counter()
    q = job.query
    start, end = job.frame
    now = tenant.telemetry.clock()
    metadata_metrics = []
    if q.source == "timeseries":
        rows, info = _timeseries(tenant, q, start, end)
        metadata_metrics = info["metrics"]
        start, end = info["frame"]
    else:
        rows = _fetch(tenant, q.source, start, end, now)
    scanned = len(rows)
    rows = _apply_stages(rows, q.stages)
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


# =============================================================================================
# Grail endpoints
# =============================================================================================
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


def _grail_frame(q: DqlQuery, body: dict, now: int) -> tuple[int, int]:
    """The query's own from:/to:, else the body's default timeframe, else the last 2 hours."""
    def default(key: str):
        text = body.get(key)
        if not text:
            return None
        try:
            return parse_time(str(text), now, key)
        except ApiError:
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
    frame = _grail_frame(query, body, tenant.telemetry.clock())
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
    token = base64.b64encode(secrets.token_bytes(24)).decode()
    with tenant._lock:
        tenant._jobs[token] = job
    return json_response({"state": "RUNNING", "requestToken": token, "ttlSeconds": 500,
                          "progress": 0}, 202)


def _job(tenant: Tenant, token: str | None) -> GrailJob:
    if not token:
        raise PlatformError(400, "request-token is required", "INVALID_PARAMETER")
    with tenant._lock:
        job = tenant._jobs.get(token)
        gone = token in tenant._gone
    if job is None:
        if gone:
            raise PlatformError(410, "The result of this query is no longer available",
                                "RESULT_GONE")
        raise PlatformError(404, "No query with this request-token", "QUERY_NOT_FOUND")
    return job


def grail_poll(tenant: Tenant, req: Request) -> Response:
    tenant.authorize_platform(req)
    job = _job(tenant, req.query.get("request-token"))
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
    with tenant._lock:
        if job.result is None:
            job.result = execute_dql(tenant, job)
            job.expires_at = time.monotonic() + tenant.RESULT_TTL
    return json_response({"state": "SUCCEEDED", "progress": 100, "ttlSeconds": 500,
                          "result": job.result})


def grail_cancel(tenant: Tenant, req: Request) -> Response:
    tenant.authorize_platform(req)
    token = req.query.get("request-token")
    _job(tenant, token)
    with tenant._lock:
        tenant._jobs.pop(token, None)
        tenant._gone.add(token)
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


# =============================================================================================
# Routing
# =============================================================================================
CLASSIC = {
    ("POST", "/api/v2/events/ingest"): ingest_event,
    ("GET", "/api/v2/events"): list_events,
    ("GET", "/api/v2/metrics/query"): query_metrics,
    ("GET", "/api/v2/problems"): list_problems,
    ("GET", "/api/v2/entities"): list_entities,
    ("POST", "/api/v2/apiTokens/lookup"): lookup_token,
    ("GET", "/api/v2/logs/search"): search_logs,
}
GRAIL_PREFIX = "/platform/storage/query/v1/"
GRAIL = {
    ("POST", "query:execute"): grail_execute,
    ("GET", "query:poll"): grail_poll,
    ("POST", "query:cancel"): grail_cancel,
    ("POST", "query:verify"): grail_verify,
}


def app(tenant: Tenant):
    def handle(req: Request) -> Response:
        path = req.path.rstrip("/")
        try:
            if path.startswith(GRAIL_PREFIX):
                handler = GRAIL.get((req.method, path[len(GRAIL_PREFIX):]))
                if handler is None:
                    raise PlatformError(404, f"{req.method} {path} is not an endpoint of the "
                                             "local lab's query API", "NOT_FOUND")
                return handler(tenant, req)
            handler = CLASSIC.get((req.method, path))
            if handler:
                return handler(tenant, req)
            for prefix, single in (("/api/v2/problems/", get_problem),
                                   ("/api/v2/entities/", get_entity)):
                if req.method == "GET" and path.startswith(prefix):
                    return single(tenant, req, path[len(prefix):])
            raise ApiError(404, f"{req.method} {path} is not an endpoint of the local lab's "
                                "Dynatrace API")
        except (ApiError, PlatformError) as err:
            return err.response()

    return handle
