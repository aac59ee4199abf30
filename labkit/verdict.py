"""Before/after: the failure rate around the last change of a flag, as a sentence (no plotting).

The one definition every view uses: `windows()` says what "before" and "after" a change are,
`count()` counts failures and requests in such a window, `rise_text()` / `share_text()` print a
rate, always with what it counts and its window (`since_text()`, `span_text()`): "16.1 % (5 of 31
EmptyCart calls failed since cartFailure: off → 10% at 09:49:51 UTC, to 09:53:02)". The verdict,
the chart's subtitle and hovers, `labkit failures`, `labkit logs`, the traffic card and the cart's
expectation call these, so they cannot disagree, and where their windows differ (the traffic card
counts only its own run; `labkit failures` its --since) the text says so.

Times are the data's own: per-call records (spans: timestamp, failed) are counted by their
timestamps; per-minute slots (timestamp = the minute's start) count whole where they lie on one
side, and the minute of the change is split at the change: its failures by the timestamps of its
error logs when they are given (else by time), its other requests in proportion to the seconds on
each side.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from labkit import cards
from labkit.timeline import EVENT_SENT, FLAG_APPLIED, FLAGD_SERVING, LAB_RESET, Timeline, change_label

NAN = float("nan")
WINDOW = timedelta(minutes=5)


# --- the definition ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Count:
    """Failures of `total` requests (or calls) in one window."""

    failed: int
    total: int
    upto: object = field(default=None, compare=False)  # the newest data counted (naive UTC), if known

    @property
    def rate(self) -> float:
        return self.failed / self.total if self.total else NAN


def pct(rate: float) -> str:
    """'9.8 %', how every view prints a failure rate ('-' when there was nothing to count)."""
    return "-" if rate != rate else f"{rate * 100:.1f} %"


def share_text(c: Count, unit: str, when: str = "") -> str:
    """'9.8 % (5 of 51 EmptyCart calls failed since …)': one rate, with its counts and `when`, its
    window in words (since_text, span_text)."""
    return f"{pct(c.rate)} ({c.failed} of {c.total} {unit} failed{' ' + when if when else ''})"


def rise_text(before: Count, after: Count, unit: str, when: str = "after the change",
              before_when: str = "before it") -> str:
    """'0.0 % (0 of 40 before it) → 9.8 % (5 of 51 EmptyCart calls failed after the change)': how a
    rise (or fall) is always shown, each side with its counts and window."""
    return f"{pct(before.rate)} ({before.failed} of {before.total} {before_when}) → {share_text(after, unit, when)}"


def clock(t) -> str:
    """'09:49:51', a time of the windows (naive UTC)."""
    return f"{_naive(t):%H:%M:%S}"


def span_text(start, end) -> str:
    """'09:44:51–09:49:51 UTC': a window by its bounds (end None: '09:44:51 UTC on')."""
    return f"{clock(start)}–{clock(end)} UTC" if end is not None else f"{clock(start)} UTC on"


def since_text(w: "Windows", upto=None) -> str:
    """'since cartFailure: off → 10% at 09:49:51 UTC, to 09:53:02': the after window in words. It
    starts when the flag was applied, not when flagd served it (see windows()), so it says so."""
    return f"since {w.label} at {clock(w.change_at)} UTC" + (f", to {clock(upto)}" if upto is not None else "")


@dataclass(frozen=True)
class Windows:
    """The change being judged and the two windows around it (naive UTC timestamps)."""

    label: str            # "cartFailure: off → on"
    change_at: object     # when the flag was applied
    served_at: object     # when flagd first served the new value
    before: tuple         # [start, end)
    after: tuple          # [start, None): from the change on, up to the newest data


def _naive(value):
    """A naive UTC pandas Timestamp (the windows are compared in naive UTC)."""
    import pandas as pd

    ts = pd.Timestamp(value)
    return ts if ts.tzinfo is None else ts.tz_convert("UTC").tz_localize(None)


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


def windows(timeline: Timeline | None, flag: str = "cartFailure", events=None,
            window: timedelta = WINDOW) -> Windows | None:
    """Before = the `window` up to the change (not reaching back past when flagd began serving the
    value it replaced); after = from the change on (a failure right of the chart's change marker is
    after it, also one while flagd was restarting). None: no change of `flag` yet."""
    change_at, label = _the_change(timeline, flag, events)
    if change_at is None:
        return None
    steps = [s for s in (timeline.steps if timeline is not None else []) if s.kind == FLAGD_SERVING]
    earlier = [_naive(s.time) for s in steps if s.flag == flag and _naive(s.time) < change_at]
    later = [_naive(s.time) for s in steps if s.flag in (flag, None) and _naive(s.time) >= change_at]
    start = max(change_at - window, earlier[-1]) if earlier else change_at - window
    served_at = later[0] if later else change_at
    return Windows(label, change_at, served_at, (start, change_at), (change_at, None))


def count(frame, start, end, logs=None) -> Count:
    """Failures and requests in [start, end) (end None: up to the newest data).

    `frame` is per call (timestamp, failed: bool; e.g. spans) or per slot (timestamp = slot start,
    failed, requests). A slot that straddles a bound is split: its failures by the timestamps of
    `logs` (one error log per failed call) in that slot when there are any, else by time; its other
    requests in proportion to the seconds inside.
    """
    import pandas as pd

    if frame is None or not len(frame):
        return Count(0, 0)
    start = _naive(start)
    end = pd.Timestamp.max if end is None else _naive(end)
    ts = pd.to_datetime(frame["timestamp"], utc=True).dt.tz_localize(None)
    if "requests" not in frame:  # one row per call
        inside = ((ts >= start) & (ts < end)).to_numpy()
        return Count(int(frame["failed"].to_numpy()[inside].astype(bool).sum()), int(inside.sum()),
                     ts[inside].max() if inside.any() else None)
    slot = _slot(frame, ts)
    log_ts = _log_times(logs)
    failed = total = 0.0
    upto = None
    running = frame["partial"].fillna(False).to_numpy() if "partial" in frame else [False] * len(frame)
    for s, f, r, partial in zip(ts, frame["failed"].fillna(0), frame["requests"].fillna(0), running):
        e = s + slot
        share = max(pd.Timedelta(0), min(end, e) - max(start, s)) / slot
        if share <= 0:
            continue
        # the running minute is counted up to now, not to its end
        upto = min(end, e, _naive(pd.Timestamp.now("UTC")) if partial else e)
        in_slot = log_ts[(log_ts >= s) & (log_ts < e)] if log_ts is not None and share < 1 else ()
        f_in = f * (((in_slot >= start) & (in_slot < end)).sum() / len(in_slot) if len(in_slot) else share)
        failed += f_in
        total += f_in + (r - f) * share  # the failures where they happened, the rest by time
    return Count(int(failed + 0.5), int(total + 0.5), upto)  # half up: 4.5 failures read as 5


def _slot(frame, ts):
    import pandas as pd

    slot = frame.attrs.get("slot")
    if slot is None:
        slot = ts.diff().median() if len(ts) > 1 else pd.Timedelta(minutes=1)
    return slot if slot == slot and slot > pd.Timedelta(0) else pd.Timedelta(minutes=1)


def _log_times(logs):
    import pandas as pd

    if logs is None or not len(logs):
        return None
    return pd.DatetimeIndex(pd.to_datetime(logs["timestamp"], utc=True)).tz_localize(None)


def running(frame, start, end, logs=None, now=None) -> list[tuple[object, Count]]:
    """The rate of [start, t) for t at each minute's end after `start` up to `end` (None: up to
    `now`, the newest data), then at `end` itself: a window's rate as it grew, one point per closed
    minute, the last one the window's own count (what the verdict prints). Naive UTC times."""
    import pandas as pd

    start = _naive(start)
    stop = _naive(end if end is not None else now) if (end is not None or now is not None) else None
    if stop is None or stop <= start:
        return []
    points = []
    t = start.floor("min") + pd.Timedelta(minutes=1)
    while t < stop:
        points.append((t, count(frame, start, t, logs=logs)))
        t += pd.Timedelta(minutes=1)
    return points + [(stop, count(frame, start, end, logs=logs))]


