"""The tenant's state: API tokens and their scopes, platform tokens, Grail jobs, housekeeping."""
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
from labkit.sandbox.dynatrace.telemetry import MonitoredEntity, Telemetry
from labkit.sandbox.http import Request

if TYPE_CHECKING:
    from labkit.sandbox.dynatrace.dql import DqlQuery

READ_AND_INGEST_SCOPES = frozenset({
    "events.ingest", "events.read", "metrics.read", "problems.read", "entities.read", "logs.read",
    "logs.ingest", "metrics.ingest", "openTelemetryTrace.ingest"})
LAB_INGEST_SCOPES = frozenset({
    "logs.ingest", "metrics.ingest", "openTelemetryTrace.ingest", "events.ingest"})


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
            raise EnvironmentApiError(401, "Missing authorization parameter.")
        info = self.tokens.get(token)
        if info is None:
            raise EnvironmentApiError(401, "Token Authentication failed")
        if scope and scope not in info.scopes:
            raise EnvironmentApiError(403, f"Token is missing required scope. Use one of: {scope}")
        info.last_used = self.telemetry.clock()
        return info

    def authorize_platform(self, req: Request) -> None:
        scheme, _, value = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise PlatformError(401, "Authentication required: send Authorization: Bearer "
                                     "<platform token>", "UNAUTHORIZED")
        if value.strip() not in self.platform_tokens:
            raise PlatformError(401, "The bearer token is not valid", "UNAUTHORIZED")

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
