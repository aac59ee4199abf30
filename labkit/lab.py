"""The workshop steps as one object over the cluster, Dynatrace and the shop, with the run's timeline.

`connect()` gives the Lab that labkit.which's one rule chooses (a configured lab, a running local
lab, or a new one).
"""
from __future__ import annotations

import dataclasses
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

from labkit import cards, releases
from labkit.answers import (AlreadyServed, Check, NothingSent, OnVariant, Preflight,  # noqa: F401
                            Reset, Trace, TraceLogs)
from labkit import settings as names
from labkit.cluster import DEFAULT_RESTART, RESTARTS
from labkit.errors import BadInput, LabError, Unreachable
from labkit.flags import format_value
from labkit.progress import Progress, quiet
from labkit.settings import Settings
from labkit.timeline import (ERROR_LOGS, EVENT_SENT, FIRST_FAILURE, FLAG_APPLIED, FLAGD_RESTARTED,
                             FLAGD_SERVING, LAB_RESET, PROBLEM_OPENED, ROLLED_BACK, Timeline, now)


class Lab:
    """The lab: the workshop steps as methods, each recorded on the timeline."""

    def __init__(self, settings: Settings, local_lab=None, timeline: Timeline | None = None):
        from labkit.cluster import Cluster
        from labkit.dynatrace import Dynatrace
        from labkit.shop import Shop

        self.settings = settings
        self._local_lab = local_lab  # only when this process started the local lab
        self.cluster = Cluster(settings)
        self.dynatrace = Dynatrace(settings)
        self.shop = Shop(settings)
        # The run is kept with the lab, so 02, 03 and a restarted kernel see what 01 did.
        self.timeline = timeline or Timeline(settings.timeline_path())
        self._listeners: list[Callable] = []  # called as fn(flag, served) after each change_flag

    def on_change(self, listener: Callable) -> None:
        """Call listener(flag, served) after every change of a flag made through this lab."""
        self._listeners.append(listener)

    # --- where we are -----------------------------------------------------------------------
    @property
    def local(self) -> bool:
        return self.settings.local

    def where(self) -> str:
        return self.settings.where()

    def __repr__(self) -> str:
        return f"<Lab: {self.where()}, run {self.timeline.run_id}>"

    def _repr_html_(self) -> str:
        return cards.lab(self.where(), self.timeline.run_id)

    def close(self) -> None:
        self.dynatrace.close()
        if self._local_lab is not None:
            self._local_lab.stop()
            self._local_lab = None

    # --- preflight ----------------------------------------------------------------------------
    def check(self, service: str = names.SERVICE, flag: str = names.FLAG) -> Preflight:
        """Tenant and cluster, each item with what to do when it fails (labkit.preflight's rows)."""
        from labkit import preflight

        return preflight.check(self, service, flag)

    def prepare_tenant(self, dry_run: bool = False, annotate: bool = False, progress: Progress | None = None):
        """The tenant's half as the lab page's UI steps make it: what is missing of the runbook notebook,
        the pipeline and the route (labkit.tenant.setup); `annotate` links the runbook from the cart pod."""
        from labkit.tenant import setup

        return setup.setup(self.dynatrace, self.cluster, dry_run=dry_run, annotate=annotate, progress=progress)

    def undo_tenant(self):
        """Remove what prepare_tenant() made (and nothing else); says what it left."""
        from labkit.tenant import setup

        return setup.undo(self.dynatrace)

    # --- the change ---------------------------------------------------------------------------
    def flags(self):
        """The live flags as a table: key, variants, default, description."""
        from labkit import tables

        rows = []
        for f in self.cluster.flag_file().flags:
            rows.append({"flag": f.key, "variants": ", ".join(f"{k}={v}" for k, v in f.variants.items()),
                         "default": f.default_variant, "description": f.description})
        return tables.Flags(rows, columns=["flag", "variants", "default", "description"])

    def variants(self, flag: str = names.FLAG) -> list[str]:
        return list(self.cluster.flag_file().variants(flag))

    def served(self, flag: str = names.FLAG, context: dict | None = None):
        """What flagd serves for `flag` in `context` (e.g. {"targetingKey": "session-1"}); `.how` says
        whether targeting chose it (then another context may get another variant). For cartFailure,
        `.cart` says what the demo's cart reads (asked as it asks: typed, on port 8013)."""
        return self._with_cart(self.cluster.served_value(flag, context), flag)

    def _with_cart(self, served, flag: str):
        """`served` with what the cart reads of `flag` (only cartFailure: the flag the cart reads)."""
        if flag != releases.FLAG or served is None:
            return served
        try:
            read = self.cluster.cart_reads(flag)
        except LabError as exc:
            read = f"the cart: {exc}"
        return dataclasses.replace(served, cart=read)

    def cart_reads(self, flag: str = names.FLAG):
        """What the demo's cart reads of `flag` now, asked as it asks (its release's typed call on 8013)."""
        return self.cluster.cart_reads(flag)

    def demo_release(self):
        """The demo release this lab runs (from the cart's image; else from cartFailure's variant types)."""
        return self.cluster.demo_release(names.FLAG, self._variants_or_none(names.FLAG))[0]

    def on_variant(self, flag: str = names.FLAG) -> str:
        """The variant that is the lab page's `on` on this release (3.0.0: '10%', 1 in 10 carts fail)."""
        variants = self._variants_or_none(flag)
        release = self.cluster.demo_release(flag, variants)[0]
        on = release.lab_on_variant if release.lab_on_variant in variants or "on" not in variants else "on"
        return OnVariant(on, release.version, format_value(variants[on]) if on in variants else None)

    def _variants_or_none(self, flag: str) -> dict:
        try:
            return self.cluster.flag_file().variants(flag)
        except BadInput:
            return {}

    def fix_flag_types(self, flag: str = names.FLAG, release=None):
        """Give `flag` the demo release's own variants (every other flag and field kept, `on` -> the
        release's lab_on_variant); `.undo()` puts it back. Restart flagd after (lab.restart_flagd())."""
        return self.cluster.fix_flag_types(flag, release)

    def layers(self, flag: str = names.FLAG, since=None):
        """The change through its three layers: the ConfigMap, every Ready flagd pod (OFREP), the cart
        (asked as it asks); with a platform token also the variant the cart itself evaluated, from its
        span events since the last change."""
        from labkit import cart

        live = self.cluster.flag_file().flag(flag)
        pods = self.cluster.served_by_ready_pods(flag)
        try:
            read = self.cluster.cart_reads(flag) if flag == releases.FLAG else None
        except LabError as exc:
            read = f"unknown: {exc}"
        spans = None
        if flag == releases.FLAG:
            since = since or self._since_change(timedelta(minutes=30))
            spans = self._cart_spans(flag, since)
        return cart.Layers(flag, live.default_variant, live.default_value, pods, read, spans)

    def _cart_spans(self, flag: str, since):
        """The cart's own evaluations (a DataFrame), or why they are not read."""
        if not self.settings.platform_token:
            return "not read: span events need a platform token (DT_PLATFORM_TOKEN)"
        try:
            return self.dynatrace.cart_evaluations(since, flag)
        except LabError as exc:
            return f"not read: {exc}"

    def inform_dynatrace(self, variant: str, flag: str = names.FLAG, service: str = names.SERVICE,
                         old: str | None = None):
        """Step 1: the change event, sent before the change as the lab page says. A change already
        made (the ConfigMap says `variant`) or already announced sends nothing and records nothing."""
        # An unknown flag or variant is refused here, before any event is sent.
        change = self.cluster.flag_file().set_default_variant(flag, variant)
        if change.old_variant == variant:
            return NothingSent(flag, variant, f"{flag} is already {variant}, nothing sent")
        old = change.old_variant if old is None else old
        if self._event_pending(flag, old, variant):
            sent = self.timeline.last(EVENT_SENT)
            return NothingSent(flag, variant, f"Dynatrace already knows {flag}: {old} → {variant} "
                                              f"(event sent {cards.when(sent.time)}), nothing sent")
        return self._announce(flag, old, variant, service)

    def _announce(self, flag: str, old: str, variant: str, service: str):
        event = self.dynatrace.send_change_event(service, flag, variant, old=old,
                                                 run_id=self.timeline.run_id)
        self.timeline.add(EVENT_SENT, flag=flag, old=old, new=variant, at=event.sent_at)
        return event

    def make_change(self, variant: str, flag: str = names.FLAG):
        """Step 2: the ConfigMap edit, that flag's defaultVariant only (no step when it already says so)."""
        change = self.cluster.set_default_variant(flag, variant)
        if change.old_variant != change.new_variant:
            self.timeline.add(FLAG_APPLIED, flag=flag, old=change.old_variant, new=change.new_variant)
        return change

    def restart_flagd(self, progress: Progress | None = None, timeout: float = 180,
                      how: str = DEFAULT_RESTART):
        """Step 3: flagd reads its flags only at start (init container copy), so restart it.

        how="rollout" (the default) keeps a Ready flagd pod throughout; how="scale" is the lab page's
        `kubectl scale deploy flagd --replicas=0` and back, with flagd down in between."""
        result = self.cluster.restart_flagd(timeout=timeout, progress=progress, how=how)
        self.timeline.add(FLAGD_RESTARTED, note=f"{result.how}, {result.seconds:.1f} s")
        return result

    def prove_served(self, variant: str, flag: str = names.FLAG, timeout: float = 30,
                     progress: Progress | None = None):
        """Ask each Ready flagd pod itself (OFREP) until every one serves `variant`."""
        served = self.cluster.wait_served(flag, variant, timeout=timeout, progress=progress)
        self.timeline.add(FLAGD_SERVING, flag=flag, new=served.variant, note=repr(served.value))
        return served

    def change_flag(self, variant: str, flag: str = names.FLAG, service: str = names.SERVICE,
                    progress: Progress | None = None, send_event: bool = True,
                    restart: str = DEFAULT_RESTART):
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
                return AlreadyServed.of(self._with_cart(served, flag))
        rollback = old != variant and variant == self._before_run(flag)
        if old == variant:  # the ConfigMap says it already; only the restart is missing
            report(f"{flag} is already {variant} in the ConfigMap; restarting flagd so it serves it", 0.05)
        elif send_event and self._event_pending(flag, old, variant):
            report(f"Dynatrace already knows: {flag} {old} → {variant} (event sent before)", 0.05)
        elif send_event:
            report(f"Telling Dynatrace: {flag} {old} → {variant}", 0.05)
            self._announce(flag, old, variant, service)
        report(f"Changing {flag} to {variant} in the ConfigMap", 0.15)
        self.make_change(variant, flag)
        self.restart_flagd(progress=lambda m, f=None: report(m, None if f is None else 0.2 + 0.7 * f),
                           how=restart)
        report("Asking flagd what it serves", 0.92)
        served = self._with_cart(self.prove_served(variant, flag), flag)
        if rollback:  # back to what it was before this run changed it: the cycle's end
            self.timeline.add(ROLLED_BACK, flag=flag, new=served.variant)
        report(f"flagd serves {flag} = {served.variant}" + (f"; {served.cart}" if served.cart else ""), 1.0)
        for listener in self._listeners:
            listener(flag, served)
        return served

    def _event_pending(self, flag: str, old: str, variant: str) -> bool:
        """True when inform_dynatrace() already announced exactly this change (no duplicate event)."""
        sent, applied = self.timeline.last(EVENT_SENT), self.timeline.last(FLAG_APPLIED)
        return bool(sent and sent.is_change_of(flag, old, variant)
                    and (applied is None or applied.time < sent.time))

    # --- traffic and what Dynatrace sees -------------------------------------------------------
    def generate_traffic(self, seconds: float = 60, rate: float = 5.0, progress: Progress | None = None,
                         stop: threading.Event | None = None, until_failures: int | None = None):
        """Add → view → empty the cart; only DELETE /api/cart exercises EmptyCart."""
        result = self.shop.run(seconds=seconds, rate=rate, progress=progress, stop=stop,
                               until_failures=until_failures)
        if result.first_failure_at and not self.timeline.in_cycle(FIRST_FAILURE):
            self.timeline.add(FIRST_FAILURE, note=result.summary(), at=result.first_failure_at)
        return result

    def since(self) -> datetime:
        """Start of this run's charts: 10 min before its first step, else the last 30 min."""
        if self.timeline.steps:
            return self.timeline.steps[0].time - timedelta(minutes=10)
        return now() - timedelta(minutes=30)

    def _since_change(self, otherwise: timedelta) -> datetime:
        """What a wait looks at: from the last flag change of this run, else the last `otherwise`."""
        change = self.timeline.last(FLAG_APPLIED)
        return change.time if change else now() - otherwise

    def wait_for_error_logs(self, timeout: float = 300, service: str = names.SERVICE,
                            progress: Progress | None = None):
        from labkit import tables

        logs = tables.shown_as(tables.Logs, self.dynatrace.wait_for_error_logs(
            service, since=self._since_change(timedelta(minutes=30)), timeout=timeout, progress=progress))
        if not self.timeline.in_cycle(ERROR_LOGS) and len(logs):
            self.timeline.add(ERROR_LOGS, note=f"{len(logs)} error logs", at=logs["timestamp"].min())
        return logs

    def wait_for_problem(self, timeout: float = 600, service: str = names.SERVICE,
                         progress: Progress | None = None):
        from labkit import tables
        from labkit.tenant.check import require_problem_possible

        require_problem_possible(self.dynatrace)  # a wait that cannot end says why at once
        found = tables.shown_as(tables.Problems, self.dynatrace.wait_for_problem(
            service, since=self._since_change(timedelta(hours=1)), timeout=timeout, progress=progress))
        if not self.timeline.in_cycle(PROBLEM_OPENED):
            self._record_problem(found)
        return self._described(found)

    def _record_problem(self, found) -> None:
        """The cycle's "problem opened" step: a problem no earlier step named. Davis dates a problem
        from the first error log it groups, which can be a stray one from before this change (a quick
        on/off earlier); then the step stands at this cycle's first error log, the date in its note."""
        known = {s.note.split(":")[0] for s in self.timeline.steps if s.kind == PROBLEM_OPENED}
        fresh = found[~found["display_id"].isin(known)]
        if not len(fresh):
            return
        first = fresh.sort_values("start").iloc[0]
        start, at = self.timeline.cycle_start(), first["start"]
        note = f"{first['display_id']}: {first['title']}"
        if start is not None and at < start:
            errors = self.timeline.in_cycle(ERROR_LOGS)
            at = errors.time if errors else now()
            note += f" (Davis dates it from {cards.when(first['start'])}, an error log before this change)"
        self.timeline.add(PROBLEM_OPENED, note=note, at=at)

    def failed_requests(self, service: str = names.SERVICE, since: datetime | str | None = None,
                        resolution: str = "1m"):
        return self.dynatrace.failed_requests(service, since=since or self.since(), resolution=resolution)

    def problems(self, service: str = names.SERVICE, since: datetime | str = "now-1d"):
        from labkit import tables

        return self._described(tables.shown_as(tables.Problems, self.dynatrace.problems(service, since=since)))

    def _described(self, found):
        """The problems with their descriptions (01's table as complete as 02's)."""
        found["description"] = found["problem_id"].map(self._descriptions(found["problem_id"]))
        return found

    def _descriptions(self, problem_ids) -> dict[str, str]:
        """The problems' descriptions (with the runbook link) where Grail can tell; none without a
        platform token or when the query fails (the problems themselves still show)."""
        if not len(problem_ids) or not self.settings.platform_token:
            return {}
        try:
            return self.dynatrace.problem_descriptions(list(problem_ids))
        except LabError:
            return {}

    def error_logs(self, service: str = names.SERVICE, since="now-1h", limit: int = 100):
        from labkit import tables

        return tables.shown_as(tables.Logs, self.dynatrace.error_logs(service, since=since, limit=limit))

    def trace_logs(self, trace_id: str | None = None, service: str = names.SERVICE, since="now-1h"):
        """All logs of one trace, oldest first; by default the failed trace failed_trace() draws (one
        checkout took part in, else the newest error log's). An empty result says why (no error logs
        yet, or none of that trace) instead of failing."""
        from labkit import tables

        if trace_id is None:
            trace_id = self._failed_trace_id(service, since)
            if trace_id is None:
                why = (f"no error logs of {service!r} {_ago(since)} carry a trace id, so there is no "
                       "failed trace to follow: introduce the change and send traffic first "
                       "(01-introduce-change), then run this again")
                return TraceLogs(None, tables.Logs(columns=["timestamp", "loglevel", "content"]), why)
        logs = self.dynatrace.logs_for_trace(trace_id)
        why = "" if len(logs) else (f"Dynatrace has no logs of trace {trace_id} in the last day; logs "
                                    "arrive a little after the request: run this again in a minute")
        return TraceLogs(trace_id, logs, why, link=self.dynatrace.trace_link(trace_id))

    def _failed_trace_id(self, service: str, since) -> str | None:
        """The trace of one of `service`'s newest error logs: one that checkout took part in (the
        review page's trace: an order placed, then EmptyCart failed), else the newest."""
        errors = self.error_logs(service, since=since, limit=20)
        ids = [str(t) for t in errors["trace_id"].fillna("") if str(t)] if len(errors) else []
        if not ids:
            return None
        try:
            through = self.dynatrace.traces_through(ids, "checkout")
        except LabError:  # no spans to ask: the newest error log's trace
            through = set()
        return next((t for t in ids if t in through), ids[0])

    def failed_trace(self, trace_id: str | None = None, service: str = names.SERVICE, since="now-1h"):
        """The spans of one failed trace as a waterfall (checkout → … → EmptyCart); by default the
        trace of `service`'s newest error log. An empty result says why instead of failing."""
        import pandas as pd

        if trace_id is None:
            trace_id = self._failed_trace_id(service, since)
            if trace_id is None:
                return Trace(None, pd.DataFrame(columns=["start", "failed"]),
                             f"no error logs of {service!r} {_ago(since)} carry a trace id: introduce "
                             "the change and send traffic first (01-introduce-change)", self.local)
        try:
            spans = self.dynatrace.trace_spans(trace_id)
        except LabError as exc:  # no platform token, or a tenant (or local lab) without spans
            return Trace(trace_id, pd.DataFrame(columns=["start", "failed"]), str(exc), self.local)
        why = "" if len(spans) else (f"Dynatrace has no spans of trace {trace_id} in the last day yet: "
                                     "spans arrive a little after the request; run this again in a minute")
        return Trace(trace_id, spans, why, self.local)

    def runbook(self, service: str = names.SERVICE):
        """The Ops runbook the problem's description links, with its two charts (the error trend of
        the last 30 min; changes and problems of the last day on one chart)."""
        from labkit import runbook

        problems = self.problems(service, since="now-1d")
        linked = [(runbook.runbook_link(r["description"]), r) for _, r in problems.iterrows()]
        link, row = next(((url, r) for url, r in linked if url), (None, None))
        named = f"{row['display_id']} {row['title']}" if row is not None else ""
        return runbook.Runbook(link, named, self.failed_requests(service, since="now-30m"),
                               self.change_events(service, since="now-1d"), problems, service)

    def change_events(self, service: str = names.SERVICE, since="now-2h"):
        from labkit import tables

        return tables.shown_as(tables.ChangeEvents, self.dynatrace.change_events(service, since=since))

    def chart(self, service: str = names.SERVICE, since: datetime | str | None = None, *,
              errors: list | None = None):
        """Failed requests and failure rate, change events marked, problems shaded.

        With `errors` (a list), a part that fails to load is left out and its error appended, so a
        live chart keeps drawing what it has."""
        from labkit import charts

        since = since or self.since()

        def part(fetch):
            if errors is None:
                return fetch(service, since)
            try:
                return fetch(service, since)
            except Exception as exc:  # noqa: BLE001 - shown under the chart by the caller
                errors.append(exc)
                return None

        failed = part(self.failed_requests)
        return charts.failures_figure(
            failed, events=part(self.change_events), problems=part(self.problems),
            timeline=self.timeline, service=service, local=self.local,
            judged=part(lambda s, _since: self._judge(s, failed)))

    def verdict(self, service: str = names.SERVICE, flag: str = names.FLAG):
        """Failure rate before the change against after it (the chart's subtitle says the same)."""
        return self._judge(service, self.failed_requests(service, self.since()), flag)

    def _judge(self, service: str, failed, flag: str = names.FLAG):
        from labkit import verdict

        return verdict.judge(self.dynatrace, self.timeline, failed, service, flag)

    # --- roll back and reset --------------------------------------------------------------------
    def roll_back(self, flag: str = names.FLAG, service: str = names.SERVICE,
                  progress: Progress | None = None, restart: str = DEFAULT_RESTART):
        """Put the flag back to what it was before this run changed it (default: off)."""
        target = self._before_run(flag) or ("off" if "off" in self.variants(flag) else None)
        if target is None:
            raise LabError(f"No earlier value of {flag!r} is known in this run; "
                           f"choose one of {', '.join(self.variants(flag))} with change_flag().")
        # change_flag records the rollback (and nothing at all when it was rolled back already)
        return self.change_flag(target, flag, service, progress=progress, restart=restart)

    def _before_run(self, flag: str) -> str | None:
        """The variant `flag` had before this run first changed it (since its last roll-back)."""
        steps = self.timeline.steps
        rolled = [i for i, s in enumerate(steps) if s.kind == ROLLED_BACK and s.flag == flag]
        for step in steps[rolled[-1] + 1 if rolled else 0:]:
            if step.kind == FLAG_APPLIED and step.flag == flag and step.old != step.new:
                return step.old
        return None

    def reset(self, progress: Progress | None = None):
        """Facilitator's reset between groups: every flag back to the demo release's own default
        (the failures off; 3.0.0's loadGeneratorTraffic on: off would stop its load generator), a
        flag the release does not have to 'off'; flagd restarted, the timeline cleared and its new
        run begun with a "lab reset" step (so the verdict says the lab was reset).

        flagd restarts even when no flag changed: a ConfigMap edited by hand (kubectl, no restart)
        is not what flagd serves, and only a restart makes the two one (the next group starts on
        what the ConfigMap says)."""
        live = self.cluster.flag_file()
        release = self.demo_release()
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


