"""The tenant's state: API tokens and platform tokens with their scopes, Grail jobs, housekeeping."""
from __future__ import annotations

import base64
import math
import secrets
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from labkit.sandbox.background import Background
from labkit.sandbox.dynatrace.errors import EnvironmentApiError, PlatformError
from labkit.sandbox.dynatrace.openpipeline import OpenPipeline
from labkit.sandbox.dynatrace.store import LOCAL_USER, DocumentStore, SettingsStore  # noqa: F401
from labkit.sandbox.dynatrace.telemetry import MonitoredEntity, Telemetry
from labkit.sandbox.http import Request

if TYPE_CHECKING:
    from labkit.sandbox.dynatrace.dql import DqlQuery

READ_AND_INGEST_SCOPES = frozenset({
    "events.ingest", "events.read", "metrics.read", "problems.read", "entities.read", "logs.read",
    "logs.ingest", "metrics.ingest", "openTelemetryTrace.ingest", "settings.read", "settings.write"})
LAB_INGEST_SCOPES = frozenset({
    "logs.ingest", "metrics.ingest", "openTelemetryTrace.ingest", "events.ingest"})
# A platform token's scopes (fidelity.md): the classic API under /platform/classic/... and Grail.
PLATFORM_SCOPES = frozenset({
    "environment-api:events:write", "storage:events:write", "environment-api:events:read",
    "environment-api:metrics:read",
    "environment-api:problems:read", "environment-api:entities:read", "storage:logs:read",
    "storage:spans:read", "storage:buckets:read", "storage:events:read", "storage:metrics:read",
    "storage:entities:read",
    "settings:objects:read", "settings:objects:write", "settings:schemas:read",
    "document:documents:read", "document:documents:write", "document:documents:delete",
    "document:trash.documents:read", "document:trash.documents:delete",
    "document:trash.documents:restore",
    "openpipeline:configurations:read", "openpipeline:configurations:write"})
# The classic scope of a handler -> what a platform token needs there (the SDK's "Required scope"
# per method, dynatrace-answers.md §1): each entry one need, as the scopes that grant it (any one).
CLASSIC_ON_PLATFORM = {
    "events.ingest": [("openpipeline:events.davis:ingest", "storage:events:write",
                       "environment-api:events:write")],
    "events.read": [("environment-api:events:read",)],
    "metrics.read": [("environment-api:metrics:read",)],
    "problems.read": [("environment-api:problems:read",)],
    "entities.read": [("environment-api:entities:read",)],
    "logs.read": [("storage:logs:read",), ("storage:buckets:read",)]}  # on a Grail tenant: both
PLATFORM_CLASSIC = "/platform/classic/environment-api/v2"


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


def bearer(req: Request) -> str | None:
    scheme, _, value = req.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class PlatformTokens:
    """The tenant's platform tokens and their scopes; a token added without scopes has them all."""

    def __init__(self, tokens=()):
        self._scopes: dict[str, frozenset] = {}
        items = tokens.items() if isinstance(tokens, dict) else ((t, PLATFORM_SCOPES) for t in tokens)
        for token, scopes in items:
            self.add(token, scopes)

    def add(self, token: str, scopes=PLATFORM_SCOPES) -> None:
        self._scopes[token] = frozenset(scopes)

    def discard(self, token: str) -> None:
        self._scopes.pop(token, None)

    def __contains__(self, token) -> bool:
        return token in self._scopes

    def scopes(self, token: str) -> frozenset:
        return self._scopes.get(token, frozenset())


@dataclass
class GrailJob:
    query: DqlQuery
    frame: tuple[int, int]
    ready_at: float
    max_records: int
    result: dict | None = None
    expires_at: float = math.inf


