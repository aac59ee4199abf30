"""Dynatrace JSON -> pandas DataFrames: failure series, change events, problems, log rows and frames.

numpy and pandas are imported inside the functions, so importing labkit stays cheap.
"""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


# --------------------------------------------------------------------------- failed requests


def metric_series(body: dict, keys: tuple[str, str]):
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


def slot_ms(body: dict, asked: str, timestamps) -> int:
    """The length of one slot in ms: the resolution the answer reports (the server may choose a
    coarser one than asked), else the spacing of the timestamps, else what was asked, else 1 min."""
    import numpy as np

    for text in (body.get("resolution"), asked):
        ms = _span_ms(text)
        if ms:
            return ms
    if timestamps is not None and len(timestamps) > 1:
        return int(np.median(np.diff(np.sort(timestamps))))
    return 60_000


def _span_ms(text) -> int | None:
    import re

    m = re.fullmatch(r"(\d+)([mhdw])", str(text or ""))
    return int(m.group(1)) * {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}[m.group(2)] if m else None


def failure_frame(failed, requests, slot: int = 60_000, now_ms: int | None = None) -> "pd.DataFrame":
    """One row per slot: timestamp = the slot's START (the minute it covers; Dynatrace stamps a slot
    by its end, converted here once so every view prints the same minute), failed, requests,
    failure_rate (NaN without requests) and partial (the slot had not ended at `now_ms`: its counts
    are "so far", not a drop)."""
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
    frame = pd.DataFrame({
        "timestamp": pd.to_datetime(ts - slot, unit="ms", utc=True),
        "failed": f,
        "requests": r,
        "failure_rate": rate.astype("float64"),
        "partial": (ts > now_ms) if now_ms is not None else np.zeros(len(ts), dtype=bool),
    })
    frame.attrs["slot"] = pd.Timedelta(milliseconds=slot)
    return frame


def call_frame(records: list[dict]) -> "pd.DataFrame":
    """Spans as calls, oldest first: timestamp (the span's start, UTC; ISO or epoch ns as Grail
    gives it), failed (request.is_failed)."""
    import pandas as pd

    stamps = [_span_time(r.get("start_time")) for r in records]
    failed = [bool(_first(r.get("request.is_failed"))) for r in records]
    frame = pd.DataFrame({"timestamp": pd.to_datetime(stamps, utc=True), "failed": failed})
    return frame.dropna(subset=["timestamp"]).sort_values("timestamp", kind="stable").reset_index(drop=True)


def _span_time(value):
    """A span's start_time/end_time: ISO text, or nanoseconds since the epoch (as a number or text)."""
    import pandas as pd

    if isinstance(value, (int, float)) or (isinstance(value, str) and value.strip().isdigit()):
        return pd.Timestamp(int(value), unit="ns", tz="UTC")  # Grail's span times are ns
    return _one_utc(value)


# --------------------------------------------------------------------------- events and problems


def change_event_frame(events: list[dict]) -> "pd.DataFrame":
    """Change events (the API's event objects) as rows, oldest first."""
    import pandas as pd

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


# A Deployment's pod: <workload>-<ReplicaSet hash>-<5 characters>. Davis opens the lab's problem on
# the cart's pod (CLOUD_APPLICATION_INSTANCE today; a newer Kubernetes model may use another type), so
# a pod is told by its name, not by one entity type.
POD_NAME = re.compile(r"^(?P<workload>[a-z0-9]([-a-z0-9]*[a-z0-9])?)-[a-z0-9]{5,10}-[a-z0-9]{5}$")


def workload_pod(name, service: str) -> bool:
    """Whether `name` is a pod of `service`'s workload: `cart-<hash>-<hash>`, or a chart's
    `<release>-cart-...`/`<release>-cartservice-...` (older demo charts)."""
    m = POD_NAME.match(name) if isinstance(name, str) else None
    if not m:
        return False
    workload = m.group("workload")
    return any(workload == w or workload.endswith("-" + w) for w in (service, service + "service"))


def _pod_name(stubs) -> str | None:
    """The first affected entity that is a pod (by its name; a service is not)."""
    for stub in stubs or []:
        name = _stub_name(stub)
        kind = str(((stub or {}).get("entityId") or {}).get("type") or "") if isinstance(stub, dict) else ""
        if name and kind != "SERVICE" and POD_NAME.match(name):
            return name
    return None


def problem_frame(items: list[dict]) -> "pd.DataFrame":
    """Problems (the API's problem objects) as rows, newest first; end is NaT while open. The display
    id (P-...) a person reads comes first; the internal problem id, for API calls, last."""
    import pandas as pd

    rows = []
    for p in items:
        affected = [_stub_name(x) for x in (p.get("affectedEntities") or [])]
        root = p.get("rootCauseEntity")
        rows.append((p.get("displayId"), p.get("title"), p.get("status"), p.get("severityLevel"),
                     p.get("startTime"), p.get("endTime"), ", ".join(a for a in affected if a),
                     _pod_name(p.get("affectedEntities")),
                     _stub_name(root) if isinstance(root, dict) else None, p.get("problemId")))
    columns = ["display_id", "title", "status", "severity", "start", "end", "affected", "pod", "root_cause",
               "problem_id"]
    frame = pd.DataFrame.from_records(rows, columns=columns)
    for col in ("start", "end"):
        ms = pd.to_numeric(frame[col], errors="coerce")
        frame[col] = pd.to_datetime(ms.where(ms >= 0), unit="ms", utc=True)
    return frame.sort_values("start", ascending=False, kind="stable").reset_index(drop=True)


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


