"""The local lab's state dir: one running lab owns it, and a fresh start clears the run with the tenant.

The owner holds an exclusive flock on `lab.lock` (its pid and start time written in it) for as long
as it runs; the kernel drops the lock when the owner exits, even when it is killed, so a stale lock
file never blocks the next start. Only the owner writes or removes lab.env and the kubeconfig.

The local tenant lives in memory and is seeded anew at every start, so the run's timeline of an
earlier start names markers, problems and logs the tenant no longer has: a start archives it.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import BinaryIO

from labkit.errors import LabError
from labkit.settings import TIMELINE_FILE

LOCK = "lab.lock"


class StateDirBusy(LabError):
    """Another local lab runs on this state dir; its pid and start time say which."""

    def __init__(self, state_dir: Path, owner: dict):
        self.state_dir, self.owner = state_dir, owner
        pid = owner.get("pid", "unknown")
        since = owner.get("since", "an unknown time")
        super().__init__(f"a local lab already runs on {state_dir} (pid {pid}, since {since}); use it: "
                         f"source {state_dir / 'lab.env'}, or stop it first")


class Ownership:
    """This process's hold on a state dir: taken at once or StateDirBusy; given up by release(), or
    when the object is collected (a LocalLab whose construction failed) or the process ends."""

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / LOCK
        lock = open(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+b")  # closing it drops the flock
        for attempt in range(3):  # owner()'s brief shared lock can meet ours: try again shortly
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == 2:
                    lock.close()
                    raise StateDirBusy(self.state_dir, owner(self.state_dir) or {}) from None
                time.sleep(0.05)
        self._lock: BinaryIO | None = lock
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        lock.truncate(0)
        lock.write(json.dumps({"pid": os.getpid(), "since": since}).encode())
        lock.flush()

    @property
    def held(self) -> bool:
        return self._lock is not None

    def release(self) -> None:
        """Give the state dir up (the lock file stays: an unlocked one means nobody runs here)."""
        if self._lock is not None:
            self._lock.truncate(0)
            self._lock.close()
            self._lock = None


def owner(state_dir: Path) -> dict | None:
    """{"pid", "since"} of the local lab running on state_dir, or None when none holds it."""
    path = Path(state_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: read who holds it
            try:
                data = json.loads(os.read(fd, 4096) or b"{}")
            except ValueError:
                data = {}
            return data if isinstance(data, dict) else {}
        return None  # we got it: nobody runs here (our shared lock goes with the fd)
    finally:
        os.close(fd)


def archive_timeline(state_dir: Path) -> Path | None:
    """Move an earlier start's timeline aside as timeline-<time>.jsonl; the path, or None if none."""
    path = Path(state_dir) / TIMELINE_FILE
    if not path.exists():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(path.stat().st_mtime))
    target = path.with_name(f"{path.stem}-{stamp}{path.suffix}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.stem}-{stamp}-{n}{path.suffix}")
    if path.stat().st_size == 0:
        path.unlink()
        return None
    os.replace(path, target)
    return target
