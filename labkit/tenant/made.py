"""What labkit made on the tenant, kept as JSON beside the run's timeline (the local lab's state dir,
or ~/.cache/labkit/runs/<tenant>-<namespace>/ for a real lab), so undo removes only that."""
from __future__ import annotations

import json
import os
from pathlib import Path

FILE = "tenant-made.json"


def path(settings) -> Path:
    return settings.timeline_path().parent / FILE


def load(settings) -> dict:
    """{"pipeline": objectId, "route": {...}, "document": id}: what is recorded ({} when nothing)."""
    try:
        data = json.loads(path(settings).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save(settings, made: dict) -> None:
    """Write the record at once (a write that fails later must still be undoable); none left: no file."""
    target = path(settings)
    if not made:
        target.unlink(missing_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(made, indent=1))
    os.replace(tmp, target)
