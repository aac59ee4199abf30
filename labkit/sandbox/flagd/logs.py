"""What a flagd container writes to its log: its start, the sync source, the flags it loaded, or why it exits."""
from __future__ import annotations

import json
import time

from labkit.sandbox.flagd.evaluate import FLAG_FILE

VERSION = "v0.11.1"  # the demo's flagd image (kube seed FLAGD_IMAGE)


def _line(level: str, logger: str, msg: str, at: float, **fields) -> str:
    """One line as flagd's zap JSON logger writes it."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"
    return json.dumps({"level": level, "ts": stamp, "logger": logger, "msg": msg, **fields},
                      separators=(",", ":"))


def start_lines(flag_keys: list[str] | None, error: str | None, at: float | None = None) -> list[str]:
    """The log of a flagd container that starts at `at` with the flags it loaded (or the error that
    ends it). The Kubernetes side serves these as `kubectl logs` of the pod's flagd container."""
    at = time.time() if at is None else at
    uri = f"./etc/flagd/{FLAG_FILE}"
    lines = [_line("info", "flagd", f"flagd version: {VERSION}", at),
             _line("info", "flagd.sync", "starting file sync", at, component="sync", sync="file", uri=uri)]
    if error is not None:
        lines.append(_line("error", "flagd.sync", error, at, component="sync", sync="file", uri=uri))
        lines.append(_line("fatal", "flagd", "error starting flagd: sync failed", at))
        return lines
    lines.append(_line("info", "flagd.store", "flag configuration updated", at, component="store",
                       source=uri, flags=len(flag_keys or [])))
    lines.append(_line("info", "flagd.service", "Flag IResolver listening at [::]:8013", at))
    lines.append(_line("info", "flagd.ofrep", "ofrep service listening at 8016", at))
    return lines
