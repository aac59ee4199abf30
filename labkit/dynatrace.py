"""The Dynatrace API for the lab: change events, failed requests, problems, logs, entities, scopes.

One `Dynatrace` object holds two lazily created httpx clients: the classic Environment API v2
(`DT_URL`, `Authorization: Api-Token ...`) and the Grail query API (the platform host,
`Authorization: Bearer <DT_PLATFORM_TOKEN>`). Every call has a timeout; GETs (and other calls that
cannot create anything) are retried a bounded number of times with exponential backoff and jitter on
429 / 502 / 503 / 504, connect errors and timeouts, honouring `Retry-After`. The change-event POST is
retried only when the tenant surely did not process it (a connect error before anything was sent, or
429: rejected), never after a timeout or a 5xx, so a retry can never create a duplicate event.

Errors are mapped to labkit's hierarchy (401/403 -> Forbidden naming the scope, 404 -> NotFound,
400 -> BadInput, 429/5xx/unreachable -> Unreachable). Tokens never appear in a message, a log line
or a repr: httpx exceptions are wrapped (never chained) and server-provided text is scrubbed.

pandas is imported inside the functions that build DataFrames, so importing this module is cheap.
"""
from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable
from urllib.parse import urlsplit

import httpx

from labkit.errors import BadInput, Forbidden, LabError, LabTimeout, NotFound, Unreachable
from labkit.settings import Settings, is_loopback

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

Progress = Callable[[str, "float | None"], None]

#: Api-Token scopes labkit's reads need (FACTS.md, reference §11).
READ_SCOPES = frozenset({"events.read", "metrics.read", "problems.read", "entities.read"})
INGEST_SCOPE = "events.ingest"
#: Platform-token scopes for error logs on Grail.
GRAIL_LOG_SCOPES = ("storage:logs:read", "storage:buckets:read")

EVENT_TYPE = "CUSTOM_CONFIGURATION"
UNIFIED_KEYS = ("builtin:service.request.failure_count", "builtin:service.request.count")
ONEAGENT_KEYS = ("builtin:service.errors.total.count", "builtin:service.requestCount.total")

_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_MAX_RETRY_AFTER = 30.0  # s: never sleep longer than this on one Retry-After
_SCOPE_RE = re.compile(r"\b(?:[a-zA-Z]+(?:\.[a-zA-Z]+)*\.(?:read|write|ingest)|storage:[a-z.-]+:[a-z]+)\b")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Entity:
    """A monitored entity (here: a service) as the tenant knows it."""

    id: str
    name: str
    first_seen: datetime | None = None
    last_seen: datetime | None = None

    def seen_within(self, delta: timedelta, now: datetime | None = None) -> bool:
        now = now or datetime.now(timezone.utc)
        return self.last_seen is not None and self.last_seen >= now - delta


@dataclass
class ChangeEvent:
    """What send_change_event sent and what the tenant said about it."""

    service: str
    flag: str
    old: str | None
    new: str
    run_id: str
    sent_at: datetime
    report_count: int
    statuses: list[str] = field(default_factory=list)
    correlation_ids: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.report_count > 0 and all(s == "OK" for s in self.statuses)

    def summary(self) -> str:
        old = f"{self.old} -> " if self.old is not None else ""
        text = (f"change event for service {self.service!r}: {self.flag} {old}{self.new} "
                f"(run {self.run_id}) recorded on {self.report_count} entit"
                f"{'y' if self.report_count == 1 else 'ies'}, status {', '.join(self.statuses) or '-'}")
        return text + "".join(f"; warning: {w}" for w in self.warnings)


# --------------------------------------------------------------------------- helpers


def quote_selector_value(value: str) -> str:
    """A value for an entity/problem selector: bare when harmless, else quoted with ~ escapes.

    `cart` stays `cart` (the lab's form); `a(b),c` becomes `"a(b),c"`; `"` and `~` are escaped
    with `~`, so a name can never inject selector criteria.
    """
    if _SAFE_NAME.match(value):
        return value
    return '"' + value.replace("~", "~~").replace('"', '~"') + '"'


def _quoted(value: str) -> str:
    """Always-quoted selector value (problemSelector, eventSelector need quotes)."""
    return '"' + value.replace("~", "~~").replace('"', '~"') + '"'


