"""The one request path to Dynatrace: which token each call uses, retries, scrubbing, labkit errors.

Two lazily created httpx clients: the API token's (`DT_URL`, `Authorization: Api-Token ...`) and the
platform token's (the apps host, `Authorization: Bearer <DT_PLATFORM_TOKEN>`). Grail always takes
the platform token. A classic call (`/api/v2/...`) takes the API token when it has the call's scope,
else the platform token on `/platform/classic/environment-api/v2/...` with the matching platform
scope, so a platform token alone runs the whole lab (fidelity.md). Every call has a timeout; GETs
(and other calls that cannot create anything) are retried a bounded number of times with exponential
backoff and jitter on 429 / 502 / 503 / 504, connect errors and timeouts, honouring `Retry-After`
(or a platform body's `retryAfterSeconds`). The change-event POST is retried only when the tenant
surely did not process it (a connect error before anything was sent, or 429: rejected), never after
a timeout or a 5xx, so a retry can never create a duplicate event.

Errors are mapped to labkit's hierarchy (401/403 -> Forbidden naming the token and the scope, from
`details.missingScopes` when the body says it; 404 -> NotFound, 400 -> BadInput, 410 -> ResultGone,
429/5xx/unreachable -> Unreachable). Tokens never appear in a message, a log line or a repr: httpx
exceptions are wrapped (never chained) and server-provided text is scrubbed.
"""
from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import httpx

from labkit.errors import BadInput, Forbidden, LabError, NotFound, Unreachable
from labkit.settings import Settings, is_loopback

log = logging.getLogger(__name__)

#: Platform-token scopes for error logs on Grail.
GRAIL_LOG_SCOPES = ("storage:logs:read", "storage:buckets:read")
#: Where a platform token reaches the classic Environment API v2, and the scopes it needs there.
PLATFORM_CLASSIC = "/platform/classic/environment-api/v2"
# (dynatrace-answers.md §1, the SDK's "Required scope" per method.) Event ingest takes any one of
# openpipeline:events.davis:ingest, storage:events:write, environment-api:events:write: labkit asks
# for storage:events:write, the one known to work on platform tokens. Classic log search on a Grail
# tenant takes storage:logs:read and storage:buckets:read.
PLATFORM_SCOPES = {"events.ingest": "storage:events:write",
                   "events.read": "environment-api:events:read",
                   "metrics.read": "environment-api:metrics:read",
                   "problems.read": "environment-api:problems:read",
                   "entities.read": "environment-api:entities:read",
                   "logs.read": "storage:logs:read and storage:buckets:read",
                   # Settings 2.0 objects (the OpenPipeline pipelines and routing; tenant-setup.md)
                   "settings.read": "settings:objects:read", "settings.write": "settings:objects:write"}
_API, _PLATFORM = "DT_API_TOKEN", "DT_PLATFORM_TOKEN"

_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_MAX_RETRY_AFTER = 30.0  # s: never sleep longer than this on one Retry-After
# Nothing reached the tenant on these: safe to retry even the event POST.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_SCOPE_RE = re.compile(r"\b(?:[a-zA-Z]+(?:\.[a-zA-Z]+)*\.(?:read|write|ingest)|"
                       r"(?:storage|environment-api):[a-z.-]+:[a-z]+)\b")
_USE_ONE_OF = re.compile(r"Use one of:\s*\[?([^\]]+)\]?")
_EXC_KINDS = {
    httpx.ConnectError: "connection refused or host not found",
    httpx.ConnectTimeout: "connect timeout",
    httpx.ReadTimeout: "read timeout",
    httpx.WriteTimeout: "write timeout",
    httpx.PoolTimeout: "no free connection",
    httpx.RemoteProtocolError: "the connection broke off",
    httpx.ReadError: "read error",
    httpx.WriteError: "write error",
}


class ResultGone(LabError):
    """410: a Grail result the tenant no longer keeps (run the query again)."""


class Conflict(LabError):
    """409: the object changed since it was read (a stale updateToken or document version), or
    one with that id exists already; the caller re-reads, never overwrites."""


@dataclass(frozen=True)
class Route:
    """Where one call goes: the client ("api" or "platform"), the path, the scope, the variable."""

    client: str
    path: str
    scope: str
    var: str