class Tenant:
    """The local lab's Dynatrace environment. Tokens map to scopes; platform tokens use Grail."""

    RESULT_TTL = 60.0  # s a finished Grail result stays available (reference §10)

    def __init__(self, telemetry: Telemetry, timings, tokens: dict[str, set | frozenset],
                 platform_tokens: set[str] | frozenset | dict = frozenset(),
                 openpipeline_migrated: bool = True):
        self.telemetry = telemetry
        self.timings = timings
        now = telemetry.clock()
        self.tokens = {t: TokenInfo(t, frozenset(s), self._token_name(s), now, now)
                       for t, s in tokens.items()}
        self.platform_tokens = PlatformTokens(platform_tokens)
        # The tenant's configuration (OpenPipeline's settings objects, the runbook document).
        self.settings = SettingsStore()
        self.documents = DocumentStore()
        # False: a tenant not yet migrated to OpenPipeline on Settings 2.0 (before 1.327): the old
        # /platform/openpipeline/v1 configuration API answers and builtin:openpipeline.* are unknown.
        self.openpipeline_migrated = openpipeline_migrated
        self.openpipeline_v1: dict | None = None  # the v1 "logs" configuration (openpipeline_v1.py)
        # Every log record the labs' collectors send goes through the routes and pipelines above.
        self.openpipeline = OpenPipeline(self.settings, telemetry)
        telemetry.on_log = self.openpipeline.process
        self._jobs: dict[str, GrailJob] = {}
        self._gone: set[str] = set()
        self._lock = threading.Lock()
        # A timer, not a wait for a condition: problems close after a quiet period of time.
        self._housekeeper = Background("labkit-tenant", self._housekeeping, lambda: 0.5)

    def add_token(self, token: str, scopes) -> None:
        """One more API token (a seat joining a shared tenant brings its own)."""
        now = self.telemetry.clock()
        self.tokens[token] = TokenInfo(token, frozenset(scopes), self._token_name(scopes), now, now)

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
    def authorize(self, req: Request, scope: str | None) -> TokenInfo | None:
        """The API token of a classic call; under /platform/classic/ the platform token instead."""
        if req.path.startswith(PLATFORM_CLASSIC + "/"):
            self.authorize_classic_platform(req, CLASSIC_ON_PLATFORM[scope] if scope else [])
            return None
        token = _api_token(req)
        if not token:
            raise EnvironmentApiError(401, "Missing authorization parameter.")
        info = self.tokens.get(token)
        if info is None:
            raise EnvironmentApiError(401, "Token Authentication failed")
        if scope and scope not in info.scopes:
            raise EnvironmentApiError(403, f"Token is missing required scope. Use one of: {scope}")
        info.last_used = self.telemetry.clock()
        return info

    def authorize_classic_platform(self, req: Request, needs) -> None:
        """A platform token on the classic API's platform path: a scope it lacks is refused in the
        classic envelope, "OAuth token is missing required scope. Use one of: [...]", without
        details.missingScopes (as a real tenant answered, dynatrace-answers.md §2)."""
        self.authorize_platform(req)
        held = self.platform_tokens.scopes(bearer(req))
        for need in needs:
            if not held.intersection(need):
                raise EnvironmentApiError(403, "OAuth token is missing required scope. Use one of: "
                                               f"[{', '.join(need)}]")

    def authorize_platform(self, req: Request, needs=()) -> None:
        """A valid Bearer platform token holding, for each entry of `needs`, one of its scopes
        (an entry is a scope or a tuple of alternatives); 403 names what is missing."""
        token = bearer(req)
        if token is None:
            raise PlatformError(401, "Authentication required: send Authorization: Bearer "
                                     "<platform token>", "UNAUTHORIZED")
        if token not in self.platform_tokens:
            raise PlatformError(401, "The bearer token is not valid", "UNAUTHORIZED")
        held = self.platform_tokens.scopes(token)
        options = [(n,) if isinstance(n, str) else tuple(n) for n in needs]
        missing = [o[0] for o in options if not held.intersection(o)]
        if missing:
            raise PlatformError(403, "Forbidden: the token lacks the scope(s) " + ", ".join(missing),
                                "FORBIDDEN", missingScopes=missing)

    def services(self) -> list[MonitoredEntity]:
        return [e for e in self.telemetry.entity_list() if e.type == "SERVICE"]

    # ----- Grail jobs: a query that outlasts its request is polled by token --------------------
    def keep_job(self, job: GrailJob) -> str:
        token = base64.b64encode(secrets.token_bytes(24)).decode()
        with self._lock:
            self._jobs[token] = job
        return token

    def job(self, token: str | None) -> GrailJob:
        if not token:
            raise PlatformError(400, "request-token is required", "INVALID_PARAMETER")
        with self._lock:
            job = self._jobs.get(token)
            gone = token in self._gone
        if job is None:
            if gone:
                raise PlatformError(410, "The result of this query is no longer available",
                                    "RESULT_GONE")
            raise PlatformError(404, "No query with this request-token", "QUERY_NOT_FOUND")
        return job

    def cancel_job(self, token: str | None) -> None:
        self.job(token)
        with self._lock:
            self._jobs.pop(token, None)
            self._gone.add(token)

    def job_result(self, job: GrailJob, run: Callable[[GrailJob], dict]) -> dict:
        """The job's result, computed once; it expires RESULT_TTL after that."""
        with self._lock:
            if job.result is None:
                job.result = run(job)
                job.expires_at = time.monotonic() + self.RESULT_TTL
        return job.result