def service_selector(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise BadInput("The service name is empty; name the service as Dynatrace shows it, e.g. 'cart'.")
    return f"type(SERVICE),entityName.equals({quote_selector_value(name)})"


def _dql_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _utc_ms(ms) -> datetime | None:
    try:
        ms = int(ms)
    except (TypeError, ValueError):
        return None
    if ms < 0:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _time_param(value, name: str = "since") -> str:
    """A classic API timeframe value: 'now-2h' / ISO strings pass through; datetime -> epoch ms."""
    if value is None:
        return None  # type: ignore[return-value]
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return str(int(value.timestamp() * 1000))
    if isinstance(value, timedelta):
        return str(int((datetime.now(timezone.utc) - value).timestamp() * 1000))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise BadInput(f"{name} must be like 'now-2h', an ISO time or a datetime; got {value!r}.")


_REL = re.compile(r"^now\s*-\s*(\d+)\s*(ms|s|m|h|d|w)$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _as_datetime(value) -> datetime:
    """since/until as an aware UTC datetime (for DQL and client-side filters)."""
    now = datetime.now(timezone.utc)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, timedelta):
        return now - value
    if isinstance(value, str):
        m = _REL.match(value.strip())
        if m:
            return now - timedelta(seconds=int(m.group(1)) * _UNIT_S[m.group(2)])
        if value.strip() == "now":
            return now
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
    raise BadInput(f"since must be like 'now-1h', an ISO time or a datetime; got {value!r}.")


def _dql_from(value) -> str:
    """A DQL `from:` argument: relative 'now-1h' -> now()-1h, anything else -> now()-<seconds>s."""
    if isinstance(value, str):
        m = _REL.match(value.strip())
        if m:
            return f"now()-{m.group(1)}{m.group(2)}"
    seconds = max(1, math.ceil((datetime.now(timezone.utc) - _as_datetime(value)).total_seconds()))
    return f"now()-{seconds}s"


def _as_str(value) -> str:
    """A property value as Dynatrace stores it: a string (booleans the JSON way)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else str(value)
    return str(value)


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _envelope(resp: httpx.Response) -> tuple[str, list[str]]:
    """(message, constraint violations) from a classic or platform error body, defensively."""
    try:
        body = resp.json()
    except (ValueError, UnicodeDecodeError):
        text = resp.text.strip() if resp.content else ""
        if text.startswith("<"):  # an HTML page from a proxy or login screen
            return "", []
        return text[:300], []
    if not isinstance(body, dict):
        return "", []
    err = body.get("error", body)
    if not isinstance(err, dict):
        return (str(err)[:300] if err else ""), []
    message = err.get("message") or err.get("errorMessage") or ""
    details = err.get("details")
    if isinstance(details, dict) and details.get("errorMessage") and details["errorMessage"] != message:
        message = f"{message} ({details['errorMessage']})" if message else str(details["errorMessage"])
    violations = []
    for v in err.get("constraintViolations") or []:
        if isinstance(v, dict):
            path = v.get("path") or v.get("location") or ""
            violations.append(f"{path}: {v.get('message', '')}".strip(": "))
        elif v:
            violations.append(str(v))
    return str(message)[:500], violations


def _req(what: str) -> str:
    """'to read X' -> 'the request to read X', so every message reads as a sentence."""
    return f"the request {what}" if what.startswith("to ") else what


def _json(resp: httpx.Response, what: str):
    try:
        return resp.json()
    except (ValueError, UnicodeDecodeError):
        kind = resp.headers.get("content-type", "no content type").split(";")[0]
        raise Unreachable(
            f"The tenant answered something unexpected for {_req(what)} (HTTP {resp.status_code}, {kind}, "
            "not JSON). Check that DT_URL is the Dynatrace environment address "
            "(https://<id>.live.dynatrace.com), not a proxy or login page, and try again."
        ) from None


def _dict(body, what: str) -> dict:
    if not isinstance(body, dict):
        raise Unreachable(f"The tenant answered something unexpected for {_req(what)} (a JSON "
                          f"{type(body).__name__}, not an object). Check DT_URL and try again.")
    return body


# --------------------------------------------------------------------------- the client


class Dynatrace:
    """The lab's Dynatrace tenant (or the local lab's stand-in) over HTTP.

    >>> with Dynatrace(Settings.load()) as dt:
    ...     dt.send_change_event("cart", "cartFailure", "on", old="off")
    """

    def __init__(self, settings: Settings, *, timeout: float = 10.0, retries: int = 3,
                 backoff: float = 0.5, transport: httpx.BaseTransport | None = None):
        if not settings.dt_url or not settings.api_token:
            missing = " and ".join(n for n, v in (("DT_URL", settings.dt_url),
                                                  ("DT_API_TOKEN", settings.api_token)) if not v)
            raise LabError(
                f"No Dynatrace tenant is configured ({missing} not set). Set DT_URL "
                "(https://<id>.live.dynatrace.com) and DT_API_TOKEN in the environment or .env, "
                "or run the local lab (python -m labkit sandbox, then source its lab.env)."
            )
        _check_transport_security("DT_URL", settings.dt_url)
        if settings.platform_url:
            _check_transport_security("the platform URL", settings.platform_url)
        self.settings = settings
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.backoff = max(0.0, float(backoff))
        self._transport = transport
        self._classic_client: httpx.Client | None = None
        self._grail_client: httpx.Client | None = None
        self._lock = threading.Lock()
        self._entity_cache: dict[str, tuple[float, Entity | None]] = {}
        self.entity_cache_seconds = 60.0
        self._entities_forbidden_until = 0.0
        self._secrets = [s for s in (settings.api_token, settings.platform_token) if s]

    # ---- lifecycle

    def __repr__(self) -> str:
        where = "local lab" if self.settings.local else "tenant"
        return f"Dynatrace({where} {self.settings.dt_url!r})"

    def __enter__(self) -> "Dynatrace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            for client in (self._classic_client, self._grail_client):
                if client is not None:
                    client.close()
            self._classic_client = self._grail_client = None

    def _client(self, api: str) -> httpx.Client:
        with self._lock:
            if api == "classic":
                if self._classic_client is None:
                    self._classic_client = self._make_client(
                        self.settings.dt_url, f"Api-Token {self.settings.api_token.reveal()}")
                return self._classic_client
            if self._grail_client is None:
                if not self.settings.platform_token:
                    raise Forbidden(self._platform_token_message())
                self._grail_client = self._make_client(
                    self.settings.platform_url or self.settings.dt_url,
                    f"Bearer {self.settings.platform_token.reveal()}")
            return self._grail_client

    def _make_client(self, base_url: str, authorization: str) -> httpx.Client:
        _check_transport_security("DT_URL", base_url)
        kwargs: dict[str, Any] = {}
        if self._transport is not None:
            kwargs["transport"] = self._transport
        return httpx.Client(
            base_url=base_url,
            headers={"Authorization": authorization, "Accept": "application/json",
                     "User-Agent": "labkit"},
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,
            trust_env=False,
            **kwargs,
        )

    # ---- the one request path

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            value = secret.reveal()
            text = text.replace(value, "****")
            tail = value.rsplit(".", 1)[-1]
            if len(tail) >= 16:
                text = text.replace(tail, "****")
        return text

    def _sleep_before_retry(self, attempt: int, retry_after: float | None, what: str, why: str) -> None:
        delay = self.backoff * (2 ** (attempt - 1)) * (0.5 + random.random())
        if retry_after is not None:
            delay = max(min(retry_after, _MAX_RETRY_AFTER), 0.0)
        log.info("%s: %s; retrying in %.2f s (attempt %d of %d)", what, why, delay, attempt + 1,
                 self.retries + 1)
        if delay > 0:
            time.sleep(delay)

    def _request(self, api: str, method: str, path: str, *, scope: str, what: str,
                 params: dict | None = None, body: Any = None, idempotent: bool = True,
                 timeout: float | None = None, event: bool = False) -> httpx.Response:
        """Send one call with bounded retries; returns a 2xx response or raises a LabError."""
        client = self._client(api)
        kwargs: dict[str, Any] = {}
        if params:
            kwargs["params"] = {k: v for k, v in params.items() if v is not None}
        if body is not None:
            kwargs["content"] = json.dumps(body, separators=(",", ":")).encode()
            kwargs["headers"] = {"Content-Type": "application/json; charset=utf-8"}
        if timeout is not None:
            kwargs["timeout"] = timeout
        attempt = 0
        while True:
            attempt += 1
            can_retry = attempt <= self.retries
            try:
                resp = client.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # Nothing reached the tenant: safe to retry even the event POST.
                if can_retry:
                    self._sleep_before_retry(attempt, None, what, _exc_kind(exc))
                    continue
                raise Unreachable(self._unreachable_message(what, exc, attempt, api)) from None
            except httpx.TimeoutException as exc:
                if idempotent and can_retry:
                    self._sleep_before_retry(attempt, None, what, _exc_kind(exc))
                    continue
                if event:
                    raise Unreachable(self._maybe_recorded_message(what, f"no answer within {self.timeout:g} s")) from None
                raise Unreachable(
                    f"Dynatrace did not answer {_req(what)} within {self.timeout:g} s "
                    f"(after {attempt} attempt{'s' if attempt > 1 else ''}). The tenant may be slow or "
                    "overloaded: try again in a minute, or pass a longer timeout."
                ) from None
            except httpx.HTTPError as exc:  # protocol/read/write errors: may have been processed
                if idempotent and can_retry:
                    self._sleep_before_retry(attempt, None, what, _exc_kind(exc))
                    continue
                if event:
                    raise Unreachable(self._maybe_recorded_message(what, _exc_kind(exc))) from None
                raise Unreachable(self._unreachable_message(what, exc, attempt, api)) from None
            status = resp.status_code
            if 200 <= status < 300:
                return resp
            if status in _RETRY_STATUSES and can_retry and (idempotent or status == 429):
                resp.close()
                self._sleep_before_retry(attempt, _parse_retry_after(resp.headers.get("Retry-After")),
                                         what, f"HTTP {status}")
                continue
            raise self._http_error(resp, what=what, scope=scope, api=api, attempt=attempt, event=event)

    # ---- error messages (never a token)

    def _host(self, api: str) -> str:
        url = self.settings.dt_url if api == "classic" else (self.settings.platform_url or self.settings.dt_url)
        return urlsplit(url).netloc

    def _unreachable_message(self, what: str, exc: Exception, attempts: int, api: str) -> str:
        hint = (" The local lab may have stopped: start it again and source its lab.env."
                if self.settings.local else
                " Check DT_URL, your network or proxy, and that the tenant is up.")
        return self._scrub(
            f"Could not reach Dynatrace at {self._host(api)} for {_req(what)} ({_exc_kind(exc)}, "
            f"{attempts} attempt{'s' if attempts > 1 else ''}).{hint}")

    def _maybe_recorded_message(self, what: str, why: str) -> str:
        return (
            f"Sending {what} failed ({why}): the event may or may not have been recorded. "
            "Check the service's Events (the service screen in Dynatrace, or "
            "Dynatrace.change_events()) before sending it again; don't resend blindly, "
            "or the timeline will show the change twice."
        )

    def _platform_token_message(self) -> str:
        return (
            "Reading logs needs a platform token: set DT_PLATFORM_TOKEN to a token with "
            f"{' + '.join(GRAIL_LOG_SCOPES)} (Account Management > Identity & access > Platform "
            "tokens), or use an API token with logs.read on a tenant with classic log search."
        )

    def _http_error(self, resp: httpx.Response, *, what: str, scope: str, api: str, attempt: int,
                    event: bool) -> LabError:
        status = resp.status_code
        message, violations = _envelope(resp)
        message = self._scrub(message)
        violations = [self._scrub(v) for v in violations]
        detail = f": {message}" if message else ""
        var = "DT_API_TOKEN" if api == "classic" else "DT_PLATFORM_TOKEN"
        if status == 401:
            return Forbidden(
                f"Dynatrace rejected the token (401) for {_req(what)}{detail}. Check {var}: it may be "
                f"wrong, expired or revoked, or lack the scope {scope}.")
        if status == 403:
            named = _SCOPE_RE.findall(message)
            missing = ", ".join(dict.fromkeys(named)) if named else scope
            return Forbidden(
                f"The token in {var} is not allowed {what} (403): it needs the scope {missing}"
                f"{detail}. Add the scope to the token (Access tokens) or use a token that has it.")
        if status == 404:
            return NotFound(f"Dynatrace answered 404 Not found for {_req(what)}{detail}. Check DT_URL "
                            "(the environment address, no path) and the names you asked for.")
        if status == 400 or status == 422:
            extra = "".join(f"\n  - {v}" for v in violations)
            return BadInput(f"Dynatrace refused {_req(what)} as invalid ({status}){detail}{extra}")
        if event and status >= 500:
            return Unreachable(self._maybe_recorded_message(what, f"HTTP {status}{detail}"))
        if status == 429:
            tail = (" The event was rejected, not recorded: send it again in a minute."
                    if event else " Try again in a minute.")
            return Unreachable(f"Dynatrace is throttling requests (429) for {_req(what)} after {attempt} "
                               f"attempt{'s' if attempt > 1 else ''}.{tail}")
        if status >= 500:
            return Unreachable(f"Dynatrace answered {status} for {_req(what)}{detail} after {attempt} "
                               f"attempt{'s' if attempt > 1 else ''}. The tenant has a problem: "
                               "try again in a few minutes.")
        if 300 <= status < 400:
            return LabError(f"Dynatrace redirected {_req(what)} ({status}). DT_URL must be the environment "
                            "address itself (https://<id>.live.dynatrace.com, no path).")
        return LabError(f"Dynatrace answered {status} for {_req(what)}{detail}.")

    # ---- JSON helpers

    def _get_json(self, path: str, *, scope: str, what: str, params: dict | None = None) -> dict:
        resp = self._request("classic", "GET", path, params=params, scope=scope, what=what)
        return _dict(_json(resp, what), what)

    def _paged(self, path: str, key: str, *, scope: str, what: str, params: dict,
               keep: Iterable[str] = (), max_pages: int = 100) -> list[dict]:
        """All items of a paged list: the nextPageKey is sent alone (plus `keep` params)."""
        items: list[dict] = []
        page = self._get_json(path, scope=scope, what=what, params=params)
        for _ in range(max_pages):
            got = page.get(key) or []
            items.extend(x for x in got if isinstance(x, dict))
            cursor = page.get("nextPageKey")
            if not cursor:
                return items
            next_params = {"nextPageKey": cursor}
            next_params.update({k: params[k] for k in keep if params.get(k) is not None})
            page = self._get_json(path, scope=scope, what=what, params=next_params)
        log.warning("%s: stopped after %d pages", what, max_pages)
        return items

    # ---- entities

    def find_service(self, name: str) -> Entity | None:
        """The SERVICE entity named `name` (case-insensitive, as Dynatrace matches), seen in 3 days."""
        params = {"entitySelector": service_selector(name), "from": "now-3d",
                  "fields": "+lastSeenTms,+firstSeenTms"}
        entities = self._paged("/api/v2/entities", "entities", scope="entities.read",
                               what=f"to look up the service {name!r}", params=params)
        found = [Entity(id=str(e.get("entityId", "")), name=str(e.get("displayName", name)),
                        first_seen=_utc_ms(e.get("firstSeenTms")), last_seen=_utc_ms(e.get("lastSeenTms")))
                 for e in entities if e.get("entityId")]
        if not found:
            return None
        epoch = datetime.min.replace(tzinfo=timezone.utc)
        found.sort(key=lambda e: (e.name == name, e.last_seen or epoch), reverse=True)
        return found[0]

    def _service(self, name: str) -> Entity | None:
        """find_service with a short cache (the event POST should cost one round trip)."""
        now = time.monotonic()
        hit = self._entity_cache.get(name)
        if hit and now - hit[0] < self.entity_cache_seconds and hit[1] is not None:
            return hit[1]
        entity = self.find_service(name)
        self._entity_cache[name] = (now, entity)
        return entity

    def _require_service(self, name: str) -> Entity:
        entity = self._service(name)
        if entity is None:
            raise NotFound(
                f"Dynatrace knows no service named {name!r} seen in the last 3 days. Check the name "
                "(the lab's is 'cart') and that the demo sends traces to this tenant.")
        return entity

    # ---- change events

    def send_change_event(self, service: str, flag: str, new, old=None, run_id: str | None = None,
                          title: str = "feature flag changed") -> ChangeEvent:
        """Tell Dynatrace a flag changes on `service`: the lab's CUSTOM_CONFIGURATION event.

        The body is the lab's payload (runtime_change.py) with all property values as strings, plus
        `previousValue` and `labkit.run_id`. Warnings (unknown service, not seen in 24 h, could not
        check) go to `.warnings`. Raises LabError when an entity result is not OK or when no entity
        matched; never resends after the tenant may have processed the POST.
        """
        if not isinstance(flag, str) or not flag.strip():
            raise BadInput("The flag name is empty; name the flag, e.g. 'cartFailure'.")
        if new is None or (isinstance(new, str) and not new.strip()):
            raise BadInput(f"The new value of {flag[:60]!r} is empty; name the variant, e.g. 'on'.")
        for label, value in (("flag name", flag), ("service name", service), ("new value", new), ("old value", old)):
            if isinstance(value, str) and _CONTROL.search(value):
                raise BadInput(f"The {label} {value[:60]!r} contains a line break or control character; "
                               "Dynatrace names and flag keys are one line.")
        selector = service_selector(service)
        run_id = run_id or uuid.uuid4().hex[:12]
        warnings: list[str] = []
        try:
            if self._entities_forbidden_until > time.monotonic():
                raise Forbidden("entities.read missing (remembered)")
            entity = self._service(service)
        except Forbidden:
            # the lab's own token has ingest scopes only: remember, so each send costs one POST
            self._entities_forbidden_until = time.monotonic() + self.entity_cache_seconds
            warnings.append(f"could not check that the service {service!r} exists (the token lacks "
                            "entities.read); sending the event anyway")
        except (Unreachable, LabError) as exc:
            if isinstance(exc, (BadInput,)):
                raise
            warnings.append(f"could not check the service {service!r} first ({exc}); sending anyway")
        else:
            if entity is None:
                warnings.append(f"Dynatrace knows no service named {service!r} (not seen in the last "
                                "3 days): the event will probably match no entity")
            elif not entity.seen_within(timedelta(hours=24)):
                seen = entity.last_seen.isoformat(timespec="minutes") if entity.last_seen else "never"
                warnings.append(f"the service {service!r} was last seen {seen}; the event selector "
                                "only matches entities seen in the last 24 hours")
        properties = {
            "dt.event.is_rootcause_relevant": "true",
            "action": "changed",
            "feature_flag.key": flag,
            "defaultValue": _as_str(new),
        }
        if old is not None:
            properties["previousValue"] = _as_str(old)
        properties["labkit.run_id"] = run_id
        body = {"title": title, "entitySelector": selector, "eventType": EVENT_TYPE,
                "properties": properties}
        sent_at = datetime.now(timezone.utc)
        what = f"the change event for {flag} on service {service!r}"
        resp = self._request("classic", "POST", "/api/v2/events/ingest", body=body,
                             scope=INGEST_SCOPE, what=what, idempotent=False, event=True)
        try:
            result = resp.json()
        except (ValueError, UnicodeDecodeError):
            raise Unreachable(self._maybe_recorded_message(
                what, f"HTTP {resp.status_code} with a body that is not JSON")) from None
        if not isinstance(result, dict):
            raise Unreachable(self._maybe_recorded_message(what, "an answer that is not a JSON object"))
        results = [r for r in (result.get("eventIngestResults") or []) if isinstance(r, dict)]
        statuses = [str(r.get("status", "")) for r in results]
        correlation_ids = [str(r["correlationId"]) for r in results if r.get("correlationId")]
        try:
            report_count = int(result.get("reportCount", len(results)))
        except (TypeError, ValueError):
            report_count = len(results)
        event = ChangeEvent(service=service, flag=flag, old=None if old is None else _as_str(old),
                            new=_as_str(new), run_id=run_id, sent_at=sent_at,
                            report_count=report_count, statuses=statuses,
                            correlation_ids=correlation_ids, warnings=warnings)
        bad = [s for s in statuses if s != "OK"]
        if bad:
            raise LabError(
                f"Dynatrace accepted the request but did not record {what} on every entity: status "
                f"{', '.join(bad)} (HTTP {resp.status_code}). Check the service in Dynatrace; "
                f"the lab's selector is {selector}.")
        if report_count == 0:
            self._entity_cache.pop(service, None)
            note = "".join(f" ({w})" for w in warnings)
            raise LabError(
                f"No entity matched {selector}: {what} was not recorded{note}. The service was not "
                f"seen in the last 24 hours, or its name differs (Dynatrace shows it under Services). "
                "Send some traffic (labkit shop) and try again.")
        for w in warnings:
            log.warning("%s", w)
        return event

    def change_events(self, service: str, since="now-2h") -> "pd.DataFrame":
        """CUSTOM_CONFIGURATION events on `service` since `since`, oldest first."""
        import pandas as pd

        params = {"eventSelector": f'eventType("{EVENT_TYPE}")',
                  "entitySelector": service_selector(service),
                  "from": _time_param(since), "pageSize": 1000}
        events = self._paged("/api/v2/events", "events", scope="events.read",
                             what=f"to read change events of service {service!r}", params=params)
        rows = []
        for e in events:
            props = _properties(e.get("properties"))
            rows.append((e.get("startTime"), e.get("title"), props.get("feature_flag.key"),
                         props.get("previousValue"), props.get("defaultValue"),
                         props.get("labkit.run_id"), e.get("eventId"), e.get("status")))
        columns = ["timestamp", "title", "flag", "old", "new", "run_id", "event_id", "status"]
        frame = pd.DataFrame.from_records(rows, columns=columns)
        frame["timestamp"] = pd.to_datetime(pd.to_numeric(frame["timestamp"], errors="coerce"),
                                            unit="ms", utc=True)
        return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)

    # ---- metrics

    def failed_requests(self, service: str, since="now-2h", resolution: str = "1m",
                        until=None) -> "pd.DataFrame":
        """Failed and total requests of `service` per slot, and the failure rate.

        Columns: timestamp (UTC, the END of each slot, as Dynatrace labels it), failed, requests
        (int64), failure_rate (failed / requests as a 0..1 float). Unified-service keys first
        (OTel services), the OneAgent keys when those are empty. A slot with no data point (null)
        counted nothing, so it becomes 0 for both counts; failure_rate is NaN where requests == 0
        (undefined, not 0 %).
        """
        selector = service_selector(service)
        what = f"to read failed requests of service {service!r}"
        series = None
        for keys in (UNIFIED_KEYS, ONEAGENT_KEYS):
            metric_selector = ",".join(f"{k}:splitBy():value:default(0)" for k in keys)
            params = {"metricSelector": metric_selector, "entitySelector": selector,
                      "from": _time_param(since), "to": _time_param(until, "until"),
                      "resolution": resolution}
            body = self._get_json("/api/v2/metrics/query", scope="metrics.read", what=what,
                                  params=params)
            series = _metric_series(body, keys)
            if series[0] is not None or series[1] is not None:
                break
        return _failure_frame(*series)

    # ---- problems

    def problems(self, service: str | None = None, since="now-1d", status: str | None = None) -> "pd.DataFrame":
        """Problems (optionally those affecting `service`; status 'open' or 'closed'), newest first.

        Columns: problem_id, display_id, title, status (OPEN/CLOSED), severity, start, end (NaT
        while open), affected (names joined by ', '), root_cause (name or None).
        """
        import pandas as pd

        criteria = []
        if service is not None:
            entity = self._require_service(service)
            criteria.append(f"affectedEntities({_quoted(entity.id)})")
        if status is not None:
            status = str(status).lower()
            if status not in ("open", "closed"):
                raise BadInput(f"status must be 'open' or 'closed' (or None for both); got {status!r}.")
            criteria.append(f'status("{status}")')
        params = {"problemSelector": ",".join(criteria) or None, "from": _time_param(since),
                  "pageSize": 500}
        what = "to read problems" + (f" of service {service!r}" if service else "")
        items = self._paged("/api/v2/problems", "problems", scope="problems.read", what=what,
                            params=params)
        rows = []
        for p in items:
            affected = [_stub_name(x) for x in (p.get("affectedEntities") or [])]
            root = p.get("rootCauseEntity")
            rows.append((p.get("problemId"), p.get("displayId"), p.get("title"), p.get("status"),
                         p.get("severityLevel"), p.get("startTime"), p.get("endTime"),
                         ", ".join(a for a in affected if a),
                         _stub_name(root) if isinstance(root, dict) else None))
        columns = ["problem_id", "display_id", "title", "status", "severity", "start", "end",
                   "affected", "root_cause"]
        frame = pd.DataFrame.from_records(rows, columns=columns)
        for col in ("start", "end"):
            ms = pd.to_numeric(frame[col], errors="coerce")
            frame[col] = pd.to_datetime(ms.where(ms >= 0), unit="ms", utc=True)
        return frame.sort_values("start", ascending=False, kind="stable").reset_index(drop=True)

    # ---- logs

    def dql(self, query: str, *, timeout: float = 60.0, progress: Progress | None = None,
            max_records: int | None = None) -> list[dict]:
        """Run a DQL query on Grail (platform token) and return its records."""
        what = "a Grail query"
        body: dict[str, Any] = {"query": query, "requestTimeoutMilliseconds": 2000}
        if max_records:
            body["maxResultRecords"] = int(max_records)
        scope = _grail_scope(query)
        resp = self._request("grail", "POST", "/platform/storage/query/v1/query:execute", body=body,
                             scope=scope, what=what)
        state = _dict(_json(resp, what), what)
        deadline = time.monotonic() + timeout
        polls = 0
        token = None
        while True:
            st = str(state.get("state", "")).upper()
            if st == "SUCCEEDED" or (not st and "result" in state):
                result = state.get("result") or {}
                records = result.get("records") if isinstance(result, dict) else None
                if progress:
                    progress("query finished", 1.0)
                return [r for r in (records or []) if isinstance(r, dict)]
            if st in ("FAILED", "CANCELLED", "RESULT_GONE"):
                message, _ = _envelope_from(state)
                raise LabError(f"The Grail query ended {st}{': ' + self._scrub(message) if message else ''}."
                               " Check the query; if it was RESULT_GONE, run it again.")
            token = state.get("requestToken") or token  # poll answers do not repeat it
            if st not in ("RUNNING", "NOT_STARTED") or not token:
                raise Unreachable(f"The tenant answered something unexpected for {_req(what)} "
                                  f"(state {st or 'missing'}). Try again.")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._cancel_query(token)
                raise LabTimeout(f"The Grail query did not finish within {timeout:g} s (last state "
                                 f"{st}). Narrow the timeframe or try again.")
            if progress:
                prog = state.get("progress")
                progress(f"query {st.lower()}", (float(prog) / 100) if isinstance(prog, (int, float)) else None)
            polls += 1
            if polls > 1:  # the server holds each poll up to request-timeout; pause a little anyway
                time.sleep(min(0.05 * polls, 0.5, max(remaining, 0)))
            wait_ms = int(min(2000, max(remaining, 0.05) * 1000))
            resp = self._request("grail", "GET", "/platform/storage/query/v1/query:poll",
                                 params={"request-token": token, "request-timeout-milliseconds": wait_ms},
                                 scope=scope, what=what, timeout=self.timeout + wait_ms / 1000)
            state = _dict(_json(resp, what), what)

    def _cancel_query(self, token: str) -> None:
        try:
            self._client("grail").post("/platform/storage/query/v1/query:cancel",
                                       params={"request-token": token}, timeout=2.0)
        except httpx.HTTPError:
            pass

    def error_logs(self, service: str, since="now-1h", limit: int = 100) -> "pd.DataFrame":
        """ERROR logs of `service`, newest first: Grail DQL with the platform token, else the
        classic log search with the API token, else Forbidden naming the token needed.

        Columns: timestamp (UTC), loglevel, status, content, trace_id, span_id, service.
        """
        limit = max(1, min(int(limit), 10000))
        query = (f"fetch logs, from: {_dql_from(since)} | filter service.name == {_dql_string(service)}"
                 f' and loglevel == "ERROR" | sort timestamp desc | limit {limit}')
        classic_query = f'status="ERROR" AND service.name="{service.replace(chr(34), "")}"'
        return self._logs(query, classic_query, since=since, limit=limit, newest_first=True,
                          keep=lambda r: r["service"] in (None, service) and
                          (r["loglevel"] or r["status"] or "ERROR").upper() == "ERROR")

    def logs_for_trace(self, trace_id: str, since="now-1d", limit: int = 1000) -> "pd.DataFrame":
        """All logs carrying `trace_id`, oldest first (the story of one failed request)."""
        if not isinstance(trace_id, str) or not re.fullmatch(r"[0-9a-fA-F]{16,32}", trace_id):
            raise BadInput(f"{trace_id!r} is not a trace id (32 hex digits, as in a log's trace_id).")
        query = (f"fetch logs, from: {_dql_from(since)} | filter trace_id == {_dql_string(trace_id)}"
                 f" | sort timestamp asc | limit {int(limit)}")
        classic_query = f'trace_id="{trace_id}"'
        return self._logs(query, classic_query, since=since, limit=limit, newest_first=False,
                          keep=lambda r: r["trace_id"] in (None, trace_id))

    def _logs(self, query: str, classic_query: str, *, since, limit: int, newest_first: bool,
              keep: Callable[[dict], bool]) -> "pd.DataFrame":
        grail_problem: LabError | None = None
        rows: list[dict] | None = None
        if self.settings.platform_token:
            try:
                rows = [_grail_log_row(r) for r in self.dql(query, max_records=limit)]
            except (Forbidden, NotFound) as exc:
                grail_problem = exc
        if rows is None:
            try:
                rows = self._classic_logs(classic_query, since, limit)
            except (Forbidden, NotFound):
                why = f" (Grail said: {grail_problem})" if grail_problem else ""
                raise Forbidden(self._platform_token_message() + why) from None
        rows = [r for r in rows if keep(r)]
        return _log_frame(rows, newest_first)

    def _classic_logs(self, query: str, since, limit: int) -> list[dict]:
        params = {"query": query, "from": _time_param(since), "limit": min(limit, 1000),
                  "sort": "-timestamp"}
        body = self._get_json("/api/v2/logs/search", scope="logs.read", what="to search logs",
                              params=params)
        return [_classic_log_row(r) for r in (body.get("results") or []) if isinstance(r, dict)]

    # ---- tokens

    def token_scopes(self) -> set[str]:
        """The scopes of DT_API_TOKEN, from POST /api/v2/apiTokens/lookup."""
        what = "to look up the API token's scopes"
        try:
            resp = self._request("classic", "POST", "/api/v2/apiTokens/lookup",
                                 body={"token": self.settings.api_token.reveal()},
                                 scope="any scope", what=what)
        except NotFound:
            raise NotFound("Dynatrace does not know the token in DT_API_TOKEN (404 on lookup). "
                           "Copy the token again from Access tokens.") from None
        body = _dict(_json(resp, what), what)
        scopes = body.get("scopes") or []
        if body.get("enabled") is False:
            log.warning("the token in DT_API_TOKEN is disabled")
        return {str(s) for s in scopes}

    def missing_scopes(self, required: Iterable[str] = READ_SCOPES) -> set[str]:
        """Which of `required` the API token lacks (empty set: all there)."""
        return set(required) - self.token_scopes()

    # ---- waiting

    def wait_for_error_logs(self, service: str, since: datetime, timeout: float = 300.0,
                            progress: Progress | None = None, limit: int = 100) -> "pd.DataFrame":
        """Poll error_logs until some at or after `since` show up; LabTimeout after `timeout` s."""
        since = _as_datetime(since)

        def check():
            frame = self.error_logs(service, since=since, limit=limit)
            return frame[frame["timestamp"] >= since].reset_index(drop=True)

        return self._poll(check, timeout, progress,
                          f"error logs of service {service!r}",
                          f"No error logs from service {service!r} reached Dynatrace within {timeout:g} s "
                          "after the change. Check that the flag is on (labkit flags), that traffic "
                          "exercises the cart (labkit shop) and that logs are shipped.")

    def wait_for_problem(self, service: str, since: datetime, timeout: float = 600.0,
                         progress: Progress | None = None) -> "pd.DataFrame":
        """Poll problems until one affecting `service` has started at/after `since` or is open."""
        since = _as_datetime(since)

        def check():
            frame = self.problems(service, since=since - timedelta(minutes=5))
            fresh = (frame["start"] >= since) | (frame["status"].astype("string").str.upper() == "OPEN")
            return frame[fresh.fillna(False)].reset_index(drop=True)

        return self._poll(check, timeout, progress, f"a problem on service {service!r}",
                          f"No problem on service {service!r} opened within {timeout:g} s. Davis needs "
                          "several error logs in a few minutes: keep traffic running (labkit shop), "
                          "check the error logs arrived (labkit logs), and wait a little longer.")

    def _poll(self, check: Callable[[], "pd.DataFrame"], timeout: float, progress: Progress | None,
              what: str, timeout_message: str) -> "pd.DataFrame":
        start = time.monotonic()
        deadline = start + max(0.0, timeout)
        delay = 0.5
        polls = 0
        while True:
            polls += 1
            frame = check()
            elapsed = time.monotonic() - start
            if len(frame):
                if progress:
                    progress(f"found {len(frame)} {what}", 1.0)
                return frame
            if progress:
                progress(f"waiting for {what} ({elapsed:.0f} s of {timeout:g} s)",
                         min(1.0, elapsed / timeout) if timeout else None)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LabTimeout(timeout_message)
            time.sleep(min(delay, remaining))
            delay = min(delay * 1.6, 10.0)


# --------------------------------------------------------------------------- module helpers


def _check_transport_security(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(parts.hostname)):
        raise BadInput(f"{name} {parts.scheme}://{parts.hostname} is not https; labkit sends tokens "
                       "only over https (plain http only to loopback, the local lab).")


def _exc_kind(exc: Exception) -> str:
    names = {
        httpx.ConnectError: "connection refused or host not found",
        httpx.ConnectTimeout: "connect timeout",
        httpx.ReadTimeout: "read timeout",
        httpx.WriteTimeout: "write timeout",
        httpx.PoolTimeout: "no free connection",
        httpx.RemoteProtocolError: "the connection broke off",
        httpx.ReadError: "read error",
        httpx.WriteError: "write error",
    }
    for cls, text in names.items():
        if type(exc) is cls:
            return text
    return type(exc).__name__


def _envelope_from(state: dict) -> tuple[str, list]:
    err = state.get("error")
    if isinstance(err, dict):
        msg = err.get("message") or ""
        details = err.get("details")
        if isinstance(details, dict) and details.get("errorMessage"):
            msg = f"{msg} ({details['errorMessage']})" if msg else str(details["errorMessage"])
        return str(msg), []
    return "", []


def _grail_scope(query: str) -> str:
    q = query.lstrip().lower()
    if q.startswith("fetch logs"):
        return "storage:logs:read and storage:buckets:read"
    if q.startswith("timeseries"):
        return "storage:metrics:read"
    if q.startswith("fetch events") or q.startswith("fetch dt.davis"):
        return "storage:events:read and storage:buckets:read"
    return "storage:buckets:read"


def _properties(value) -> dict[str, str]:
    """Event properties as a dict: the API gives [{key, value}], tolerate a plain object too."""
    if isinstance(value, dict):
        return {str(k): (None if v is None else str(v)) for k, v in value.items()}
    out: dict[str, str] = {}
    for p in value or []:
        if isinstance(p, dict) and "key" in p:
            v = p.get("value")
            out[str(p["key"])] = None if v is None else str(v)
    return out


def _stub_name(stub) -> str | None:
    if not isinstance(stub, dict):
        return None
    name = stub.get("name")
    if name:
        return str(name)
    ent = stub.get("entityId")
    return str(ent.get("id")) if isinstance(ent, dict) and ent.get("id") else None


def _metric_series(body: dict, keys: tuple[str, str]):
    """((timestamps, values) | None, (timestamps, values) | None) for the failure and request keys."""
    import numpy as np

    found: list = [None, None]
    results = [r for r in (body.get("result") or []) if isinstance(r, dict)]
    for i, r in enumerate(results):
        metric_id = str(r.get("metricId", ""))
        idx = next((j for j, k in enumerate(keys) if metric_id.startswith(k + ":") or metric_id == k), None)
        if idx is None:
            idx = i if i < 2 else None
        if idx is None or found[idx] is not None:
            continue
        ts_parts, val_parts = [], []
        for d in r.get("data") or []:
            if not isinstance(d, dict):
                continue
            ts = d.get("timestamps") or []
            vals = d.get("values") or []
            n = min(len(ts), len(vals))
            if n:
                ts_parts.append(np.asarray(ts[:n], dtype="int64"))
                val_parts.append(np.asarray(vals[:n], dtype="float64"))  # None -> NaN
        if ts_parts:
            ts = np.concatenate(ts_parts)
            vals = np.concatenate(val_parts)
            if len(ts_parts) > 1:  # several series (remainder etc.): sum per timestamp
                uniq, inv = np.unique(ts, return_inverse=True)
                summed = np.zeros(len(uniq))
                np.add.at(summed, inv, np.nan_to_num(vals))
                ts, vals = uniq, summed
            found[idx] = (ts, vals)
    return found[0], found[1]


def _failure_frame(failed, requests) -> "pd.DataFrame":
    import numpy as np
    import pandas as pd

    parts = [p[0] for p in (failed, requests) if p is not None]
    if parts:
        ts = np.unique(np.concatenate(parts))
    else:
        ts = np.array([], dtype="int64")

    def aligned(series):
        out = np.zeros(len(ts))
        if series is not None and len(ts):
            pos = np.searchsorted(ts, series[0])
            out[pos] = np.nan_to_num(series[1], nan=0.0)
        return np.rint(out).astype("int64")

    f = aligned(failed)
    r = aligned(requests)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(r > 0, f / np.where(r > 0, r, 1), np.nan)
    return pd.DataFrame({
        "timestamp": pd.to_datetime(ts, unit="ms", utc=True),
        "failed": f,
        "requests": r,
        "failure_rate": rate.astype("float64"),
    })


def _first(value):
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _grail_log_row(rec: dict) -> dict:
    return {
        "timestamp": rec.get("timestamp"),
        "loglevel": _first(rec.get("loglevel")),
        "status": _first(rec.get("status")),
        "content": rec.get("content"),
        "trace_id": _first(rec.get("trace_id") or rec.get("trace.id")),
        "span_id": _first(rec.get("span_id") or rec.get("span.id")),
        "service": _first(rec.get("service.name") or rec.get("dt.entity.service.name")),
    }


def _classic_log_row(rec: dict) -> dict:
    cols = rec.get("additionalColumns") if isinstance(rec.get("additionalColumns"), dict) else {}
    col = lambda k: _first(cols.get(k))  # noqa: E731
    return {
        "timestamp": rec.get("timestamp"),
        "loglevel": col("loglevel"),
        "status": rec.get("status"),
        "content": rec.get("content"),
        "trace_id": col("trace_id") or col("trace.id"),
        "span_id": col("span_id") or col("span.id"),
        "service": col("service.name"),
    }


def _one_utc(value):
    import pandas as pd

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return pd.NaT
    if isinstance(value, (int, float)) or (isinstance(value, str) and value.strip().isdigit()):
        return pd.Timestamp(int(value), unit="ms", tz="UTC")
    try:
        ts = pd.Timestamp(str(value))
    except (ValueError, TypeError):
        return pd.NaT
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _log_frame(rows: list[dict], newest_first: bool) -> "pd.DataFrame":
    import pandas as pd

    columns = ["timestamp", "loglevel", "status", "content", "trace_id", "span_id", "service"]
    frame = pd.DataFrame.from_records(rows, columns=columns)
    frame["timestamp"] = pd.to_datetime([_one_utc(v) for v in frame["timestamp"]], utc=True)
    return frame.sort_values("timestamp", ascending=not newest_first, kind="stable").reset_index(drop=True)
