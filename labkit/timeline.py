"""The run's steps as data (kind, flag, old, new, time), kept in a file so every kernel of the lab sees them.

A Timeline with a `path` is kept as JSON lines (one step a line, appended with O_APPEND so two
kernels adding at once both land); each read picks up what other kernels added. Steps hold names,
variants and times only: never a token or a URL with credentials.
"""
from __future__ import annotations

import json
import math
import os
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from labkit import cards

# Step kinds, in the order the lab page walks through them.
EVENT_SENT = "event sent"
FLAG_APPLIED = "flag applied"
FLAGD_RESTARTED = "flagd restarted"
FLAGD_SERVING = "flagd serving the new value"
FIRST_FAILURE = "first failure seen by the shop"
ERROR_LOGS = "error logs seen"
PROBLEM_OPENED = "problem opened"
ROLLED_BACK = "rolled back"
LAB_RESET = "lab reset"  # a facilitator's reset: the first step of the run it starts

# Kinds that name a change of one flag (old → new).
CHANGES = (EVENT_SENT, FLAG_APPLIED)

# At one timestamp, cause before effect: the change, flagd serving it, the request that failed, its
# error log, the problem.
CAUSAL_RANK = {LAB_RESET: -1, EVENT_SENT: 0, FLAG_APPLIED: 1, FLAGD_RESTARTED: 2, FLAGD_SERVING: 3, ROLLED_BACK: 4,
               FIRST_FAILURE: 5, ERROR_LOGS: 6, PROBLEM_OPENED: 7}

#: Called as hook(step) after a step is added, hook(None) after clear() (a room's seat reports its
#: steps to the facilitator's board this way: labkit.room.report). A hook's failure never stops the lab.
HOOKS: list = []


def _tell_hooks(step: "Step | None") -> None:
    for hook in list(HOOKS):
        try:
            hook(step)
        except Exception:  # noqa: BLE001 - the board is optional; the attendee's step is not
            pass


def now() -> datetime:
    return datetime.now(timezone.utc)


def _text(value, missing: str = "?") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    text = str(value)
    return text if text and text.lower() not in ("nan", "none", "nat") else missing


def change_label(flag, old, new) -> str:
    """'cartFailure: off → on', the way a change is named on charts, in verdicts and on the timeline."""
    if _text(old, "") == "":
        return f"{_text(flag)} → {_text(new)}"
    return f"{_text(flag)}: {_text(old)} → {_text(new)}"


@dataclass(frozen=True)
class Step:
    """One thing that happened: its kind, the flag and variants it concerns (if any), and a note."""

    time: datetime
    kind: str
    flag: str | None = None
    old: str | None = None
    new: str | None = None
    note: str = ""

    @property
    def detail(self) -> str:
        """What a reader sees beside the kind: the change for a change, else the note."""
        if self.kind in CHANGES and self.flag:
            return change_label(self.flag, self.old, self.new)
        if self.kind in (FLAGD_SERVING, ROLLED_BACK) and self.flag:
            return f"{self.flag} = {self.new}" + (f" ({self.note})" if self.note else "")
        return self.note

    def __repr__(self) -> str:
        return f"{cards.when(self.time)} {self.kind}" + (f": {self.detail}" if self.detail else "")

    def is_change_of(self, flag: str, old: str | None, new: str) -> bool:
        return self.flag == flag and self.old == old and self.new == new


def _dump(step: Step) -> str:
    """A step as one line of the file (times as ISO 8601 UTC)."""
    return json.dumps({**asdict(step), "time": step.time.isoformat()}, ensure_ascii=False)


def _load(line: str) -> Step | str | None:
    """The step on a line, the run id of a header line, or None for a blank or damaged line
    (skipped, not fatal)."""
    try:
        data = json.loads(line)
        if not isinstance(data, dict):
            return None
        if "kind" not in data:
            return str(data["run"]) if "run" in data else None
        time = datetime.fromisoformat(data["time"])
        fields = {k: data.get(k) for k in ("flag", "old", "new")}
        return Step(time if time.tzinfo else time.replace(tzinfo=timezone.utc), str(data["kind"]),
                    **fields, note=str(data.get("note") or ""))
    except (ValueError, TypeError, KeyError):
        return None