class Http:
    """The lab's two Dynatrace clients and the one way every call goes through them."""

    def __init__(self, settings: Settings, *, timeout: float, retries: int, backoff: float,
                 transport: httpx.BaseTransport | None = None):
        check_settings(settings)
        self.settings = settings
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.backoff = max(0.0, float(backoff))
        self._transport = transport
        self._clients: dict[str, httpx.Client] = {}
        self._lock = threading.Lock()
        self._secrets = [s for s in (settings.api_token, settings.platform_token) if s]
        self.api_scopes: set[str] | None = None  # the API token's, once looked up
        self._looked_up = False

    # ---- clients and which token a call takes

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def client(self, api: str) -> httpx.Client:
        """The client of the API token ("api", "classic") or the platform token ("platform",
        "grail"), created on first use."""
        key = "api" if api in ("api", "classic") else "platform"
        with self._lock:
            if key not in self._clients:
                self._clients[key] = self._make_client(*self._base_and_auth(key))
            return self._clients[key]

    def _base_and_auth(self, key: str) -> tuple[str, str]:
        s = self.settings
        if key == "api":
            return s.dt_url, f"Api-Token {s.api_token.reveal()}"
        if not s.platform_token:
            raise Forbidden(platform_token_message())
        return s.platform_url or s.dt_url, f"Bearer {s.platform_token.reveal()}"

    def _make_client(self, base_url: str, authorization: str) -> httpx.Client:
        check_transport_security("DT_URL", base_url)
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

    def route(self, api: str, path: str, scope: str) -> Route:
        """"grail" and "platform" (Documents): the platform token; "api-token": the API token;
        "classic": the API token when it holds `scope` (or its scopes are unknown), else the
        platform token on the platform's path for the classic API."""
        if api in ("grail", "platform"):
            return Route("platform", path, scope, _PLATFORM)
        if api == "classic" and self.uses_platform(scope):
            return Route("platform", PLATFORM_CLASSIC + path.removeprefix("/api/v2"),
                         PLATFORM_SCOPES.get(scope, scope), _PLATFORM)
        return Route("api", path, scope, _API)

    def uses_platform(self, scope: str) -> bool:
        """True when a classic call needing `scope` goes with the platform token."""
        s = self.settings
        if not s.api_token:
            return True
        if not s.platform_token or scope not in PLATFORM_SCOPES:
            return False
        if not self._looked_up:
            self._looked_up = True
            try:
                self.api_scopes = self.lookup_api_scopes()
            except LabError as exc:  # unknown: the API token it is, its own error will say why
                log.info("could not look up the API token's scopes: %s", exc)
        return self.api_scopes is not None and scope not in self.api_scopes

    def lookup_api_scopes(self) -> set[str]:
        """The API token's scopes (POST /api/v2/apiTokens/lookup), remembered for routing."""
        what = "to look up the API token's scopes"
        try:
            resp = self.request("api-token", "POST", "/api/v2/apiTokens/lookup",
                                body={"token": self.settings.api_token.reveal()},
                                scope="any scope", what=what)
        except NotFound:
            raise NotFound("Dynatrace does not know the token in DT_API_TOKEN (404 on lookup). "
                           "Copy the token again from Access tokens.") from None
        body = json_object(resp, what)
        if body.get("enabled") is False:
            log.warning("the token in DT_API_TOKEN is disabled")
        self.api_scopes = {str(x) for x in body.get("scopes") or []}
        self._looked_up = True
        return set(self.api_scopes)

    # ---- the request path

    def request(self, api: str, method: str, path: str, *, scope: str, what: str,
                params: dict | None = None, body: Any = None, idempotent: bool = True,
                timeout: float | None = None, event: bool = False,
                form: dict | None = None, files: dict | None = None) -> httpx.Response:
        """Send one call with bounded retries; returns a 2xx response or raises a LabError.
        `form` and `files` send multipart/form-data (the Documents API) instead of a JSON body."""
        to = self.route(api, path, scope)
        client = self.client(to.client)
        kwargs = _request_kwargs(params, body, timeout)
        if form is not None or files is not None:
            kwargs.update(data=form, files=files)
        attempt = 0
        while True:
            attempt += 1
            can_retry = attempt <= self.retries
            try:
                resp = client.request(method, to.path, **kwargs)
            except httpx.HTTPError as exc:
                if can_retry and (idempotent or isinstance(exc, _NOT_SENT)):
                    self._pause(attempt, None, what, exc_kind(exc))
                    continue
                raise self._transport_error(exc, what=what, to=to, attempt=attempt, event=event) from None
            status = resp.status_code
            if 200 <= status < 300:
                return resp
            if status in _RETRY_STATUSES and can_retry and (idempotent or status == 429):
                wait = parse_retry_after(resp.headers.get("Retry-After"))
                wait = error_body(resp).retry_after if wait is None else wait
                resp.close()
                self._pause(attempt, wait, what, f"HTTP {status}")
                continue
            raise self._http_error(resp, what=what, to=to, attempt=attempt, event=event)

    def _pause(self, attempt: int, retry_after: float | None, what: str, why: str) -> None:
        """Sleep before attempt `attempt + 1`: Retry-After when given, else backoff with jitter."""
        delay = self.backoff * (2 ** (attempt - 1)) * (0.5 + random.random())
        if retry_after is not None:
            delay = max(min(retry_after, _MAX_RETRY_AFTER), 0.0)
        log.info("%s: %s; retrying in %.2f s (attempt %d of %d)", what, why, delay, attempt + 1,
                 self.retries + 1)
        if delay > 0:
            time.sleep(delay)

    # ---- errors (never a token)

    def scrub(self, text: str) -> str:
        """`text` with every token (and the secret part of a dt0c01 token) masked."""
        for secret in self._secrets:
            value = secret.reveal()
            text = text.replace(value, "****")
            tail = value.rsplit(".", 1)[-1]
            if len(tail) >= 16:
                text = text.replace(tail, "****")
        return text

    def _transport_error(self, exc: httpx.HTTPError, *, what: str, to: Route, attempt: int,
                         event: bool) -> Unreachable:
        if isinstance(exc, _NOT_SENT):
            return Unreachable(self._unreachable_message(what, exc, attempt, to))
        if isinstance(exc, httpx.TimeoutException):
            if event:
                return Unreachable(maybe_recorded_message(what, f"no answer within {self.timeout:g} s"))
            return Unreachable(
                f"Dynatrace did not answer {req(what)} within {self.timeout:g} s "
                f"(after {attempt} attempt{'s' if attempt > 1 else ''}). The tenant may be slow or "
                "overloaded: try again in a minute, or pass a longer timeout.")
        # protocol/read/write errors: the call may have been processed
        if event:
            return Unreachable(maybe_recorded_message(what, exc_kind(exc)))
        return Unreachable(self._unreachable_message(what, exc, attempt, to))

    def _host(self, to: Route) -> str:
        url = self.settings.dt_url if to.client == "api" else (self.settings.platform_url or self.settings.dt_url)
        return urlsplit(url).netloc

    def _unreachable_message(self, what: str, exc: Exception, attempts: int, to: Route) -> str:
        hint = (" The local lab may have stopped: start it again and source its lab.env."
                if self.settings.local else
                " Check DT_URL, your network or proxy, and that the tenant is up.")
        return self.scrub(
            f"Could not reach Dynatrace at {self._host(to)} for {req(what)} ({exc_kind(exc)}, "
            f"{attempts} attempt{'s' if attempts > 1 else ''}).{hint}")

    def _http_error(self, resp: httpx.Response, *, what: str, to: Route, attempt: int,
                    event: bool) -> LabError:
        status = resp.status_code
        err = error_body(resp)
        message = self.scrub(err.message)
        detail = f": {message}" if message else ""
        if status == 403 and err.error_type == "NOT_AUTHORIZED_FOR_TABLE":
            return _table_error(err, what, to)
        if status in (401, 403):
            return _token_error(status, message, detail, what=what, to=to, missing=err.missing)
        if status == 404:
            return NotFound(f"Dynatrace answered 404 Not found for {req(what)}{detail}. Check DT_URL "
                            "(the environment address, no path) and the names you asked for.")
        if status == 400 or status == 422:
            extra = "".join(f"\n  - {self.scrub(v)}" for v in err.violations)
            return BadInput(f"Dynatrace refused {req(what)} as invalid ({status}){detail}{extra}")
        if status == 409:
            return Conflict(f"Dynatrace refused {req(what)} as a conflict (409){detail}.")
        if status == 410:
            return ResultGone(f"Dynatrace no longer keeps the result of {what} (410){detail}.")
        return _server_error(status, detail, what=what, attempt=attempt, event=event,
                             retry_after=err.retry_after)


