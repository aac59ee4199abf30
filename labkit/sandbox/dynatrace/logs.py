"""The log records the lab's collector sends: shaped as in Grail, on their pod's entity, through the
tenant's OpenPipeline, then kept (error records apart, so a flood of INFO lines never pushes them out)."""
from __future__ import annotations

import itertools
from collections import deque
from typing import Callable

from labkit.sandbox.dynatrace.context import Context
from labkit.sandbox.dynatrace.times import iso
from labkit.sandbox.dynatrace.topology import DEFAULT_CLUSTER, Topology

CART = "cart"

REDIS_ERROR = ("Can't access cart storage. System.ApplicationException: Wasn't able to connect to "
               "redis \n  at cart.cartstore.ValkeyCartStore.EmptyCartAsync(String userId) in "
               "/usr/src/app/src/cartstore/ValkeyCartStore.cs:line 177")

# Dynatrace normalises loglevel and sets status ERROR for all of these (fidelity.md).
ERROR_LEVELS = frozenset({"SEVERE", "ERROR", "CRITICAL", "ALERT", "FATAL", "EMERGENCY"})

MAX_INFO_LOGS = 20_000
MAX_ERROR_LOGS = 20_000


def log_status(level: str) -> str:
    """The `status` Dynatrace derives from a log's level."""
    level = level.upper()
    if level in ERROR_LEVELS:
        return "ERROR"
    if level in ("WARN", "WARNING"):
        return "WARN"
    return "INFO" if level in ("INFO", "DEBUG", "TRACE", "NOTICE") else "NONE"


class Logs:
    """The log records kept, oldest first when read."""

    def __init__(self, context: Context, topology: Topology):
        self._ctx = context
        self._lock = context.lock
        self._topology = topology
        self._info_logs: deque[dict] = deque(maxlen=MAX_INFO_LOGS)
        # Error logs are kept apart so a flood of INFO lines never pushes them out.
        self._error_logs: deque[dict] = deque(maxlen=MAX_ERROR_LOGS)
        # Each log record once stored goes here (the tenant's OpenPipeline: route -> pipeline ->
        # Davis event); called outside the lock, as it writes events back.
        self.on_log: Callable[[dict], None] | None = None
        self._log_seq = itertools.count()  # orders log lines written in the same millisecond

    def seed(self, start: int, end: int, cluster: str) -> None:
        """A little INFO history for the cart, so "surrounding logs" is not empty (called under
        the lock)."""
        t = start
        while t < end:
            t += int(self._ctx.rng.expovariate(1 / 60_000))
            if t < end:
                trace, span = self._ctx.hex(32), self._ctx.hex(16)
                self._info_logs.append(self._log_line(  # history from before any route existed
                    t, "GetCartAsync called with userId=seed", trace, span, "INFO", "cart-seed", cluster=cluster,
                    attributes={"dt.openpipeline.pipelines": ["logs:default"]}))

    def _log_line(self, t: int, content: str, trace_id: str, span_id: str, level: str,
                  pod: str, service: str = CART, cluster: str = DEFAULT_CLUSTER,
                  attributes: dict | None = None) -> dict:
        """A log line shaped like the lab's logs in Grail (OTel + k8s), with what the lab's
        collector added (`attributes`: the pod's annotations, the transform's fields)."""
        entry = {
            "timestamp": iso(t), "_ms": t, "_seq": next(self._log_seq), "content": content,
            "loglevel": level, "status": log_status(level),
            "service.name": service, "dt.entity.service": self._topology.service(service, cluster, t).entity_id,
            "trace_id": trace_id, "span_id": span_id, "host.name": pod,
            "k8s.cluster.name": cluster, "k8s.namespace.name": "default", "k8s.pod.name": pod,
            "k8s.container.name": service, "log.source": "otel", "event.type": "LOG",
        }
        entry.update(attributes or {})
        return entry

    def _enrich(self, entry: dict) -> dict:
        """A record of the lab's collector on its pod's entity (dt.source_entity), as the tenant's
        entity enrichment puts it (called under the lock)."""
        pod = self._topology.pod(entry["k8s.pod.name"], entry["k8s.cluster.name"], entry["_ms"])
        pod.runs = entry["dt.entity.service"]
        entry.update({"dt.source_entity": pod.entity_id, "dt.entity.cloud_application_instance": pod.entity_id,
                      "dt.entity.cloud_application_instance.name": pod.name})
        return entry

    def _store(self, entry: dict) -> dict:
        """Through the tenant's OpenPipeline (outside the lock: it writes events back), then kept."""
        if self.on_log is not None:
            self.on_log(entry)
        with self._lock:
            (self._error_logs if entry["status"] == "ERROR" else self._info_logs).append(entry)
        return entry

    def log_info(self, service: str, content: str, trace_id: str, span_id: str, pod: str,
                 at: int | None = None, cluster: str = DEFAULT_CLUSTER,
                 attributes: dict | None = None) -> dict:
        """An INFO line of a demo service (cart, checkout, quote, currency) inside a span."""
        with self._lock:
            entry = self._enrich(self._log_line(self._ctx.clock() if at is None else at, content, trace_id,
                                                span_id, "INFO", pod, service, cluster, attributes))
        return self._store(entry)

    def log_cart(self, level: str, content: str, pod: str = "cart-pod-test",
                 cluster: str = DEFAULT_CLUSTER, attributes: dict | None = None) -> dict:
        """Any cart log line (tests inject e.g. a CRITICAL one)."""
        with self._lock:
            entry = self._enrich(self._log_line(self._ctx.clock(), content, self._ctx.hex(32), self._ctx.hex(16),
                                                level.upper(), pod, cluster=cluster, attributes=attributes))
        return self._store(entry)

    def log_cart_redis_error(self, trace_id: str, span_id: str, pod: str, at: int | None = None,
                             cluster: str = DEFAULT_CLUSTER, attributes: dict | None = None) -> dict:
        """The EmptyCart failure log. Whether it opens a problem is the tenant's pipeline's say."""
        with self._lock:
            t = self._ctx.clock() if at is None else at
            entry = self._log_line(t, REDIS_ERROR, trace_id, span_id, "ERROR", pod, cluster=cluster,
                                   attributes=attributes)
            entry.update({"statuscode": "FailedPrecondition", "detail": REDIS_ERROR})
            self._enrich(entry)
        return self._store(entry)

    def logs(self, start: int, end: int, cluster: str | None = None) -> list[dict]:
        """Log records (of `cluster`, or all) in [start, end), oldest first, Grail-shaped; `_ms` is
        private (epoch ms)."""
        with self._lock:
            rows = [r for r in itertools.chain(self._info_logs, self._error_logs)
                    if start <= r["_ms"] < end and cluster in (None, r.get("k8s.cluster.name"))]
        rows.sort(key=lambda r: (r["_ms"], r["_seq"]))
        return rows