def straddled(frame, w: Windows) -> str:
    """How the minute of the change was counted, for the verdict's note ("" when no slot straddles)."""
    import pandas as pd

    if frame is None or not len(frame) or "requests" not in frame:
        return ""
    ts = pd.to_datetime(frame["timestamp"], utc=True).dt.tz_localize(None)
    slot = _slot(frame, ts)
    cut = [s for s in ts if s < w.change_at < s + slot]
    if not cut:
        return ""
    s = cut[0]
    before = (w.change_at - s).total_seconds()
    after = (s + slot - w.change_at).total_seconds()
    return (f"the minute {s:%H:%M} is split at the change ({before:.0f} s before, {after:.0f} s after): "
            "its failures by their error logs' timestamps, its other requests by time")


# --- the verdict --------------------------------------------------------------------------------
@dataclass
class Verdict:
    """The failure rate in the window before the change against the one since it (its text names
    both windows: Windows)."""

    before_rate: float
    after_rate: float
    before_requests: int
    after_requests: int
    text: str
    rose: bool
    change: str = ""
    before_failed: int = 0
    after_failed: int = 0
    unit: str = ""  # what was counted: "EmptyCart calls" or "cart requests"
    how: str = ""   # how the minute of the change was counted, when it mattered
    rate_name: str = ""  # "failure rate of EmptyCart calls": the words its text and the chart use
    # What was counted, so a chart draws this same rate (running()) without counting anew.
    windows: Windows | None = field(default=None, repr=False, compare=False)
    counted: object = field(default=None, repr=False, compare=False)
    logs: object = field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"verdict: {self.text}"

    def _repr_html_(self) -> str:
        return cards.verdict(self)


