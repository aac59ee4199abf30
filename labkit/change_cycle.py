"""The change cycle: tell Dynatrace, edit the ConfigMap, restart flagd, prove what it serves, roll back.

Each step is recorded on the run's timeline (labkit.timeline), so the chart, the verdict and a
restarted kernel know what this run did. `Lab`'s change verbs are one line each over a `ChangeCycle`;
it takes the cluster, Dynatrace and the timeline it works on (never the Lab itself).
"""
from __future__ import annotations

from typing import Callable

from labkit import cards
from labkit.answers import AlreadyServed, NothingSent, Reset
from labkit.cluster import DEFAULT_RESTART, RESTARTS
from labkit.errors import BadInput, LabError
from labkit.progress import Progress, quiet
from labkit.serving import demo_release, with_cart
from labkit.timeline import (EVENT_SENT, FLAG_APPLIED, FLAGD_RESTARTED, FLAGD_SERVING, LAB_RESET,
                             ROLLED_BACK, Timeline)


class ChangeCycle:
    """The workshop's change steps over one cluster, one tenant and the run's timeline."""

    def __init__(self, cluster, dynatrace, timeline: Timeline, listeners: list[Callable]):
        self.cluster = cluster
        self.dynatrace = dynatrace
        self.timeline = timeline
        self.listeners = listeners  # called as fn(flag, served) after each change_flag

    def inform_dynatrace(self, variant: str, flag: str, service: str, old: str | None = None):
        """Step 1: the change event, sent before the change as the lab page says. A change already
        made (the ConfigMap says `variant`) or already announced sends nothing and records nothing."""
        # An unknown flag or variant is refused here, before any event is sent.
        change = self.cluster.flag_file().set_default_variant(flag, variant)
        if change.old_variant == variant:
            return NothingSent(flag, variant, f"{flag} is already {variant}, nothing sent")
        old = change.old_variant if old is None else old
        if self.event_pending(flag, old, variant):
            sent = self.timeline.last(EVENT_SENT)
            return NothingSent(flag, variant, f"Dynatrace already knows {flag}: {old} → {variant} "
                                              f"(event sent {cards.when(sent.time)}), nothing sent")
        return self.announce(flag, old, variant, service)

    def announce(self, flag: str, old: str, variant: str, service: str):
        event = self.dynatrace.send_change_event(service, flag, variant, old=old,
                                                 run_id=self.timeline.run_id)
        self.timeline.add(EVENT_SENT, flag=flag, old=old, new=variant, at=event.sent_at)
        return event

    def make_change(self, variant: str, flag: str):
        """Step 2: the ConfigMap edit, that flag's defaultVariant only (no step when it already says so)."""
        change = self.cluster.set_default_variant(flag, variant)
        if change.old_variant != change.new_variant:
            self.timeline.add(FLAG_APPLIED, flag=flag, old=change.old_variant, new=change.new_variant)
        return change

    def restart_flagd(self, progress: Progress | None, timeout: float, how: str):
        """Step 3: flagd reads its flags only at start (init container copy), so restart it."""
        result = self.cluster.restart_flagd(timeout=timeout, progress=progress, how=how)
        self.timeline.add(FLAGD_RESTARTED, note=f"{result.how}, {result.seconds:.1f} s")
        return result

    def prove_served(self, variant: str, flag: str, timeout: float, progress: Progress | None):
        """Ask each Ready flagd pod itself (OFREP) until every one serves `variant`."""
        served = self.cluster.wait_served(flag, variant, timeout=timeout, progress=progress)
        self.timeline.add(FLAGD_SERVING, flag=flag, new=served.variant, note=repr(served.value))
        return served

    def change_flag(self, variant: str, flag: str, service: str, progress: Progress | None = None,
                    send_event: bool = True, restart: str = DEFAULT_RESTART):
        """Event → ConfigMap → restart (`restart`: "rollout" or "scale") → every pod serves it."""
        report = progress or quiet
        if restart not in RESTARTS:
            raise BadInput(f"Unknown restart {restart!r}; use 'rollout' (no moment without flagd) or "
                           "'scale' (the lab page's kubectl scale to 0 and back).")
        old = self.cluster.flag_file().set_default_variant(flag, variant).old_variant  # validates first
        if old == variant:
            served = self.cluster.serving_everywhere(flag, variant)
            if served is not None:
                report(f"{flag} is already {variant}, nothing sent", 1.0)  # no event, no restart
                return AlreadyServed.of(with_cart(self.cluster, served, flag))
        rollback = old != variant and variant == self.before_run(flag)
        self._tell(report, flag, old, variant, service, send_event)
        report(f"Changing {flag} to {variant} in the ConfigMap", 0.15)
        self.make_change(variant, flag)
        self.restart_flagd(lambda m, f=None: report(m, None if f is None else 0.2 + 0.7 * f),
                           timeout=180, how=restart)
        report("Asking flagd what it serves", 0.92)
        served = with_cart(self.cluster, self.prove_served(variant, flag, 30, None), flag)
        if rollback:  # back to what it was before this run changed it: the cycle's end
            self.timeline.add(ROLLED_BACK, flag=flag, new=served.variant)
        report(f"flagd serves {flag} = {served.variant}" + (f"; {served.cart}" if served.cart else ""), 1.0)
        for listener in self.listeners:
            listener(flag, served)
        return served

    def _tell(self, report, flag: str, old: str, variant: str, service: str, send_event: bool) -> None:
        """change_flag's first step: the event, unless the ConfigMap or an earlier event says it already."""
        if old == variant:  # the ConfigMap says it already; only the restart is missing
            report(f"{flag} is already {variant} in the ConfigMap; restarting flagd so it serves it", 0.05)
        elif send_event and self.event_pending(flag, old, variant):
            report(f"Dynatrace already knows: {flag} {old} → {variant} (event sent before)", 0.05)
        elif send_event:
            report(f"Telling Dynatrace: {flag} {old} → {variant}", 0.05)
            self.announce(flag, old, variant, service)

    def event_pending(self, flag: str, old: str, variant: str) -> bool:
        """True when inform_dynatrace() already announced exactly this change (no duplicate event)."""
        sent, applied = self.timeline.last(EVENT_SENT), self.timeline.last(FLAG_APPLIED)
        return bool(sent and sent.is_change_of(flag, old, variant)
                    and (applied is None or applied.time < sent.time))

    def roll_back(self, flag: str, service: str, progress: Progress | None = None,
                  restart: str = DEFAULT_RESTART):
        """Put the flag back to what it was before this run changed it (default: off)."""
        variants = list(self.cluster.flag_file().variants(flag))
        target = self.before_run(flag) or ("off" if "off" in variants else None)
        if target is None:
            raise LabError(f"No earlier value of {flag!r} is known in this run; "
                           f"choose one of {', '.join(variants)} with change_flag().")
        # change_flag records the rollback (and nothing at all when it was rolled back already)
        return self.change_flag(target, flag, service, progress=progress, restart=restart)

    def before_run(self, flag: str) -> str | None:
        """The variant `flag` had before this run first changed it (since its last roll-back)."""
        steps = self.timeline.steps
        rolled = [i for i, s in enumerate(steps) if s.kind == ROLLED_BACK and s.flag == flag]
        for step in steps[rolled[-1] + 1 if rolled else 0:]:
            if step.kind == FLAG_APPLIED and step.flag == flag and step.old != step.new:
                return step.old
        return None

    def reset(self, flag: str, progress: Progress | None = None):
        """Lab.reset(): every flag at the demo release's resting variant (`flag` tells the release), flagd
        restarted, the timeline cleared and its new run begun with a "lab reset" step.

        flagd restarts even when no flag changed: a ConfigMap edited by hand (kubectl, no restart)
        is not what flagd serves, and only a restart makes the two one (the next group starts on
        what the ConfigMap says)."""
        live = self.cluster.flag_file()
        release = demo_release(self.cluster, flag)
        resting = release.resting_variants()
        changed = {}
        for f in live.flags:
            target = resting.get(f.key)
            if target not in f.variants:  # a flag the release lacks, or whose default was edited out
                target = "off"
            if target in f.variants and f.default_variant != target:
                self.cluster.set_default_variant(f.key, target)
                changed[f.key] = target
        restarted = self.cluster.restart_flagd(progress=progress, how=DEFAULT_RESTART)  # the old run is over
        self.timeline.clear()
        back = ", ".join(f"{k} = {v}" for k, v in changed.items()) or "none changed"
        self.timeline.add(LAB_RESET, note=f"every flag at demo {release.version}'s defaults ({back})")
        return Reset(changed, release.version, f"{restarted.how}, {restarted.seconds:.1f} s",
                     self.timeline.run_id)
