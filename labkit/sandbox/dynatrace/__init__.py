"""The local lab's Dynatrace tenant: the classic Environment API v2 and the Grail query API.

Speaks the shapes of shared/reference/dynatrace-api.md (and its examples) over loopback, computed
from Telemetry: what the shop served, the logs the cart wrote (through the lab's collector), the
events labkit ingested, and the Davis events and problems the tenant's own OpenPipeline made of the
logs (openpipeline: route table -> pipeline -> Davis event, as its settings say). It is a stand-in,
not an emulator: selectors and DQL are parsed for the subset the lab uses, and anything else gets
the real error shape with a message that says the local lab does not support it (rather than a
silently wrong answer).

Like moto's models / responses / urls: telemetry, store and tenant hold the state (seed: the tenant
as the lab's getting-started page leaves it); classic and grail answer requests (with selectors,
times, series and dql as their parsers); ui shows the pages behind labkit's links; routes is the table.
"""
from labkit.sandbox.dynatrace.errors import EnvironmentApiError, PlatformError
from labkit.sandbox.dynatrace.collector import Collector
from labkit.sandbox.dynatrace.routes import app
from labkit.sandbox.dynatrace.telemetry import (DEFAULT_CLUSTER, REDIS_ERROR, SERVICES, Event, MonitoredEntity,
                                                Problem, Span, Telemetry, service_id)
from labkit.sandbox.dynatrace.tenant import (LAB_INGEST_SCOPES, PLATFORM_SCOPES, READ_AND_INGEST_SCOPES,
                                             PlatformTokens, Tenant, TokenInfo)

__all__ = ["Collector", "DEFAULT_CLUSTER", "EnvironmentApiError", "Event", "LAB_INGEST_SCOPES", "MonitoredEntity", "PLATFORM_SCOPES",
           "PlatformError", "PlatformTokens",
           "Problem", "READ_AND_INGEST_SCOPES", "REDIS_ERROR", "SERVICES", "Span",
           "Telemetry", "Tenant", "TokenInfo", "app", "service_id"]
