"""Time in the tenant's forms: epoch ms, the ISO strings it answers with, the bounds it parses."""
from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

from labkit.sandbox.dynatrace.errors import bad_param

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(ms: int) -> str:
    """Grail's timestamp form: UTC with nanoseconds, e.g. 2025-08-07T08:00:00.123000000Z."""
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{(ms % 1000) * 1_000_000:09d}Z"


def iso_ns(ns: int) -> str:
    """Grail's timestamp form at full precision (span start and end times)."""
    dt = datetime.fromtimestamp(ns // 1_000_000_000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ns % 1_000_000_000:09d}Z"


def iso_ms(ms: int) -> str:
    """The classic API's ISO form with milliseconds, e.g. 2020-11-05T08:15:30.144Z."""
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


# Timeframe bounds (reference §2): epoch ms, ISO with or without zone, now-2h, now-1d/d
UNIT_MS = {"s": 1000, "m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS, "w": 7 * DAY_MS,
           "M": 30 * DAY_MS, "q": 91 * DAY_MS, "y": 365 * DAY_MS}
# Relative bounds take only m h d w M y (reference §2): now-30s is a 400 on a tenant.
RELATIVE_RE = re.compile(r"^now(?:\s*-\s*(\d+)([mhdwMy]))?(?:/([mhdwMy]))?$")
ANY_RELATIVE_RE = re.compile(r"^now\s*-")
ISO_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?"
                    r"\s*(Z|[+-]\d{2}:?\d{2})?$")


def _align(ms: int, unit: str) -> int:
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    if unit in ("s", "m", "h", "d"):
        return ms - ms % UNIT_MS[unit]
    day = dt.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "w":
        day -= timedelta(days=day.weekday())
    elif unit == "M":
        day = day.replace(day=1)
    elif unit == "y":
        day = day.replace(month=1, day=1)
    return int(day.timestamp() * 1000)


def parse_time(text: str | None, now: int, param: str = "from") -> int | None:
    """A timeframe bound in any of the classic API's formats; None when not given."""
    if text is None or text.strip() == "":
        return None
    text = text.strip()
    if text.isdigit():
        return int(text)
    m = RELATIVE_RE.match(text)
    if m:
        t = now - (int(m.group(1)) * UNIT_MS[m.group(2)] if m.group(1) else 0)
        return _align(t, m.group(3)) if m.group(3) else t
    if ANY_RELATIVE_RE.match(text):
        raise bad_param(param, f"Invalid relative time '{text}': the units are m, h, d, w, M "
                               "and y (now-2h, now-1d/d); use epoch milliseconds for seconds")
    # A '+' in an unencoded query string arrives as a space: "…01.123 01:00".
    text = re.sub(r"(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})$", r"\1+\2", text)
    m = ISO_RE.match(text)
    if not m:
        raise bad_param(param, f"Invalid timestamp '{text}': use epoch milliseconds, "
                               "ISO 8601 (2021-01-25T05:57:01.123+01:00) or now-2h")
    y, mo, d, h, mi, s, frac, zone = m.groups()
    tz = timezone.utc
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    micro = int((frac or "0").ljust(6, "0")[:6])
    dt = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0), micro, tz)
    return int(dt.timestamp() * 1000)


def timeframe(req_params: dict, now: int, default_from: int) -> tuple[int, int]:
    start = parse_time(req_params.get("from"), now, "from")
    end = parse_time(req_params.get("to"), now, "to")
    start = now - default_from if start is None else start
    end = now if end is None else end
    if start >= end:
        raise bad_param("from", "The start of the timeframe must be before its end")
    return start, end


