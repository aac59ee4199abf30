"""flagd's management port 8014: `/healthz`, `/readyz`, `/metrics` (flag-evaluation/connect_service.go).

`/healthz` is always 200; `/readyz` is 412 Precondition Failed until the flag file has been loaded
(flagd: every sync source synced once) and again once flagd shuts down; `/metrics` is Prometheus
text with the names flagd's OpenTelemetry meters get from the Prometheus exporter
(core/pkg/telemetry/metrics.go): evaluations counted per flag/variant/reason, sync streams open.
Other paths answer as Go's ServeMux does: 404 "404 page not found".
"""
from __future__ import annotations

import threading
from collections import Counter

from labkit.sandbox.http import Request, Response

PORT = 8014
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8; escaping=underscores"
SCOPE = {"otel_scope_name": "flagd", "otel_scope_schema_url": "", "otel_scope_version": ""}
_HELP = {
    "feature_flag_flagd_impression_total": ("counter", "Measures the number of evaluations for a given flag."),
    "feature_flag_flagd_result_reason_total": ("counter", "Measures the number of evaluations for a given reason."),
    "feature_flag_flagd_sync_active_streams": (
        "gauge", "Measures the number of currently active gRPC sync streaming connections."),
}


class Metrics:
    """What flagd's MetricsRecorder counts, kept for the Prometheus page."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: Counter = Counter()  # (metric, labels) -> value

    def evaluation(self, key: str, variant: str | None, reason: str, error_code: str | None) -> None:
        """RecordEvaluation: an impression when it succeeded; a reason either way (the key only when
        it succeeded, the error code as ExceptionTypeKeyName otherwise)."""
        base = {"feature_flag_provider_name": "flagd", "feature_flag_reason": reason}
        with self._lock:
            if error_code is None:
                self._counts["feature_flag_flagd_impression_total", _labels(
                    base, feature_flag_key=key, feature_flag_result_variant=variant or "")] += 1
                self._counts["feature_flag_flagd_result_reason_total", _labels(base, feature_flag_key=key)] += 1
            else:
                self._counts["feature_flag_flagd_result_reason_total", _labels(
                    base, ExceptionTypeKeyName=error_code)] += 1

    def sync_stream(self, delta: int) -> None:
        with self._lock:
            self._counts["feature_flag_flagd_sync_active_streams", _labels({})] += delta

    def text(self) -> str:
        with self._lock:
            counts = sorted(self._counts.items())
        lines: list[str] = []
        for name, (kind, help_) in _HELP.items():
            rows = [(labels, value) for (metric, labels), value in counts if metric == name]
            if not rows:
                continue
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
            lines += [f"{name}{{{','.join(f'{k}={_quoted(v)}' for k, v in labels)}}} {value}" for labels, value in rows]
        return "\n".join(lines) + ("\n" if lines else "")


def _labels(base: dict, **more) -> tuple:
    return tuple(sorted({**base, **more, **SCOPE}.items()))


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def serve(ready: bool, metrics: Metrics, req: Request, path: str) -> Response:
    """A request on 8014 at `path` (no leading slash)."""
    if path == "healthz":
        return Response(200, b"", "text/plain; charset=utf-8")
    if path == "readyz":
        return Response(200 if ready else 412, b"", "text/plain; charset=utf-8")
    if path == "metrics":
        return Response(200, metrics.text(), PROMETHEUS_TEXT)
    return Response(404, "404 page not found\n", "text/plain; charset=utf-8")
