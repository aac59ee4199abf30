"""What a flagd container writes to its log at start: version, sync source, listeners, a refused file.

flagd logs with zap's console encoder by default (`--log-format console`): tab-separated ISO8601
time, level, caller, message and the logger's fields as spaced JSON, on stderr. These are the info
and error lines flagd v0.16 writes on `flagd start --port 8013 --ofrep-port 8016 --uri file:...`
(cmd/start.go, sync/file/filepath_sync.go, runtime/runtime.go, the three services). flagd writes no
"N flags loaded" line at info level; the local lab adds none.
"""
from __future__ import annotations

import json
import time

from labkit.sandbox.flagd.evaluate import FLAG_FILE

VERSION = "v0.16.1"  # the flagd whose OFREP answers the local lab gives (flagd/v0.16.1 tag)
COMMIT, BUILT = "fce10902c22e820a0e392514a6f4530479f77e51", "2026-07-27T14:48:10Z"
URI = f"./etc/flagd/{FLAG_FILE}"
_SYNC = {"component": "sync", "sync": "fsnotify"}  # file: sources watch with fsnotify


def _line(at: float, level: str, caller: str, msg: str, fields: dict | None = None) -> str:
    """One line as zap's console encoder writes it."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"
    line = f"{stamp}\t{level}\t{caller}\t{msg}"
    return line + ("\t" + json.dumps(fields, separators=(", ", ": ")) if fields else "")


def _version(image: str | None) -> str:
    tag = image.rsplit(":", 1)[-1] if image and ":" in image.rsplit("/", 1)[-1] else VERSION
    return f"flagd version: {tag} ({COMMIT[:7]}), built at: {BUILT}"


def start_lines(flag_keys: list[str] | None, error: str | None, at: float | None = None,
                image: str | None = None) -> list[str]:
    """The log of a flagd container started at `at`. `flag_keys` None with an `error`: flagd could not
    start (it exits with the error). Keys with an `error`: flagd refused the file, logs why and runs on
    serving no flags. `image` (the container's) gives the version line its tag. The Kubernetes side
    serves these as `kubectl logs` of the pod's flagd container."""
    at = time.time() if at is None else at
    lines = [_line(at, "info", "cmd/start.go:157", _version(image), {"component": "start"})]
    if flag_keys is None and error is not None:
        lines.append(_line(at, "fatal", "cmd/start.go:230", error, {"component": "start"}))
        return lines
    lines += [_line(at, "info", "file/filepath_sync.go:68", "Starting filepath sync notifier", _SYNC),
              _line(at, "info", "file/filepath_sync.go:105", f"starting sync from {URI}", _SYNC)]
    if error is not None:
        lines.append(_line(at, "error", "runtime/runtime.go:132", error, {"component": "runtime"}))
    lines += [
        _line(at, "info", "flag-evaluation/connect_service.go:270", "metrics and probes listening at 8014",
              {"component": "service"}),
        _line(at, "info", "flag-evaluation/connect_service.go:257", "Flag IResolver listening at [::]:8013",
              {"component": "service"}),
        _line(at, "info", "ofrep/ofrep_service.go:75", "ofrep service listening at 8016",
              {"component": "OFREPService"}),
        _line(at, "info", "flag-sync/sync_service.go:119", "starting flag sync service on port 8015",
              {"component": "FlagSyncService"}),
    ]
    return lines