class Timeline:
    """What happened in this run of the lab, in order; drawn on the charts and judged by the verdict.

    Without a path it lives in memory (tests, one-off scripts); with one, it is the lab's run as every
    kernel and terminal on this machine sees it, until clear() starts a new run."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self._steps: list[Step] = []
        self._run_id = secrets.token_hex(4)
        self._seen: tuple | None = None  # (inode, size, mtime) of the file as last read
        if self.path is not None:
            self._read()

    @property
    def run_id(self) -> str:
        if self.path is not None:
            self._read()
            if self._seen is None:  # shown before any step (00's lab card): the id shown is the run's
                self._claim()
        return self._run_id

    @property
    def steps(self) -> list[Step]:
        if self.path is not None:
            self._read()
        return list(self._steps)

    def add(self, kind: str, *, flag: str | None = None, old: str | None = None, new: str | None = None,
            note: str = "", at: datetime | None = None) -> Step:
        entry = Step(at or now(), kind, flag, old, new, note)
        if self.path is None:
            self._steps.append(entry)
        else:
            self._append(_dump(entry))
        _tell_hooks(entry)
        return entry

    def last(self, kind: str, flag: str | None = None) -> Step | None:
        return next((s for s in reversed(self.steps)
                     if s.kind == kind and (flag is None or s.flag == flag)), None)

    def cycle_start(self) -> datetime | None:
        """When the current cycle began: the last change applied (a change and its rollback each
        start one), or None before any change of this run."""
        change = self.last(FLAG_APPLIED)
        return change.time if change else None

    def in_cycle(self, kind: str) -> Step | None:
        """The step of `kind` in the current cycle, if it happened yet (e.g. this change's first
        failure, not the previous change's)."""
        start = self.cycle_start()
        step = self.last(kind)
        return step if step is not None and (start is None or step.time >= start) else None

    def in_order(self) -> list[Step]:
        """The steps by time, cause before effect at equal times (a step added later may have
        happened earlier: the first failure, the problem's start)."""
        return sorted(self.steps, key=lambda s: (s.time, CAUSAL_RANK.get(s.kind, len(CAUSAL_RANK))))

    def clear(self) -> None:
        """A new run: no steps, a new run id (a facilitator's reset between groups)."""
        self._run_id, self._steps = secrets.token_hex(4), []
        if self.path is not None:
            self._start()
        _tell_hooks(None)

    # -- the file ---
    def _start(self) -> None:
        """The file with just the header of the current run (written whole, then moved in place)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"run": self._run_id, "started": now().isoformat()}) + "\n",
                       encoding="utf-8")
        os.replace(tmp, self.path)

    def _claim(self) -> None:
        """The file with this run's header unless another kernel wrote one first (then its id wins):
        linked in place, which never overwrites, so two kernels never show two ids for one run."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.claim")
        tmp.write_text(json.dumps({"run": self._run_id, "started": now().isoformat()}) + "\n",
                       encoding="utf-8")
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        self._read()

    def _append(self, line: str) -> None:
        if not self.path.exists():
            self._start()  # the run id already handed out (e.g. to a change event) stays the run's
        # One write of one line with O_APPEND: two kernels appending at once never interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode("utf-8"))
        finally:
            os.close(fd)

    def _read(self) -> None:
        """Pick up what any kernel wrote; the file is read again only when it changed."""
        try:
            st = os.stat(self.path)
            if (st.st_ino, st.st_size, st.st_mtime_ns) == self._seen:
                return
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            if self._seen is not None:  # it was there: set aside by a new local lab, or deleted
                self._seen, self._steps, self._run_id = None, [], secrets.token_hex(4)
            return  # not written yet: the run starts with the first step
        self._seen = (st.st_ino, st.st_size, st.st_mtime_ns)
        loaded = [_load(line) for line in lines]
        if loaded and isinstance(loaded[0], str):
            self._run_id = loaded[0]
        self._steps = [s for s in loaded if isinstance(s, Step)]

    def frame(self):
        import pandas as pd

        steps = self.in_order()
        return pd.DataFrame(
            {"time": pd.to_datetime([s.time for s in steps], utc=True),
             "step": [s.kind for s in steps], "flag": [s.flag for s in steps],
             "old": [s.old for s in steps], "new": [s.new for s in steps],
             "detail": [s.detail for s in steps]})

    def __repr__(self) -> str:
        steps = self.steps
        last = f"; last: {steps[-1]!r}" if steps else ""
        return f"timeline of run {self.run_id}: {len(steps)} steps{last}"

    def _repr_html_(self) -> str:
        return cards.timeline(self)

