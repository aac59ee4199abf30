"""The run's steps as data (kind, flag, old, new, time), in the order the lab page walks through them."""
from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone

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

# Kinds that name a change of one flag (old → new).
CHANGES = (EVENT_SENT, FLAG_APPLIED)


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


@dataclass
class Timeline:
    """What happened in this run of the lab, in order; drawn on the charts and judged by the verdict."""

    run_id: str = field(default_factory=lambda: secrets.token_hex(4))
    steps: list[Step] = field(default_factory=list)

    def add(self, kind: str, *, flag: str | None = None, old: str | None = None, new: str | None = None,
            note: str = "", at: datetime | None = None) -> Step:
        entry = Step(at or now(), kind, flag, old, new, note)
        self.steps.append(entry)
        return entry

    def last(self, kind: str, flag: str | None = None) -> Step | None:
        return next((s for s in reversed(self.steps)
                     if s.kind == kind and (flag is None or s.flag == flag)), None)

    def frame(self):
        import pandas as pd

        return pd.DataFrame(
            {"time": pd.to_datetime([s.time for s in self.steps], utc=True),
             "step": [s.kind for s in self.steps], "flag": [s.flag for s in self.steps],
             "old": [s.old for s in self.steps], "new": [s.new for s in self.steps],
             "detail": [s.detail for s in self.steps]})

    def __repr__(self) -> str:
        last = f"; last: {self.steps[-1]!r}" if self.steps else ""
        return f"timeline of run {self.run_id}: {len(self.steps)} steps{last}"

    def _repr_html_(self) -> str:
        return cards.timeline(self)
