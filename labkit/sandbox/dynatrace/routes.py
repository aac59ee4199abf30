"""The tenant's route tables: the classic Environment API v2 (also on the platform path), Grail's
query API and the UI pages behind labkit's links."""
from __future__ import annotations

from labkit.sandbox.dynatrace import documents, openpipeline_v1, ui
from labkit.sandbox.dynatrace.classic import (get_entity, get_event, get_problem, ingest_event,
                                              list_entities, list_events, list_problems,
                                              lookup_token, query_metrics, search_logs)
from labkit.sandbox.dynatrace.errors import EnvironmentApiError, PlatformError
from labkit.sandbox.dynatrace.grail import grail_cancel, grail_execute, grail_poll, grail_verify
from labkit.sandbox.dynatrace.settings import SETTINGS_API
from labkit.sandbox.dynatrace.tenant import PLATFORM_CLASSIC, Tenant
from labkit.sandbox.http import Mount, Route, Router

GRAIL_PREFIX = "/platform/storage/query/v1"

GRAIL = Router([
    Route(f"{GRAIL_PREFIX}/query:execute", grail_execute, ("POST",)),
    Route(f"{GRAIL_PREFIX}/query:poll", grail_poll),
    Route(f"{GRAIL_PREFIX}/query:cancel", grail_cancel, ("POST",)),
    Route(f"{GRAIL_PREFIX}/query:verify", grail_verify, ("POST",)),
], PlatformError, name="the local lab's query API")

# The Environment API v2 paths after /api/v2; a platform token reaches the same ones (except the
# API-token lookup) under /platform/classic/environment-api/v2 with Bearer (fidelity.md).
ENVIRONMENT_API = [
    ("/events/ingest", ingest_event, ("POST",)),
    ("/events", list_events, ("GET",)),
    ("/events/{eventId}", get_event, ("GET",)),
    ("/metrics/query", query_metrics, ("GET",)),
    ("/problems", list_problems, ("GET",)),
    ("/problems/{problemId}", get_problem, ("GET",)),
    ("/entities", list_entities, ("GET",)),
    ("/entities/{entityId}", get_entity, ("GET",)),
    ("/logs/search", search_logs, ("GET",)),
    *SETTINGS_API,  # Settings 2.0 objects and schemas (settings.py)
]

PLATFORM_CLASSIC_API = Router([Route(PLATFORM_CLASSIC + path, handler, methods)
                               for path, handler, methods in ENVIRONMENT_API],
                              EnvironmentApiError, name="the local lab's platform classic API")

UI = Router([
    Route("/ui/apps/dynatrace.davis.problems/problem/{problemId}", ui.problem_page),
    Route("/ui/apps/dynatrace.services/explorer", ui.service_page),
    Route("/ui/apps/dynatrace.logs", ui.query_page),
    Route("/ui/apps/dynatrace.logs/intent/view_query", ui.query_page),
    Route("/ui/intent/dynatrace.notebooks/view-query", ui.query_page),
    Route("/ui/local-lab/query", ui.run_query, ("POST",)),
    Route("/ui/document/{documentId}", ui.runbook_page),
    Route("/ui/intent/dynatrace.distributedtracing/view-trace", ui.trace_page),
], ui.PageError, name="the local lab's pages")

CLASSIC = Router([
    *[Route("/api/v2" + path, handler, methods) for path, handler, methods in ENVIRONMENT_API],
    Route("/api/v2/apiTokens/lookup", lookup_token, ("POST",)),
    Mount(GRAIL_PREFIX, GRAIL),  # Grail answers errors in its own body (PlatformError)
    Mount(PLATFORM_CLASSIC, PLATFORM_CLASSIC_API),
    Mount(documents.PREFIX, documents.ROUTES),  # the Documents API (the runbook notebook)
    openpipeline_v1.MOUNT,  # the old OpenPipeline configuration API (404 once migrated)
    Mount("/ui", UI),
], EnvironmentApiError, name="the local lab's Dynatrace API")


def app(tenant: Tenant) -> Router:
    return CLASSIC.bind(tenant)
