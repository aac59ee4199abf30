"""The per-minute request counters as time series: resolution, slots and aggregation.

Shared by the classic metrics query and Grail's `timeseries`; slots are [start, end) in epoch ms.
"""
from __future__ import annotations

import math
import re

from labkit.sandbox.dynatrace.errors import bad_param
from labkit.sandbox.dynatrace.telemetry import MonitoredEntity, Telemetry
from labkit.sandbox.dynatrace.times import MINUTE_MS, UNIT_MS

NICE_MINUTES = (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 10080)


def parse_resolution(text: str | None, start: int, end: int) -> tuple[int | None, str]:
    """(slot length ms or None for Inf, the resolution string the response reports)."""
    if text in (None, ""):
        text = "120"
    if text == "Inf":
        return None, "Inf"
    if text.isdigit():
        points = max(int(text), 1)
        want = math.ceil((end - start) / points / MINUTE_MS)
        minutes = next((n for n in NICE_MINUTES if n >= want), NICE_MINUTES[-1])
    else:
        m = re.fullmatch(r"(\d+)([mhdwMqy])", text)
        if not m or int(m.group(1)) == 0:
            raise bad_param("resolution", f"Invalid resolution '{text}': use a point count, "
                                          "a timespan like 1m or 1h, or Inf")
        minutes = max(int(m.group(1)) * UNIT_MS[m.group(2)] // MINUTE_MS, 1)
    return minutes * MINUTE_MS, _span_text(minutes)


def _span_text(minutes: int) -> str:
    for unit, size in (("d", 1440), ("h", 60)):
        if minutes % size == 0:
            return f"{minutes // size}{unit}"
    return f"{minutes}m"


def aggregate(values: list[float], agg: str) -> float | None:
    if not values:
        return None
    if agg in ("value", "sum"):
        return sum(values)
    if agg == "avg":
        return sum(values) / len(values)
    if agg == "count":
        return float(len(values))
    return max(values) if agg == "max" else min(values)


def merged_minutes(telemetry: Telemetry, members: list[tuple[MonitoredEntity, str]], index: int,
                   first: int, last: int) -> list[float | None]:
    """Per-minute values of one series: several (service, k8s.cluster.name) counters summed minute
    by minute."""
    merged: list[float | None] = [None] * (last - first)
    for entity, cluster in members:
        for i, slot in enumerate(telemetry.minute_counts(entity.entity_id, first, last, cluster)):
            if slot is not None:
                merged[i] = (merged[i] or 0) + slot[index]
    return merged


def slot_bounds(start: int, end: int, step: int | None) -> list[tuple[int, int]]:
    """Slot [start, end) bounds; timestamps reported are the slot ENDS (reference §5)."""
    if step is None:
        return [(start, end)]
    first = start - start % step
    return [(s, s + step) for s in range(first, end, step)]


def series_values(minutes: list[float | None], first_minute: int, slots, agg: str
                  ) -> list[float | None]:
    out = []
    for s, e in slots:
        lo = max(s // MINUTE_MS - first_minute, 0)
        hi = max(-(-e // MINUTE_MS) - first_minute, 0)
        out.append(aggregate([v for v in minutes[lo:hi] if v is not None], agg))
    return out

