"""What the Lab's steps answer, each shown as a card in a notebook and a line in a terminal: the
preflight's checks, a reset, a trace's logs and spans, a change that needed nothing sent."""
from __future__ import annotations

from dataclasses import dataclass, fields

from labkit import cards
from labkit.cluster import Served


@dataclass
class Check:
    item: str
    ok: bool
    detail: str

    def __repr__(self) -> str:
        return f"{'ok' if self.ok else 'NO'} {self.item}: {self.detail}"


class Preflight(list):
    """Checks of tenant and cluster; each says what is missing and how to fix it."""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self)

    def frame(self):
        import pandas as pd

        return pd.DataFrame([{"check": c.item, "ok": "yes" if c.ok else "NO", "detail": c.detail}
                             for c in self])

    def _repr_html_(self) -> str:
        return cards.preflight(self)

    def __str__(self) -> str:
        return "\n".join(f"{'ok ' if c.ok else 'NO '} {c.item}: {c.detail}" for c in self)

    def __repr__(self) -> str:
        failed = [c for c in self if not c.ok]
        if not failed:
            return f"preflight: all {len(self)} checks ok"
        return f"preflight: {len(failed)} of {len(self)} checks failed: " + "; ".join(map(repr, failed))


@dataclass
class Reset:
    """What a facilitator's reset did: the flags it set back, flagd's restart, the new run."""

    flags: dict[str, str]  # flag -> the variant it was set back to
    release: str           # the demo release whose own defaults they are
    restart: str = ""      # how flagd restarted ("rollout, 2.1 s")
    run_id: str = ""       # the new run the next group starts in

    def __repr__(self) -> str:
        whose = f"demo {self.release}'s defaults"
        done = (f"set {', '.join(f'{k} = {v}' for k, v in self.flags.items())} back to {whose}"
                if self.flags else f"every flag was already at {whose}")
        run = f"; timeline cleared, new run {self.run_id}" if self.run_id else "; timeline cleared"
        return f"Lab reset: {done}; flagd restarted ({self.restart}){run}. Ready for the next group."

    def _repr_html_(self) -> str:
        return cards.reset(self, repr(self))


@dataclass
class TraceLogs:
    """All logs of one trace, oldest first (the lab's "Show surrounding logs"), or why there are none."""

    trace_id: str | None
    frame: object  # a pandas DataFrame: timestamp, loglevel, status, content, trace_id, span_id, service
    why: str = ""  # when empty: what was looked for and what to do
    link: str | None = None

    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        if not len(self.frame):
            return f"no logs of {self.trace_id or 'a failed trace'}: {self.why}"
        return f"{len(self.frame)} logs of trace {self.trace_id}, oldest first"

    def _repr_html_(self) -> str:
        return cards.trace_logs(self)


@dataclass
class NothingSent:
    """An announcement of a change already made (or already announced): no event, no step."""

    flag: str
    variant: str
    why: str  # the sentence: "cartFailure is already on, nothing sent"
    ok = True
    sent = False

    def summary(self) -> str:  # as a sent ChangeEvent's: one sentence
        return self.why

    __repr__ = summary

    def _repr_html_(self) -> str:
        return cards.card("change-event", self.why, ok=True)


@dataclass(frozen=True)
class AlreadyServed(Served):
    """change_flag's answer when the change was already made: flagd serves it on every pod, so
    nothing was sent, changed or restarted."""

    already = True

    @classmethod
    def of(cls, served: Served) -> "AlreadyServed":
        return cls(**{f.name: getattr(served, f.name) for f in fields(served)})

    def __repr__(self) -> str:
        cart = f"; {self.cart}" if getattr(self, "cart", None) else ""
        return f"{self.key} is already {self.variant}, nothing sent (flagd serves it{cart})"

    def _repr_html_(self) -> str:
        return cards.card("served", f"{self.key} is already {self.variant}, nothing sent",
                          [("flagd serves", self.variant), ("reason", self.reason)], ok=True,
                          note="no change event, no ConfigMap edit, no restart: the change was made before")


@dataclass
class Trace:
    """One failed trace's spans as a waterfall (the lab's "open with Distributed traces"), or why
    there is none."""

    trace_id: str | None
    spans: object  # a pandas DataFrame (labkit.dynatrace span frame)
    why: str = ""
    local: bool = False

    @property
    def link(self) -> str | None:
        return getattr(self.spans, "attrs", {}).get("link")

    @property
    def figure(self):
        from labkit import waterfall

        return waterfall.figure(self.spans, self.trace_id or "", local=self.local)

    def __repr__(self) -> str:
        if not len(self.spans):
            return f"no spans of {self.trace_id or 'a failed trace'}: {self.why}"
        failed = [f"{r.service} {r.name}" for r in self.spans.itertuples() if r.failed]
        return (f"trace {self.trace_id}: {len(self.spans)} spans"
                + (f", failed: {', '.join(failed)}" if failed else ""))

    def _repr_mimebundle_(self, include=None, exclude=None):
        if not len(self.spans):
            return {"text/html": cards.card("trace", f"No spans of {self.trace_id or 'a failed trace'}",
                                            ok=False, note=self.why, link=self.link),
                    "text/plain": repr(self)}
        import json

        figure = self.figure
        bundle = dict(figure._repr_mimebundle_(include=include, exclude=exclude) or {})
        if not bundle:  # no renderer here (a script, a test): the plotly mimetype a notebook draws
            bundle = {"application/vnd.plotly.v1+json": {**json.loads(figure.to_json()), "config": {}}}
        return {**bundle, "text/plain": repr(self)}


class OnVariant(str):
    """The variant that is the lab page's `on` on this demo release: a str (pass it on as the
    variant), shown as a sentence, not as the quoted '10%' a bare str shows."""

    def __new__(cls, variant: str, release: str, value=None):
        self = super().__new__(cls, variant)
        self.release, self.value = release, value
        return self

    def __reduce__(self):  # a copy (deepcopy, pickle) is the plain variant name
        return (str, (str(self),))

    def sentence(self) -> str:
        value = f" (cartFailure = {self.value})" if self.value is not None else ""
        return f"On demo {self.release} the lab page's `on` is the variant {str(self)}{value}."

    def _repr_pretty_(self, p, cycle) -> None:  # IPython's text/plain
        p.text(self.sentence())

    def _repr_html_(self) -> str:
        return cards.card("on-variant", f"The lab page's on: {str(self)}", note=self.sentence())
