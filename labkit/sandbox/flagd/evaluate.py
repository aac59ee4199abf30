"""What a flagd pod does with its flag file: load it at start, then answer one flag from what it loaded."""
from __future__ import annotations

import json

FLAG_FILE = "demo.flagd.json"  # flagd's --uri: ./etc/flagd/demo.flagd.json, the init container's copy


def load_flags(text: str | None) -> tuple[dict | None, str | None]:
    """The flag file's text (None: the file is missing) -> (flags, None) or (None, why flagd exits)."""
    if text is None:
        return None, f"open ./etc/flagd/{FLAG_FILE}: no such file or directory"
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return None, f"unable to parse flag file: {exc}"
    if not isinstance(doc, dict) or not isinstance(doc.get("flags"), dict):
        return None, "unable to parse flag file: missing 'flags'"
    return doc["flags"], None


def evaluate(flags: dict, key: str) -> tuple[int, dict]:
    """The OFREP answer for one flag of a loaded flag file: (http status, body).

    The one place flags are evaluated; targeting rules are not (a flag with rules answers its
    default with reason DEFAULT)."""
    flag = flags.get(key)
    if not isinstance(flag, dict):
        return 404, {"key": key, "errorCode": "FLAG_NOT_FOUND",
                     "errorDetails": f"flag `{key}` does not exist"}
    if flag.get("state") == "DISABLED":
        return 404, {"key": key, "errorCode": "FLAG_NOT_FOUND",
                     "errorDetails": f"flag `{key}` is disabled"}
    variants, default = flag.get("variants") or {}, flag.get("defaultVariant")
    if default not in variants:
        return 400, {"key": key, "errorCode": "GENERAL",
                     "errorDetails": f"flag `{key}`: defaultVariant `{default}` is not a variant"}
    reason = "DEFAULT" if flag.get("targeting") else "STATIC"
    return 200, {"key": key, "value": variants[default], "variant": default, "reason": reason,
                 "metadata": {}}