# --------------------------------------------------------------------------- logs


def _first(value):
    if isinstance(value, list):
        return value[0] if value else None
    return value


# The pod's owner and cost, as the lab's collector tags its logs (the review page names them).
OWNER_FIELDS = ("dt.owner", "dt.cost.product", "dt.cost.costcenter")


def grail_log_row(rec: dict) -> dict:
    return {
        "timestamp": rec.get("timestamp"),
        "loglevel": _first(rec.get("loglevel")),
        "status": _first(rec.get("status")),
        "content": rec.get("content"),
        "trace_id": _first(rec.get("trace_id") or rec.get("trace.id")),
        "span_id": _first(rec.get("span_id") or rec.get("span.id")),
        "service": _first(rec.get("service.name") or rec.get("dt.entity.service.name")),
        "statuscode": _first(rec.get("statuscode")),
        "detail": _first(rec.get("detail")),
        **{k: _first(rec.get(k)) for k in OWNER_FIELDS},
    }


def classic_log_row(rec: dict) -> dict:
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
        "statuscode": col("statuscode"),
        "detail": col("detail"),
        **{k: col(k) for k in OWNER_FIELDS},
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


# Within one span, what was called is logged before what went wrong.
_LEVEL_RANK = {"TRACE": 0, "DEBUG": 1, "INFO": 2, "NOTICE": 2, "WARN": 3, "WARNING": 3}


def _cause_rank(row) -> int:
    level = str(row.get("loglevel") or row.get("status") or "").upper()
    return _LEVEL_RANK.get(level, 4)  # ERROR and the other error levels last


def _cause_first(rows: list[dict]) -> list[dict]:
    """Rows by time (ties in the source's order), then, among one span's lines of one timestamp,
    its error lines after the others, in the places that span's lines had: a request's "called"
    line before its error, while other spans' lines keep the order the tenant gave them."""
    out = list(rows)
    start = 0
    while start < len(rows):
        end = start
        while end < len(rows) and rows[end]["timestamp"] == rows[start]["timestamp"]:
            end += 1
        spans: dict = {}
        for k in range(start, end):
            spans.setdefault(rows[k].get("span_id"), []).append(k)
        for places in spans.values():
            for place, k in zip(places, sorted(places, key=lambda k: (_cause_rank(rows[k]), k))):
                out[place] = rows[k]
        start = end
    return out


def log_frame(rows: list[dict], newest_first: bool) -> "pd.DataFrame":
    """Log rows by time, cause before effect at equal timestamps (reversed, newest first)."""
    import pandas as pd

    columns = ["timestamp", "loglevel", "status", "content", "trace_id", "span_id", "service",
               "statuscode", "detail", *OWNER_FIELDS]
    frame = pd.DataFrame.from_records(rows, columns=columns)
    frame["timestamp"] = pd.to_datetime([_one_utc(v) for v in frame["timestamp"]], utc=True)
    ordered = _cause_first(frame.sort_values("timestamp", kind="stable").to_dict("records"))
    frame = pd.DataFrame.from_records(ordered[::-1] if newest_first else ordered, columns=columns)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame.reset_index(drop=True)


# --------------------------------------------------------------------------- spans


def span_frame(records: list[dict]) -> "pd.DataFrame":
    """Grail span records (fetch spans) as rows by start time: start, end, duration_ms, span_id,
    parent_id, name, kind, service, failed, status_code."""
    import pandas as pd

    rows = []
    for r in records:
        start, end = _span_time(r.get("start_time")), _span_time(r.get("end_time"))
        duration = pd.to_numeric(r.get("duration"), errors="coerce")
        if duration != duration and start is not pd.NaT and end is not pd.NaT:
            duration = (end - start).value
        if end is pd.NaT and start is not pd.NaT and duration == duration:
            end = start + pd.Timedelta(int(duration), unit="ns")
        rows.append({"start": start, "end": end,
                     "duration_ms": float(duration) / 1e6 if duration == duration else float("nan"),
                     "span_id": _first(r.get("span.id")), "parent_id": _first(r.get("span.parent_id")),
                     "name": r.get("span.name"), "kind": r.get("span.kind"),
                     "service": _first(r.get("service.name")),
                     "failed": str(r.get("request.is_failed")).lower() == "true"
                     or str(r.get("span.status_code")).lower() == "error",
                     "status_code": r.get("span.status_code")})
    columns = ["start", "end", "duration_ms", "span_id", "parent_id", "name", "kind", "service", "failed",
               "status_code"]
    frame = pd.DataFrame.from_records(rows, columns=columns)
    frame["start"] = pd.to_datetime(frame["start"], utc=True)
    frame["end"] = pd.to_datetime(frame["end"], utc=True)
    return frame.sort_values("start", kind="stable").reset_index(drop=True)


def evaluation_frame(records: list[dict]) -> "pd.DataFrame":
    """The cart's own flag evaluations, one row per answer it got: variant, value, reason, error,
    calls, first_seen, last_seen (UTC); newest answer first."""
    import pandas as pd

    columns = ["variant", "value", "reason", "error", "calls", "first_seen", "last_seen"]
    frame = pd.DataFrame.from_records([{c: r.get(c) for c in columns} for r in records], columns=columns)
    for c in ("first_seen", "last_seen"):  # span times are ISO or epoch nanoseconds
        frame[c] = pd.to_datetime([_span_time(v) for v in frame[c]], utc=True)
    frame["calls"] = pd.to_numeric(frame["calls"], errors="coerce").fillna(0).astype(int)
    return frame.sort_values("last_seen", ascending=False, kind="stable").reset_index(drop=True)