def _request_kwargs(params: dict | None, body: Any, timeout: float | None) -> dict[str, Any]:
    """httpx arguments: params without the Nones, a compact UTF-8 JSON body, a per-call timeout."""
    kwargs: dict[str, Any] = {}
    if params:
        kwargs["params"] = {k: v for k, v in params.items() if v is not None}
    if body is not None:
        kwargs["content"] = json.dumps(body, separators=(",", ":")).encode()
        kwargs["headers"] = {"Content-Type": "application/json; charset=utf-8"}
    if timeout is not None:
        kwargs["timeout"] = timeout
    return kwargs


_WHERE = {_API: "Access tokens (API tokens)",
          _PLATFORM: "Account Management > Identity & access > Platform tokens"}


def scopes_in_message(message: str) -> list[str]:
    """The scopes a 403 message names (dynatrace-answers.md §2): "Use one of: [a, b]" or "Use one
    of: a (Display name)", the display names dropped; else scope-shaped words anywhere in it."""
    m = _USE_ONE_OF.search(message)
    if m:
        named = [re.sub(r"\s*\(.*?\)\s*$", "", part).strip() for part in m.group(1).split(",")]
        return [n for n in named if n]
    return _SCOPE_RE.findall(message)


def _table_error(err: "ErrorBody", what: str, to: Route) -> Forbidden:
    """403 NOT_AUTHORIZED_FOR_TABLE: the query reads a Grail table the token (or its user) may not."""
    table = err.arguments[0] if err.arguments else "of this query"
    exc = Forbidden(
        f"The token in {to.var} may not read the Grail table {table} ({req(what)}: 403 "
        f"NOT_AUTHORIZED_FOR_TABLE). It needs {to.scope}, and its user a policy that allows the "
        f"table. Add the scopes to the token ({_WHERE[to.var]}) or ask an admin for the policy.")
    exc.missing_scopes = [s.strip() for s in to.scope.split(" and ")]
    exc.variable = to.var
    exc.status = 403  # not allowed (as _token_error's 403): a shared tenant's scoping falls back on it
    return exc


