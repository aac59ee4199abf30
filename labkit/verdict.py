"""Before/after: the failure rate around the last change of a flag, as a sentence (no plotting)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from labkit import cards
from labkit.timeline import EVENT_SENT, FLAG_APPLIED, FLAGD_SERVING, Timeline, change_label

NAN = float("nan")


@dataclass
class Verdict:
    """The failure rate before the change against after flagd served the new value."""

    before_rate: float
    after_rate: float
    before_requests: int
    after_requests: int
    text: str
    rose: bool
    change: str = ""
    before_failed: int = 0
    after_failed: int = 0

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"verdict: {self.text}"

    def _repr_html_(self) -> str:
        return cards.verdict(self)


def _pct(rate: float) -> str:
    return f"{rate * 100:.1f}%"


def _minutes(window: timedelta) -> str:
    return f"{window.total_seconds() / 60:g} min"


def _naive(value):
    """A naive UTC pandas Timestamp (the frame's slots are compared in naive UTC)."""
    import pandas as pd

    ts = pd.Timestamp(value)
    return ts.tz_localize(None) if ts.tzinfo is None else ts.tz_convert("UTC").tz_localize(None)


def _the_change(timeline: Timeline | None, flag: str, events):
    """(time, label) of the change to judge: the timeline's last "flag applied" of `flag` (else its
    "event sent"), else the last change event of that flag Dynatrace stored; (None, flag) if none."""
    for kind in (FLAG_APPLIED, EVENT_SENT):
        step = timeline.last(kind, flag) if timeline is not None else None
        if step is not None:
            return _naive(step.time), step.detail
    if events is not None and len(events):
        mine = events[events["flag"] == flag] if "flag" in events else events
        if len(mine):
            last = mine.sort_values("timestamp").iloc[-1]
            return _naive(last["timestamp"]), change_label(flag, last.get("old"), last.get("new"))
    return None, flag


def _old_served_since(timeline: Timeline | None, flag: str, change_at):
    """When flagd began serving the value this change replaced (the last serving step of `flag`
    before the change), or None: "before" must not reach back into an earlier state of the flag."""
    earlier = [s for s in (timeline.steps if timeline is not None else [])
               if s.kind == FLAGD_SERVING and s.flag == flag and _naive(s.time) < change_at]
    return _naive(earlier[-1].time) if earlier else None


def _served_at(timeline: Timeline | None, flag: str, change_at):
    """When flagd first served a value of `flag` at or after the change (else the change itself)."""
    for step in (timeline.steps if timeline is not None else []):
        if step.kind == FLAGD_SERVING and step.flag in (flag, None) and _naive(step.time) >= change_at:
            return _naive(step.time)
    return change_at


def _totals(part) -> tuple[int, int]:
    if not len(part):
        return 0, 0
    return int(part["failed"].fillna(0).sum()), int(part["requests"].fillna(0).sum())


def _windows(frame, change_at, served_at, window: timedelta, min_requests: int, old_since=None):
    """(before, after, note): slots ending in (change - window, change] (whole slots after the old
    value began to be served, when the timeline knows), and whole slots after flagd served the new
    value up to `window` later (timestamps are slot ends; a slot that started before the change
    mixes both sides, so it counts only when there is nothing else yet)."""
    import pandas as pd

    if not len(frame):
        return frame, frame, ""
    ts = pd.to_datetime(frame["timestamp"], utc=True).dt.tz_localize(None)
    slot = ts.diff().median() if len(ts) > 1 else pd.Timedelta(minutes=1)
    slot = slot if slot == slot else pd.Timedelta(minutes=1)  # NaT when the diffs are undefined
    start = change_at - window if old_since is None else max(change_at - window, old_since + slot)
    before = frame[((ts > start) & (ts <= change_at)).to_numpy()]
    after = frame[((ts - slot >= served_at) & (ts <= served_at + window)).to_numpy()]
    if _totals(after)[1] >= min_requests:
        return before, after, ""
    after = frame[((ts > served_at) & (ts <= served_at + window)).to_numpy()]
    return before, after, " (includes the minute of the change)"


def _sentence(b_rate: float, a_rate: float, b_req: int, a_req: int, after_what: str,
              window: timedelta, min_requests: int) -> tuple[str, bool]:
    if a_req < min_requests:
        return "not enough traffic after the change yet: run generate_traffic()", False
    if not b_req:
        return (f"failure rate is {_pct(a_rate)} {after_what} "
                f"(no traffic in the {_minutes(window)} before it to compare with)"), False
    if a_rate - b_rate > 0.005:
        return f"failure rate rose from {_pct(b_rate)} to {_pct(a_rate)} {after_what}", True
    if b_rate - a_rate > 0.005:
        return f"failure rate fell from {_pct(b_rate)} to {_pct(a_rate)} {after_what}", False
    if _pct(b_rate) == _pct(a_rate):
        return f"failure rate stayed at {_pct(a_rate)} {after_what}", False
    return (f"failure rate stayed about the same ({_pct(b_rate)} before, {_pct(a_rate)} after) "
            f"{after_what}"), False


def compare(failed, timeline: Timeline | None, flag: str = "cartFailure",
            window: timedelta = timedelta(minutes=5), events=None, min_requests: int = 5) -> Verdict:
    """Judge the last change of `flag`: the failure rate in `window` before it against after it.

    The change is the timeline's "flag applied" step for `flag` (else its "event sent", else the last
    change event of that flag in `events`); "after" starts when flagd served the new value. With
    fewer than `min_requests` requests after, it says to generate traffic.
    """
    import pandas as pd

    change_at, label = _the_change(timeline, flag, events)
    if change_at is None:
        return Verdict(NAN, NAN, 0, 0, f"no change of {flag} in this run yet: apply one with the "
                       "flag switch or lab.change_flag()", False)
    frame = failed if failed is not None else pd.DataFrame(columns=["timestamp", "failed", "requests"])
    before, after, note = _windows(frame, change_at, _served_at(timeline, flag, change_at), window,
                                   min_requests, _old_served_since(timeline, flag, change_at))
    (b_failed, b_req), (a_failed, a_req) = _totals(before), _totals(after)
    b_rate = b_failed / b_req if b_req else NAN
    a_rate = a_failed / a_req if a_req else NAN
    text, rose = _sentence(b_rate, a_rate, b_req, a_req, f"after {label}{note}", window, min_requests)
    return Verdict(b_rate, a_rate, b_req, a_req, text, rose, label, b_failed, a_failed)
