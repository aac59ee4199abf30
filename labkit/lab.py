"""The workshop steps as one object over the cluster, Dynatrace and the shop, with the run's timeline.

`Lab` is a thin facade: each verb is a few lines over the module of its subject, which takes the
cluster, Dynatrace, the timeline or the settings it needs (never the Lab): `preflight` (the check's
rows), `serving` (the flags, what flagd serves, what the cart reads), `change_cycle` (event →
ConfigMap → restart → proof, roll back, reset) and `observed` (the waits, problems, logs, traces,
the runbook, change events, the verdict). The chart stays here: it draws the facade's own reads.

`connect()` gives the Lab that labkit.which's one rule chooses (a configured lab, a running local
lab, or a new one).
"""
from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

from labkit import cards, serving
from labkit.answers import (AlreadyServed, Check, NothingSent, OnVariant, Preflight,  # noqa: F401
                            Reset, Trace, TraceLogs)
from labkit import settings as names
from labkit.change_cycle import ChangeCycle
from labkit.cluster import DEFAULT_RESTART, RESTARTS  # noqa: F401 (labkit.widgets imports them from here)
from labkit.errors import LabError, Unreachable  # noqa: F401 (LabError: the tests' labmod.LabError)
from labkit.observed import Observed
from labkit.progress import Progress
from labkit.settings import Settings
from labkit.timeline import EVENT_SENT, FIRST_FAILURE, Timeline  # noqa: F401 (EVENT_SENT: as above)


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
        self._cycle = ChangeCycle(self.cluster, self.dynatrace, self.timeline, self._listeners)
        self._observed = Observed(self.dynatrace, self.timeline, settings)

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

    # --- the flags, what flagd serves, what the cart reads (labkit.serving) ----------------------
    def flags(self):
        """The live flags as a table: key, variants, default, description."""
        return serving.flags_table(self.cluster)

    def variants(self, flag: str = names.FLAG) -> list[str]:
        return list(self.cluster.flag_file().variants(flag))

    def served(self, flag: str = names.FLAG, context: dict | None = None):
        """What flagd serves for `flag` in `context` (e.g. {"targetingKey": "session-1"}); `.how` says
        whether targeting chose it (then another context may get another variant). For cartFailure,
        `.cart` says what the demo's cart reads (asked as it asks: typed, on port 8013)."""
        return serving.with_cart(self.cluster, self.cluster.served_value(flag, context), flag)

    def cart_reads(self, flag: str = names.FLAG):
        """What the demo's cart reads of `flag` now, asked as it asks (its release's typed call on 8013)."""
        return self.cluster.cart_reads(flag)

    def demo_release(self):
        """The demo release this lab runs (from the cart's image; else from cartFailure's variant types)."""
        return serving.demo_release(self.cluster, names.FLAG)

    def on_variant(self, flag: str = names.FLAG) -> str:
        """The variant that is the lab page's `on` on this release (3.0.0: '10%', 1 in 10 carts fail)."""
        return serving.on_variant(self.cluster, flag)

    def fix_flag_types(self, flag: str = names.FLAG, release=None):
        """Give `flag` the demo release's own variants (every other flag and field kept, `on` -> the
        release's lab_on_variant); `.undo()` puts it back. Restart flagd after (lab.restart_flagd())."""
        return self.cluster.fix_flag_types(flag, release)

    def layers(self, flag: str = names.FLAG, since=None):
        """The change through its three layers: the ConfigMap, every Ready flagd pod (OFREP), the cart
        (asked as it asks); with a platform token also the variant the cart itself evaluated, from its
        span events since the last change."""
        since = since or self._observed.since_change(timedelta(minutes=30))
        return serving.layers(self.cluster, self.dynatrace, self.settings.platform_token, flag, since)

    # --- the change cycle (labkit.change_cycle) ---------------------------------------------------
    def inform_dynatrace(self, variant: str, flag: str = names.FLAG, service: str = names.SERVICE,
                         old: str | None = None):
        """Step 1: the change event, sent before the change as the lab page says. A change already
        made (the ConfigMap says `variant`) or already announced sends nothing and records nothing."""
        return self._cycle.inform_dynatrace(variant, flag, service, old)

    def make_change(self, variant: str, flag: str = names.FLAG):
        """Step 2: the ConfigMap edit, that flag's defaultVariant only (no step when it already says so)."""
        return self._cycle.make_change(variant, flag)

    def restart_flagd(self, progress: Progress | None = None, timeout: float = 180,
                      how: str = DEFAULT_RESTART):
        """Step 3: flagd reads its flags only at start (init container copy), so restart it.

        how="rollout" (the default) keeps a Ready flagd pod throughout; how="scale" is the lab page's
        `kubectl scale deploy flagd --replicas=0` and back, with flagd down in between."""
        return self._cycle.restart_flagd(progress, timeout, how)

    def prove_served(self, variant: str, flag: str = names.FLAG, timeout: float = 30,
                     progress: Progress | None = None):
        """Ask each Ready flagd pod itself (OFREP) until every one serves `variant`."""
        return self._cycle.prove_served(variant, flag, timeout, progress)

    def change_flag(self, variant: str, flag: str = names.FLAG, service: str = names.SERVICE,
                    progress: Progress | None = None, send_event: bool = True,
                    restart: str = DEFAULT_RESTART):
        """Event → ConfigMap → restart (`restart`: "rollout" or "scale") → every pod serves it."""
        return self._cycle.change_flag(variant, flag, service, progress, send_event, restart)

    def roll_back(self, flag: str = names.FLAG, service: str = names.SERVICE,
                  progress: Progress | None = None, restart: str = DEFAULT_RESTART):
        """Put the flag back to what it was before this run changed it (default: off)."""
        return self._cycle.roll_back(flag, service, progress, restart)

    def reset(self, progress: Progress | None = None):
        """Facilitator's reset between groups: every flag back to the demo release's own default
        (the failures off; 3.0.0's loadGeneratorTraffic on: off would stop its load generator), a
        flag the release does not have to 'off'; flagd restarted, the timeline cleared and its new
        run begun with a "lab reset" step (so the verdict says the lab was reset)."""
        return self._cycle.reset(names.FLAG, progress)

    # --- traffic --------------------------------------------------------------------------------
    def generate_traffic(self, seconds: float = 60, rate: float = 5.0, progress: Progress | None = None,
                         stop: threading.Event | None = None, until_failures: int | None = None):
        """Add → view → empty the cart; only DELETE /api/cart exercises EmptyCart."""
        result = self.shop.run(seconds=seconds, rate=rate, progress=progress, stop=stop,
                               until_failures=until_failures)
        if result.first_failure_at and not self.timeline.in_cycle(FIRST_FAILURE):
            self.timeline.add(FIRST_FAILURE, note=result.summary(), at=result.first_failure_at)
        return result

    # --- what Dynatrace sees (labkit.observed) ----------------------------------------------------
    def since(self) -> datetime:
        """Start of this run's charts: 10 min before its first step, else the last 30 min."""
        return self._observed.since()

    def wait_for_error_logs(self, timeout: float = 300, service: str = names.SERVICE,
                            progress: Progress | None = None):
        return self._observed.wait_for_error_logs(timeout, service, progress)

    def wait_for_problem(self, timeout: float = 600, service: str = names.SERVICE,
                         progress: Progress | None = None):
        return self._observed.wait_for_problem(timeout, service, progress)

    def failed_requests(self, service: str = names.SERVICE, since: datetime | str | None = None,
                        resolution: str = "1m"):
        return self._observed.failed_requests(service, since, resolution)

    def problems(self, service: str = names.SERVICE, since: datetime | str = "now-1d"):
        return self._observed.problems(service, since)

    def error_logs(self, service: str = names.SERVICE, since="now-1h", limit: int = 100):
        return self._observed.error_logs(service, since, limit)

    def trace_logs(self, trace_id: str | None = None, service: str = names.SERVICE, since="now-1h"):
        """All logs of one trace, oldest first; by default the failed trace failed_trace() draws (one
        checkout took part in, else the newest error log's). An empty result says why (no error logs
        yet, or none of that trace) instead of failing."""
        return self._observed.trace_logs(trace_id, service, since)

    def failed_trace(self, trace_id: str | None = None, service: str = names.SERVICE, since="now-1h"):
        """The spans of one failed trace as a waterfall (checkout → … → EmptyCart); by default the
        trace of `service`'s newest error log. An empty result says why instead of failing."""
        return self._observed.failed_trace(trace_id, service, since)

    def runbook(self, service: str = names.SERVICE):
        """The Ops runbook the problem's description links, with its two charts (the error trend of
        the last 30 min; changes and problems of the last day on one chart)."""
        return self._observed.runbook(service)

    def change_events(self, service: str = names.SERVICE, since="now-2h"):
        return self._observed.change_events(service, since)

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
        return self._observed.judge(service, failed, flag)


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
