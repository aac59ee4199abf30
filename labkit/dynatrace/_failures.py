"""Failures: the service's failed and total requests per slot (the metrics API; on a shared tenant
the seat's own entity or series) and its server calls one by one (Grail's spans)."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from labkit.dynatrace._client import Client
from labkit.dynatrace._entities import Entities, by_id, unless_not_allowed
from labkit.dynatrace._frames import call_frame, failure_frame, metric_series, slot_ms
from labkit.dynatrace._query import dql_from, dql_string, service_selector, time_param
from labkit.errors import Forbidden

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

UNIFIED_KEYS = ("builtin:service.request.failure_count", "builtin:service.request.count")
ONEAGENT_KEYS = ("builtin:service.errors.total.count", "builtin:service.requestCount.total")


class Failures:
    def __init__(self, client: Client, entities: Entities):
        self.client = client
        self.entities = entities

    def per_slot(self, service: str, since="now-2h", resolution: str = "1m", until=None) -> "pd.DataFrame":
        """See Dynatrace.failed_requests."""
        selector, only = self._metric_target(service)
        what = f"to read failed requests of service {service!r}"
        series, body = None, {}
        asked_at = int(time.time() * 1000)  # before asking: a slot ending later was still running
        for keys in (UNIFIED_KEYS, ONEAGENT_KEYS):
            metric_selector = ",".join(f"{k}{only}:splitBy():value:default(0)" for k in keys)
            params = {"metricSelector": metric_selector, "entitySelector": selector,
                      "from": time_param(since), "to": time_param(until, "until"),
                      "resolution": resolution}
            body = self.client.get_json("/api/v2/metrics/query", scope="metrics.read", what=what,
                                        params=params)
            series = metric_series(body, keys)
            if series[0] is not None or series[1] is not None:
                break
        stamps = next((s[0] for s in series if s is not None), None)
        return failure_frame(*series, slot=slot_ms(body, resolution, stamps), now_ms=asked_at)

    def calls(self, service: str, operation: str, since="now-1h", limit: int = 100_000) -> "pd.DataFrame":
        """See Dynatrace.calls."""
        query = (f"fetch spans, from: {dql_from(since)} | filter service.name == {dql_string(service)}"
                 f' and endsWith(span.name, {dql_string(operation)}) and span.kind == "server"'
                 f" | fields start_time, request.is_failed | sort start_time asc | limit {int(limit)}")
        return call_frame(self.client.dql(query, max_records=limit))

    def _metric_target(self, service: str) -> tuple[str, str]:
        """(entity selector, metric filter) for `service`'s series: by name; on a shared tenant the
        seat's own entity when Grail can name it (a documented selector), else the metrics'
        k8s.cluster.name dimension (that the unified service metrics carry it is unconfirmed)."""
        scope = self.client.scope
        if not scope:
            return service_selector(service), ""
        try:
            entity = self.entities.seat(service)
        except Forbidden as exc:
            unless_not_allowed(exc)
            entity = None
        if entity is None or entity.shared:
            return service_selector(service), scope.metric_filter()
        return by_id(entity), ""
