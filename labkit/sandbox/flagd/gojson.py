"""JSON as flagd's Go writes it: whole float64s without `.0`, compact, `<>&` escaped (encoding/json)."""
from __future__ import annotations

import json


def numbers(value):
    """Every whole float as Go prints a float64 (1.0 -> 1; 1e21 and beyond keep exponent form)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, dict):
        return {k: numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [numbers(v) for v in value]
    return value


def dumps(value, sort_keys: bool = False) -> str:
    """encoding/json.Marshal: compact, UTF-8 kept, HTML characters escaped (maps sorted when asked)."""
    text = json.dumps(numbers(value), separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def sorted_maps(value):
    """A decoded JSON value as Go marshals a map[string]any: every object's keys sorted."""
    if isinstance(value, dict):
        return {k: sorted_maps(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [sorted_maps(v) for v in value]
    return value