def _minutes(window: timedelta) -> str:
    return f"{window.total_seconds() / 60:g} min"


def _sentence(b: Count, a: Count, unit: str, rate_name: str, w: Windows, min_requests: int
              ) -> tuple[str, bool]:
    after = f"after {w.label}"
    if a.total < min_requests and not a.failed:
        return (f"not enough traffic {after} yet ({a.total} {unit} since {clock(w.change_at)} "
                "UTC): run generate_traffic()"), False
    since = since_text(w, a.upto)
    if not b.total:
        return (f"{rate_name} is {share_text(a, unit, since)}; no {unit} in the "
                f"{_minutes(w.before[1] - w.before[0])} before the change to compare with"), False
    rise = rise_text(b, a, unit, since, f"in {span_text(*w.before)}")
    if not b.failed and not a.failed:
        return f"no {unit} failed before or {after}: {rise}", False
    if a.rate - b.rate > 0.005 or (a.failed and not b.failed):
        return f"{rate_name} rose: {rise}", True
    if b.rate - a.rate > 0.005:
        return f"{rate_name} fell: {rise}", False
    return f"{rate_name} about the same: {rise}", False


def compare(failed, timeline: Timeline | None, flag: str = "cartFailure", window: timedelta = WINDOW,
            events=None, min_requests: int = 5, logs=None, unit: str | None = None) -> Verdict:
    """Judge the last change of `flag`: the failure rate in `window` before it against after it.

    `failed` is per call (spans of one operation: timestamp, failed; `unit` e.g. "EmptyCart calls")
    or per minute (Dynatrace.failed_requests: all requests of the service; unit "cart requests").
    `logs` (error logs, one per failed call) place the failures of the minute of the change. With
    fewer than `min_requests` requests after and no failure, it says to generate traffic.
    """
    per_call = failed is not None and "requests" not in failed
    unit = unit or ("calls" if per_call else "cart requests")
    rate_name = f"failure rate of {unit}" if per_call else f"failure rate of all {unit}"
    w = windows(timeline, flag, events, window)
    if w is None:
        return Verdict(NAN, NAN, 0, 0, _no_change(timeline, flag), False, unit=unit, rate_name=rate_name)
    b, a = count(failed, *w.before, logs=logs), count(failed, *w.after, logs=logs)
    text, rose = _sentence(b, a, unit, rate_name, w, min_requests)
    return Verdict(b.rate, a.rate, b.total, a.total, text, rose, w.label, b.failed, a.failed, unit,
                   "" if per_call else straddled(failed, w), rate_name, w, failed, logs)


def _no_change(timeline: Timeline | None, flag: str) -> str:
    """Why there is nothing to judge: a facilitator's reset began this run, or no change yet."""
    reset = timeline.last(LAB_RESET) if timeline is not None else None
    if reset is not None:
        return (f"the lab was reset at {cards.when(reset.time)} ({reset.note}): this run has no change "
                f"of {flag} yet; the next group starts with 01")
    return f"no change of {flag} in this run yet: apply one with the flag switch or lab.change_flag()"


def judge(dt, timeline: Timeline | None, failed, service: str = "cart", flag: str = "cartFailure",
          operation: str = "EmptyCart", events=None) -> Verdict:
    """The verdict every view shows: from the calls' own times where the tenant has them (Grail's
    spans of `operation`: "EmptyCart calls"), else from `failed`'s minutes (all requests of
    `service`), the minute of the change placed by its error logs."""
    from labkit.errors import LabError

    w = windows(timeline, flag, events)
    if w is None:
        return compare(failed, timeline, flag, events=events)
    try:
        calls = dt.calls(service, operation, since=w.before[0].tz_localize("UTC").to_pydatetime())
    except LabError:  # no spans on this tenant or token: the metrics' minutes
        calls = None
    # Spans only when they cover both sides (a local lab seeds no spans into its past); else the
    # minutes, which do: never "nothing before to compare with" while the chart shows traffic there.
    if calls is not None and len(calls) and (calls["timestamp"] < w.change_at.tz_localize("UTC")).any():
        return compare(calls, timeline, flag, events=events, unit=f"{operation} calls")
    return compare(failed, timeline, flag, events=events, unit=f"{service} requests",
                   logs=change_minute_logs(dt, timeline, service, flag))


def change_minute_logs(dt, timeline: Timeline | None, service: str = "cart", flag: str = "cartFailure"):
    """Error logs from the start of the minute of the last change of `flag` (their timestamps place
    that minute's failures before or after it) read through `dt` (a labkit.dynatrace.Dynatrace);
    None when there is no change or the logs cannot be read (then that minute is split by time)."""
    from labkit.errors import LabError

    w = windows(timeline, flag)
    if w is None:
        return None
    try:
        return dt.error_logs(service, since=w.change_at.floor("min").tz_localize("UTC").to_pydatetime(),
                             limit=1000)
    except LabError:  # e.g. a token without log access: the verdict still stands, split by time
        return None