def _token_error(status: int, message: str, detail: str, *, what: str, to: Route,
                 missing: list[str]) -> Forbidden:
    """401/403 naming the variable and the scopes: the body's missingScopes, else scope names in
    its message, else the scope of the endpoint."""
    named = missing or scopes_in_message(message)
    scopes = list(dict.fromkeys(named)) or [to.scope]
    expired = (" (a platform token that has expired is refused with 403 too: check its expiry date)"
               if to.var == _PLATFORM and not named else "")
    if status == 401:
        exc = Forbidden(
            f"Dynatrace rejected the token (401) for {req(what)}{detail}. Check {to.var}: it may be "
            f"wrong, expired or revoked, or lack the scope {', '.join(scopes)}.")
    else:
        exc = Forbidden(
            f"The token in {to.var} is not allowed {what} (403): it needs the scope "
            f"{', '.join(scopes)}{detail}. Add the scope to the token ({_WHERE[to.var]}) or use "
            f"a token that has it{expired}.")
    exc.missing_scopes = scopes  # for the preflight
    exc.variable = to.var
    exc.status = status  # 401: the token itself is wrong; 403: it lacks a scope
    return exc


def _server_error(status: int, detail: str, *, what: str, attempt: int, event: bool,
                  retry_after: float | None = None) -> LabError:
    """429, 5xx, redirects and anything else that is no 2xx."""
    attempts = f"{attempt} attempt{'s' if attempt > 1 else ''}"
    if event and status >= 500:
        return Unreachable(maybe_recorded_message(what, f"HTTP {status}{detail}"))
    if status == 429:
        wait = f"in {retry_after:g} s (as the tenant asks)" if retry_after else "in a minute"
        tail = (f" The event was rejected, not recorded: send it again {wait}."
                if event else f" Try again {wait}.")
        return Unreachable(f"Dynatrace is throttling requests (429) for {req(what)} after {attempts}.{tail}")
    if status >= 500:
        return Unreachable(f"Dynatrace answered {status} for {req(what)}{detail} after {attempts}. "
                           "The tenant has a problem: try again in a few minutes.")
    if 300 <= status < 400:
        return LabError(f"Dynatrace redirected {req(what)} ({status}). DT_URL must be the environment "
                        "address itself (https://<id>.live.dynatrace.com, no path).")
    return LabError(f"Dynatrace answered {status} for {req(what)}{detail}.")


# --------------------------------------------------------------------------- messages and bodies


def req(what: str) -> str:
    """'to read X' -> 'the request to read X', so every message reads as a sentence."""
    return f"the request {what}" if what.startswith("to ") else what


def maybe_recorded_message(what: str, why: str) -> str:
    return (
        f"Sending {what} failed ({why}): the event may or may not have been recorded. "
        "Check the service's Events (the service screen in Dynatrace, or "
        "Dynatrace.change_events()) before sending it again; don't resend blindly, "
        "or the timeline will show the change twice."
    )


