"""The words of a Dynatrace request: selector values, DQL strings and timeframe parameters."""
from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone

from labkit.errors import BadInput

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_REL = re.compile(r"^now\s*-\s*(\d+)\s*(ms|s|m|h|d|w)$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def quote_selector_value(value: str, *, always: bool = False) -> str:
    """A value for an entity/problem selector: bare when harmless, else quoted with ~ escapes.

    `cart` stays `cart` (the lab's form); `a(b),c` becomes `"a(b),c"`; `"` and `~` are escaped
    with `~`, so a name can never inject selector criteria. `always=True` quotes even a harmless
    value (problemSelector and eventSelector criteria need the quotes).
    """
    if not always and _SAFE_NAME.match(value):
        return value
    return '"' + value.replace("~", "~~").replace('"', '~"') + '"'


def service_selector(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise BadInput("The service name is empty; name the service as Dynatrace shows it, e.g. 'cart'.")
    return f"type(SERVICE),entityName.equals({quote_selector_value(name)})"


def dql_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def utc_ms(ms) -> datetime | None:
    """Epoch milliseconds as an aware UTC datetime; None for a missing or negative value."""
    try:
        ms = int(ms)
    except (TypeError, ValueError):
        return None
    if ms < 0:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def time_param(value, name: str = "since") -> str:
    """A classic API timeframe value in a form it accepts: 'now-2h' (units m h d w M y) and ISO
    strings pass through; 'now-30s', datetimes and timedeltas become epoch ms (reference §2)."""
    if value is None:
        return None  # type: ignore[return-value]
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return str(int(value.timestamp() * 1000))
    if isinstance(value, timedelta):
        return str(int((datetime.now(timezone.utc) - value).timestamp() * 1000))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, str) and value.strip():
        m = _REL.match(value.strip())
        if m and m.group(2) in ("s", "ms"):  # the classic API has no seconds: a 400 there
            return str(int(as_datetime(value).timestamp() * 1000))
        return value.strip()
    raise BadInput(f"{name} must be like 'now-2h', an ISO time or a datetime; got {value!r}.")


def as_datetime(value) -> datetime:
    """since/until as an aware UTC datetime (for DQL and client-side filters)."""
    now = datetime.now(timezone.utc)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, timedelta):
        return now - value
    if isinstance(value, str):
        m = _REL.match(value.strip())
        if m:
            return now - timedelta(seconds=int(m.group(1)) * _UNIT_S[m.group(2)])
        if value.strip() == "now":
            return now
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
    raise BadInput(f"since must be like 'now-1h', an ISO time or a datetime; got {value!r}.")


def dql_from(value) -> str:
    """A DQL `from:` argument: relative 'now-1h' -> now()-1h, anything else -> now()-<seconds>s."""
    if isinstance(value, str):
        m = _REL.match(value.strip())
        if m:
            return f"now()-{m.group(1)}{m.group(2)}"
    seconds = max(1, math.ceil((datetime.now(timezone.utc) - as_datetime(value)).total_seconds()))
    return f"now()-{seconds}s"


def as_str(value) -> str:
    """A property value as Dynatrace stores it: a string (booleans the JSON way)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else str(value)
    return str(value)