def _ago(since) -> str:
    """'in the last hour' for 'now-1h', else 'since <time>'."""
    text = str(since)
    words = {"now-1h": "in the last hour", "now-1d": "in the last day", "now-2h": "in the last 2 hours"}
    return words.get(text, f"since {text}")


def connect(settings: Settings | None = None, *, state_dir: str | Path | None = None,
            start_local: bool = True, timings=None) -> Lab:
    """The lab to work on, as labkit.which's one rule chooses it:

    1. a lab configured in the environment or .env (DT_URL + a token, or a KUBECONFIG);
    2. else a running local lab (its lab.env in the state dir): attach to it;
    3. else start the local lab inside this process (stopped by lab.close() or at exit), with its
       lab.env in the state dir, so the other notebooks' kernels and terminals attach to it.
    """
    import atexit

    from labkit.which import which_lab

    choice = which_lab(settings, state_dir=state_dir, start=start_local, timings=timings)
    if choice.how == "none":
        raise Unreachable("No tenant is configured (DT_URL with DT_PLATFORM_TOKEN or DT_API_TOKEN) "
                          "and no local lab is running. Start one with: python -m labkit sandbox")
    if choice.local_lab is not None:
        atexit.register(choice.close)
    from labkit.kernel import install_hooks

    install_hooks()  # in a kernel: labkit errors as sentences (also where PYTHONSTARTUP was not set)
    return Lab(choice.settings, local_lab=choice.local_lab)
