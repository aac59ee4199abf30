"""The tenant's route tables: the classic Environment API v2, with Grail's query API mounted."""
from __future__ import annotations

from labkit.sandbox.dynatrace.classic import (get_entity, get_problem, ingest_event, list_entities,
                                              list_events, list_problems, lookup_token,
                                              query_metrics, search_logs)
from labkit.sandbox.dynatrace.errors import EnvironmentApiError, PlatformError
from labkit.sandbox.dynatrace.grail import grail_cancel, grail_execute, grail_poll, grail_verify
from labkit.sandbox.dynatrace.tenant import Tenant
from labkit.sandbox.http import Mount, Route, Router

GRAIL_PREFIX = "/platform/storage/query/v1"

GRAIL = Router([
    Route(f"{GRAIL_PREFIX}/query:execute", grail_execute, ("POST",)),
    Route(f"{GRAIL_PREFIX}/query:poll", grail_poll),
    Route(f"{GRAIL_PREFIX}/query:cancel", grail_cancel, ("POST",)),
    Route(f"{GRAIL_PREFIX}/query:verify", grail_verify, ("POST",)),
], PlatformError, name="the local lab's query API")

CLASSIC = Router([
    Route("/api/v2/events/ingest", ingest_event, ("POST",)),
    Route("/api/v2/events", list_events),
    Route("/api/v2/metrics/query", query_metrics),
    Route("/api/v2/problems", list_problems),
    Route("/api/v2/problems/{problemId}", get_problem),
    Route("/api/v2/entities", list_entities),
    Route("/api/v2/entities/{entityId}", get_entity),
    Route("/api/v2/apiTokens/lookup", lookup_token, ("POST",)),
    Route("/api/v2/logs/search", search_logs),
    Mount(GRAIL_PREFIX, GRAIL),  # Grail answers errors in its own body (PlatformError)
], EnvironmentApiError, name="the local lab's Dynatrace API")


def app(tenant: Tenant) -> Router:
    return CLASSIC.bind(tenant)