def platform_token_message() -> str:
    return (
        "Reading logs needs a platform token: set DT_PLATFORM_TOKEN to a token with "
        f"{' + '.join(GRAIL_LOG_SCOPES)} (Account Management > Identity & access > Platform "
        "tokens). Tenants that keep logs in Grail refuse log search with an API token; only a "
        "tenant with classic log storage reads them with an API token's logs.read."
    )


def exc_kind(exc: Exception) -> str:
    """An httpx exception in words (never its text, which may carry a URL or header)."""
    return _EXC_KINDS.get(type(exc), type(exc).__name__)


def json_object(resp: httpx.Response, what: str) -> dict:
    """The JSON object of a 2xx answer, or Unreachable saying what came instead."""
    try:
        body = resp.json()
    except (ValueError, UnicodeDecodeError):
        kind = resp.headers.get("content-type", "no content type").split(";")[0]
        raise Unreachable(
            f"The tenant answered something unexpected for {req(what)} (HTTP {resp.status_code}, {kind}, "
            "not JSON). Check that DT_URL is the Dynatrace environment address "
            "(https://<id>.live.dynatrace.com), not a proxy or login page, and try again."
        ) from None
    if not isinstance(body, dict):
        raise Unreachable(f"The tenant answered something unexpected for {req(what)} (a JSON "
                          f"{type(body).__name__}, not an object). Check DT_URL and try again.")
    return body


@dataclass
class ErrorBody:
    """What an error answer says: its message, constraint violations, the scopes it names as
    missing (platform `details.missingScopes` / `missingPermissions`) and `retryAfterSeconds`."""

    message: str = ""
    violations: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    retry_after: float | None = None
    error_type: str = ""  # details.errorType, e.g. NOT_AUTHORIZED_FOR_TABLE
    arguments: list[str] = field(default_factory=list)  # details.arguments (the table's name)


def error_body(resp: httpx.Response) -> ErrorBody:
    """The ErrorBody of an answer: its envelope, or its text (capped) if not JSON."""
    try:
        body = resp.json()
    except (ValueError, UnicodeDecodeError):
        text = resp.text.strip() if resp.content else ""
        # '<': an HTML page from a proxy or login screen, nothing to quote
        return ErrorBody("" if text.startswith("<") else text[:300])
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]  # a Settings POST's refusal: one SettingsObjectResponse per object sent
    message, violations = error_envelope(body)
    err = body.get("error", body) if isinstance(body, dict) else None
    err = err if isinstance(err, dict) else {}
    details = err.get("details") if isinstance(err.get("details"), dict) else {}
    missing = [str(x) for key in ("missingScopes", "missingPermissions")
               for x in (details.get(key) or []) if isinstance(details.get(key), list)]
    retry = err.get("retryAfterSeconds", details.get("retryAfterSeconds"))
    retry_after = float(retry) if isinstance(retry, (int, float)) and not isinstance(retry, bool) \
        and retry >= 0 else None
    kind = str(details.get("errorType") or "")
    if not kind and err.get("message") == "NOT_AUTHORIZED_FOR_TABLE":
        kind = "NOT_AUTHORIZED_FOR_TABLE"
    arguments = [str(a) for a in details.get("arguments") or [] if isinstance(details.get("arguments"), list)]
    return ErrorBody(message, violations, missing, retry_after, kind, arguments)


def error_envelope(body: Any) -> tuple[str, list[str]]:
    """(message, constraint violations) from a classic or platform error body, or from a Grail
    query state carrying `error`, defensively."""
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


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when unreadable."""
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


# --------------------------------------------------------------------------- settings


def check_settings(settings: Settings) -> None:
    """LabError when no tenant is configured; BadInput when a URL would send tokens in the clear."""
    if not settings.dt_url or not (settings.api_token or settings.platform_token):
        missing = " and ".join(n for n, v in (
            ("DT_URL", settings.dt_url),
            ("DT_PLATFORM_TOKEN or DT_API_TOKEN", settings.api_token or settings.platform_token))
            if not v)
        raise LabError(
            f"No Dynatrace tenant is configured ({missing} not set). Set DT_URL "
            "(https://<id>.live.dynatrace.com) and DT_PLATFORM_TOKEN (a platform token; or "
            "DT_API_TOKEN, an API token) in the environment or .env, "
            "or run the local lab (python -m labkit sandbox, then source its lab.env)."
        )
    check_transport_security("DT_URL", settings.dt_url)
    if settings.platform_url:
        check_transport_security("the platform URL", settings.platform_url)


def check_transport_security(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(parts.hostname)):
        raise BadInput(f"{name} {parts.scheme}://{parts.hostname} is not https; labkit sends tokens "
                       "only over https (plain http only to loopback, the local lab).")
