"""labkit ... (or python -m labkit ...): the lab's steps from a terminal.

Each subcommand is one `@command(...)` handler plus an optional `configure(parser)` for its
arguments; `main()` parses, runs the handler, and turns labkit errors into one line and an exit code
(0 done, 2 bad input, 1 failure, 130 interrupted). Heavy modules load inside the handlers.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass, replace
from typing import Callable

from labkit.errors import BadInput, LabError
from labkit.progress import printer, settle
from labkit.settings import FLAG
from labkit import cli_tenant


@dataclass
class Command:
    name: str
    help: str
    run: Callable[[argparse.Namespace], "int | None"]
    configure: Callable[[argparse.ArgumentParser], None]


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None] | None = None):
    """Register a subcommand: @command("name", "what it does", configure=add_args) def run(args)."""
    def register(run):
        COMMANDS[name] = Command(name, help, run, configure or (lambda parser: None))
        return run
    return register


# ---- shared helpers for handlers -------------------------------------------------------------------
def out(*parts) -> None:
    settle()  # a progress line still being rewritten ends first
    print(*parts, flush=True)


def err(*parts) -> None:
    settle()
    print(*parts, file=sys.stderr, flush=True)


def settings(args):
    """Settings from env/.env, with --namespace/--kubeconfig on top."""
    from labkit.settings import Settings

    from labkit.settings import check_namespace
    from labkit.which import which_lab

    s = which_lab(Settings.load(), start=False).settings
    changes = {}
    if getattr(args, "namespace", None):
        changes["namespace"] = check_namespace("--namespace", args.namespace)
    if getattr(args, "kubeconfig", None):
        changes["kubeconfig"] = args.kubeconfig
    return replace(s, **changes)


def dynatrace(args):
    from labkit.dynatrace import Dynatrace

    s = settings(args)
    if not s.has_tenant:
        raise LabError("No Dynatrace tenant is configured: set DT_URL and DT_PLATFORM_TOKEN (or "
                       "DT_API_TOKEN) in the environment or .env, or start the local lab: "
                       "python -m labkit sandbox")
    args.local_lab_note = s.local  # said after the output, so no one mistakes it for a tenant's data
    return Dynatrace(s)


def cluster(args):
    from labkit.cluster import Cluster

    return Cluster(settings(args))


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


# ---- sandbox --------------------------------------------------------------------------------------
def _sandbox_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", default=None,
                   help="where lab.env and kubeconfig are written (default $LABKIT_STATE_DIR or "
                        "~/.cache/labkit/local-lab, where labkit and the notebooks look for it)")
    p.add_argument("--bare-tenant", action="store_true", help="start the local tenant without the runbook, "
                   "pipeline and route getting-started has attendees make (rehearse it: labkit check, then "
                   "labkit tenant setup); also $LABKIT_BARE_TENANT=1")
    _release_arg(p)


def _release_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--release", default=None, help="the demo release the local lab imitates: 3.0.0 "
                   "(default, what the lab's unpinned chart installs) or 2.2.0 ($LABKIT_DEMO_RELEASE)")


def _choose_release(args) -> None:
    """--release wins over LABKIT_DEMO_RELEASE, for this process and the local lab it starts."""
    if getattr(args, "release", None):
        from labkit import releases

        os.environ["LABKIT_DEMO_RELEASE"] = releases.get(args.release).version


@command("sandbox", "run the local lab (Kubernetes API, flagd, shop, Dynatrace API) until Ctrl-C",
         _sandbox_args)
def cmd_sandbox(args) -> int:
    import signal
    import threading
    from pathlib import Path

    from labkit.which import default_state_dir, new_local_lab

    state_dir = Path(args.state_dir or default_state_dir()).resolve()
    stop = threading.Event()
    previous = {}

    def on_signal(signum, frame):
        stop.set()

    _choose_release(args)
    if args.bare_tenant:
        os.environ["LABKIT_BARE_TENANT"] = "1"  # read by LocalLab, as LABKIT_DEMO_RELEASE is
    lab = new_local_lab(state_dir)  # a lab already running there: StateDirBusy says so, nothing touched
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, on_signal)
    try:
        lab.start()
        if not stop.is_set():
            out(f"local lab ready: source {state_dir / 'lab.env'}")
            if lab.archive_note:
                out(f"  {lab.archive_note}")
            if lab.restored_flags:
                out(f"  flags restored from {state_dir / 'flagd-config.json'} (delete it to start from "
                    f"demo {lab.release.version}'s own flags)")
            out(f"  Kubernetes API  {lab.kube_server.url}   KUBECONFIG={lab.kubeconfig_path}")
            out("                  ConfigMap flagd-config, Deployment flagd, Services flagd (OFREP 8016), "
                "frontend-proxy")
            out(f"  demo shop       {lab.frontend_server.url}   (FRONTEND_URL)")
            out(f"  Dynatrace API   {lab.tenant_server.url}   (DT_URL; the local lab, not a real tenant)")
            out(f"  demo release    {lab.release.version}   (its cart reads {lab.release.cart_call})")
            out("  tenant setup    " + ("none: no runbook, pipeline or route (rehearse getting-started: "
                                      "labkit check, labkit tenant setup)" if lab.bare_tenant else
                                      "as getting-started leaves it: runbook, Log Errors pipeline, "
                                      "Critical Logs route"))
            out("Try: kubectl get pods; python -m labkit flags; "
                f"python -m labkit set cartFailure {lab.release.lab_on_variant}")
            out("Ctrl-C stops the local lab.")
        while not stop.wait(0.5):
            pass
    finally:
        try:
            lab.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    err("local lab stopped")
    return 0


# ---- flags ----------------------------------------------------------------------------------------
def _flags_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("flag", nargs="?", help="show only this flag")
    p.add_argument("--context", type=_context_arg, default=None, metavar="JSON",
                   help='evaluate in this context, e.g. \'{"targetingKey": "session-1"}\' (default: none)')


def _context_arg(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('expected a JSON object, e.g. {"targetingKey": "session-1"}')
    return value


@command("flags", "list the flags: variants, default variant, and what flagd serves", _flags_args)
def cmd_flags(args) -> int:
    from labkit.errors import Unreachable
    from labkit.flags import format_value

    k8s = cluster(args)
    ff = k8s.flag_file()
    flags = [ff.flag(args.flag)] if args.flag else ff.flags
    try:
        served = k8s.served_values(args.context)
        why = ""
    except Unreachable as exc:
        served, why = {}, str(exc)
    rows, stale, targeted = [], [], []
    for f in flags:
        variants = " ".join(f"{name}={format_value(v)}" for name, v in f.variants.items())
        s = served.get(f.key)
        shown = f"{s.variant} ({format_value(s.value)})" if s and s.variant else (
            (s.reason or "-") if s and s.reason == "DISABLED" else format_value(s.value) if s else "-")
        if f.has_targeting or (s and s.by_targeting):
            shown += " (targeting)"
            targeted.append(f.key)
        if s and s.reason not in ("TARGETING_MATCH", "DISABLED") and s.variant != f.default_variant:
            shown += " *"
            stale.append(f.key)
        row = [f.key, variants, f.default_variant or "-", shown]
        if args.verbose:
            row += [f.state, "yes" if f.has_targeting else "", f.description]
        rows.append(row)
    header = ["FLAG", "VARIANTS", "DEFAULT", "SERVED"]
    if args.verbose:
        header += ["STATE", "TARGETING", "DESCRIPTION"]
    out(table(rows, header))
    if targeted:
        out(f"(targeting) {', '.join(targeted)} ha{'s' if len(targeted) == 1 else 've'} targeting rules: the "
            f"default variant is not what every request gets; SERVED is for "
            f"{'context ' + json.dumps(args.context) if args.context else 'a request with no context'} "
            "(--context '{\"targetingKey\": ...}' to ask for another).")
    if stale:
        out(f"* flagd still serves an older default for {', '.join(stale)}: it loads the ConfigMap when its "
            "pod starts. Restart it: python -m labkit set FLAG VARIANT (restarts flagd).")
    if why:
        err(f"note: served values unknown: {why}")
    if any(f.key == FLAG for f in flags):
        _say_cart(k8s, FLAG, quiet_error=True)
    return 0


def _say_cart(k8s, flag: str, quiet_error: bool = False) -> int:
    """Say what the demo's cart reads of `flag` (asked as it asks): 1 when it reads its fallback."""
    from labkit.releases import FLAG

    if flag != FLAG:
        return 0  # the cart reads only cartFailure
    try:
        read = k8s.cart_reads(flag)
    except LabError as exc:
        if not quiet_error:
            raise
        err(f"note: what the cart reads is unknown: {exc}")
        return 0
    out(f"the cart (demo {read.release.version}, {read.release.cart_method} on flagd:8013): {read.summary}")
    return 1 if read.falls_back else 0


def _say_cart_spans(args, flag: str, since) -> None:
    """With a platform token: which variant the cart itself evaluated since `since` (its span events)."""
    from labkit.cart import spans_text
    from labkit.releases import FLAG

    if flag != FLAG or not settings(args).platform_token:
        return
    try:
        with dynatrace(args) as dt:
            out(f"the cart's own spans since the change: {spans_text(dt.cart_evaluations(since, flag))}")
    except LabError as exc:
        err(f"note: the cart's span events not read: {exc}")


# ---- set ------------------------------------------------------------------------------------------
RESTART_HELP = ("how flagd restarts to load the change: rollout (default: new pods start beside the old "
                "ones, so flagd never stops answering and no pod termination is waited for) or scale (the lab "
                "page's kubectl scale deploy flagd --replicas=0 and back; flagd answers nothing in between)")


def _set_args(p: argparse.ArgumentParser) -> None:
    from labkit.cluster import DEFAULT_RESTART, RESTARTS

    p.add_argument("flag", help="flag key, e.g. cartFailure")
    p.add_argument("variant", help="variant name, e.g. on, off, 25%%")
    p.add_argument("--no-restart", action="store_true", help="change the ConfigMap only")
    p.add_argument("--dry-run", action="store_true", help="print the diff; change nothing")
    p.add_argument("--no-event", action="store_true", help="do not send a change event to Dynatrace")
    p.add_argument("--service", default="cart", help="the service the change event is about (default cart)")
    p.add_argument("--restart", choices=RESTARTS, default=DEFAULT_RESTART, help=RESTART_HELP)
    p.add_argument("--how", dest="restart", choices=RESTARTS, default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)  # the option's old name
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for flagd (default 120)")


class _Run:
    """The lab's run as the notebooks keep it, so a change made here shows on their timeline and
    charts (a lab without a tenant has no charts: nothing is kept)."""

    def __init__(self, s):
        from labkit.timeline import Timeline

        self.timeline = Timeline(s.timeline_path()) if (s.local or s.has_tenant) else None

    @property
    def run_id(self) -> str | None:
        return self.timeline.run_id if self.timeline else None

    def add(self, kind: str, **step) -> None:
        if self.timeline is not None:
            self.timeline.add(kind, **step)


def _send_change_event(args, change, run: _Run) -> None:
    """Tell Dynatrace a change is coming, before it is applied (the lab's runtimeChange.sh)."""
    from labkit.timeline import EVENT_SENT

    if args.no_event:
        return
    if not settings(args).has_tenant:
        err("note: no Dynatrace tenant configured (DT_URL, DT_PLATFORM_TOKEN or DT_API_TOKEN): no change event sent "
            "(--no-event silences this)")
        return
    with dynatrace(args) as dt:
        event = dt.send_change_event(args.service, change.flag, change.new_variant, old=change.old_variant,
                                     run_id=run.run_id)
    run.add(EVENT_SENT, flag=change.flag, old=change.old_variant, new=change.new_variant, at=event.sent_at)
    out(f"change event sent: {event.summary()}")
    out(f"  open in Dynatrace: {event.link}")
    for warning in event.warnings:
        err(f"warning: {warning}")


@command("set", "set a flag's default variant, restart flagd and check every pod serves the new value",
         _set_args)
def cmd_set(args) -> int:
    from datetime import datetime, timezone

    started = datetime.now(timezone.utc)
    if not (0 < args.timeout <= 3600):  # also refuses nan and inf; before anything is touched
        raise BadInput(f"--timeout must be more than 0 and at most 3600 seconds; got {args.timeout:g}.")
    k8s = cluster(args)
    try:
        preview = k8s.set_default_variant(args.flag, args.variant, dry_run=True)  # validates; writes nothing
    except BadInput as exc:
        if args.flag == FLAG and args.variant == "on":  # the lab page's word, not every release's variant
            release = k8s.demo_release(FLAG, k8s.flag_file().variants(FLAG))[0]
            raise BadInput(f"{exc} On demo {release.version} the lab page's `on` is "
                           f"{release.lab_on_variant!r}: python -m labkit set {FLAG} {release.lab_on_variant}") from None
        raise
    if args.dry_run:
        out(preview.diff.rstrip("\n") if preview.changed else preview.summary())
        out("dry run: nothing changed")
        return 0
    run = _Run(settings(args))
    if not _apply(args, k8s, preview, run):
        return _say_cart(k8s, args.flag, quiet_error=True)
    if args.no_restart:
        out(f"flagd keeps serving the old value until it restarts: python -m labkit set {args.flag} "
            f"{args.variant} (without --no-restart), or kubectl scale deploy flagd --replicas=0 and back.")
        return 0
    _restart_and_prove(args, k8s, run)
    code = _say_cart(k8s, args.flag, quiet_error=True)  # what every pod serves is not yet what the cart reads
    _say_cart_spans(args, args.flag, started)
    return code


def _apply(args, k8s, preview, run: _Run) -> bool:
    """The event and the ConfigMap edit; False when flagd already serves the variant (nothing to do)."""
    from labkit.timeline import FLAG_APPLIED

    if preview.changed:
        _send_change_event(args, preview, run)
        change = k8s.set_default_variant(args.flag, args.variant)
        run.add(FLAG_APPLIED, flag=change.flag, old=change.old_variant, new=change.new_variant)
        out(f"changed ConfigMap {change.after.name}: {change.summary()}")
        if args.verbose:
            out(change.diff.rstrip("\n"))
        return True
    if k8s.serving_everywhere(args.flag, args.variant) is not None:
        out(f"{args.flag} is already {args.variant!r} and flagd serves it; nothing to do.")
        return False
    out(f"{args.flag} already defaults to {args.variant!r} in the ConfigMap, but flagd does not serve it yet.")
    return True


def _restart_and_prove(args, k8s, run: _Run) -> None:
    from labkit.timeline import FLAGD_RESTARTED, FLAGD_SERVING

    err(f"restarting flagd ({args.restart}):")
    result = k8s.restart_flagd(timeout=args.timeout, progress=printer(), how=args.restart)
    run.add(FLAGD_RESTARTED, note=f"{result.how}, {result.seconds:.1f} s")
    served = k8s.wait_served(args.flag, args.variant, timeout=min(30.0, args.timeout), progress=printer())
    run.add(FLAGD_SERVING, flag=args.flag, new=served.variant, note=repr(served.value))
    every = "its pod serves" if result.replicas == 1 else f"all {result.replicas} pods serve"
    out(f"flagd restarted ({result.how}, {result.replicas} pod(s), {result.seconds:.1f}s) and {every} "
        f"{args.flag} = {served}")


# ---- fix --------------------------------------------------------------------------------------------
def _fix_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("flag", nargs="?", default="cartFailure", help="the flag the cart reads (default cartFailure)")
    p.add_argument("--undo", action="store_true", help="put the flag back as it was before the fix")
    p.add_argument("--release", default=None,
                   help="the demo release whose variants to give it (default: the cart's, from its image)")
    p.add_argument("--restart", action="store_true",
                   help="restart flagd after (a rollout) and say what the cart reads then")


@command("fix", "give cartFailure the demo release's own variants so its cart can read it (--undo reverses)",
         _fix_args)
def cmd_fix(args) -> int:
    k8s = cluster(args)
    done = k8s.undo_flag_fix(args.flag) if args.undo else k8s.fix_flag_types(args.flag, args.release)
    out(done.summary)
    if not (args.restart and done.changed):
        return 0
    err("restarting flagd (rollout):")
    result = k8s.restart_flagd(timeout=120, progress=printer(), how="rollout")
    out(f"{result!r}")
    return _say_cart(k8s, args.flag, quiet_error=True)


# ---- Dynatrace and the shop (part 2) ----------------------------------------------------------------
def _frame(df, columns: list[str], empty: str) -> None:
    """A DataFrame as a plain table (UTC times to the second), or a sentence when it is empty."""
    if df is None or len(df) == 0:
        out(empty)
        return
    rows = []
    for _, r in df[columns].iterrows():
        rows.append(["-" if (v is None or v != v) else
                     (f"{v:%Y-%m-%d %H:%M:%S}" if hasattr(v, "strftime") else str(v)) for v in r])
    out(table(rows, [c.upper() for c in columns]))


def _event_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("service", help="the service the change is about, e.g. cart")
    p.add_argument("flag", help="the flag key, e.g. cartFailure")
    p.add_argument("value", help="the new value (variant), e.g. on")
    p.add_argument("--old", help="the value before the change (default: what the ConfigMap says now)")


@command("event", "send Dynatrace a change event (a drop-in for the lab's runtimeChange.sh)", _event_args)
def cmd_event(args) -> int:
    old = args.old
    if old is None:
        try:
            old = cluster(args).flag_file().flag(args.flag).default_variant
        except LabError:
            old = None  # the event is still worth sending without the old value
    with dynatrace(args) as dt:
        event = dt.send_change_event(args.service, args.flag, args.value, old=old)
    out(f"change event sent: {event.summary()}")
    out(f"  open in Dynatrace: {event.link}")
    for warning in event.warnings:
        err(f"warning: {warning}")
    return 0


def _since_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("service", nargs="?", default="cart", help="service name (default cart)")
    p.add_argument("--since", default=default, help=f"how far back: 30m, 2h, 1d (default {default})")


def _since(value: str) -> str:
    if not re.match(r"^\d{1,4}[mhdw]$", value):
        raise BadInput(f"--since {value[:40]!r} must be a number and a unit: 30m, 2h, 1d or 1w.")
    return f"now-{value}"


def _limit_arg(p: argparse.ArgumentParser, default: int, what: str) -> None:
    p.add_argument("--limit", type=int, default=default, help=f"show at most this many {what} (default {default})")


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= 1000:
        raise BadInput(f"--limit must be between 1 and 1000; got {limit}.")


def _shown(shown: int, total: int, what: str, capped: bool = False) -> None:
    """'20 of 35 error logs (the newest), --limit to see more' when a listing shows part."""
    if shown < total:
        out(f"{shown} of {'at least ' if capped else ''}{total} {what}, --limit to see more")


def _run_timeline(args):
    """The run's timeline (what the notebooks and `labkit set` record), or None when there is none."""
    from labkit.timeline import Timeline

    path = settings(args).timeline_path()
    return Timeline(path) if path.is_file() else None


@command("failures", "the service's failed requests per minute, from Dynatrace",
         lambda p: (_since_args(p, "30m"), p.add_argument("--resolution", default="1m",
                                                            help="slot size: 1m, 5m, 1h (default 1m)"),
                    _limit_arg(p, 30, "minutes (the newest)")))
def cmd_failures(args) -> int:
    from labkit import verdict

    if not re.match(r"^\d{1,4}[mhdw]$", args.resolution):
        raise BadInput(f"--resolution {args.resolution[:40]!r} must be a number and a unit: 1m, 5m, 1h or 1d.")
    _check_limit(args.limit)
    since = _since(args.since)
    timeline = _run_timeline(args)
    with dynatrace(args) as dt:
        df = dt.failed_requests(args.service, since=since, resolution=args.resolution)
        link = _service_link(dt, args.service)
        judged = (verdict.judge(dt, timeline, df, args.service)
                  if verdict.windows(timeline) is not None else None)
    shown = df.tail(args.limit)
    rows = [[f"{r.timestamp:%Y-%m-%d %H:%M}", str(r.requests) + (" (so far)" if r.partial else ""),
             str(r.failed), verdict.pct(r.failure_rate)] for r in shown.itertuples()]
    if rows:  # each row is the minute it covers (Dynatrace stamps a slot by its end)
        out(table(rows, ["MINUTE (UTC)", "REQUESTS", "FAILED", "RATE THAT MINUTE"]))
    else:
        out(f"no requests of {args.service} yet")
    _shown(len(shown), len(df), "minutes (the newest)")
    # the verdict's count over all of --since, named by its times (the verdict below: since the change)
    total = verdict.count(df, df["timestamp"].min(), None) if len(df) else verdict.Count(0, 0)
    span = f", {verdict.span_text(df['timestamp'].min(), total.upto)}" if total.upto is not None else ""
    out(f"{args.service}: {verdict.share_text(total, f'{args.service} requests', f'in the last {args.since}{span}')}")
    if judged is not None:
        out(f"verdict: {judged.text}" + (f"\n  ({judged.how})" if judged.how else ""))
    if link:
        out(f"the {args.service} service in Dynatrace: {link}")
    return 0


def _service_link(dt, service: str) -> str | None:
    """The service screen's link, when the token may look the service up (else no link)."""
    try:
        entity = dt.find_service(service)
    except LabError:
        return None
    return entity.link if entity else None


@command("problems", "problems affecting the service", lambda p: (
    _since_args(p, "1d"), _limit_arg(p, 20, "problems (the newest)"), cli_tenant.wait_arguments(p)))
def cmd_problems(args) -> int:
    _check_limit(args.limit)
    with dynatrace(args) as dt:
        df = cli_tenant.problems(dt, args.service, _since(args.since), wait=args.wait)
    shown = df.head(args.limit)
    _frame(shown, ["display_id", "status", "title", "start", "end", "affected"],
           f"no problems on {args.service} in the last {args.since}")
    _shown(len(shown), len(df), "problems (the newest)")
    for display_id, link in zip(shown["display_id"], shown["link"]):  # links last: they are long
        out(f"  {display_id}: {link}")
    return 0


@command("logs", "the service's error logs (status ERROR; Grail with DT_PLATFORM_TOKEN)",
         lambda p: (_since_args(p, "1h"), _limit_arg(p, 20, "error logs (the newest)")))
def cmd_logs(args) -> int:
    from labkit import verdict

    _check_limit(args.limit)
    with dynatrace(args) as dt:  # up to 1000 read, so the listing can say how many there are
        df = dt.error_logs(args.service, since=_since(args.since), limit=1000)
    link = df.attrs.get("link")
    shown = df.head(args.limit)
    if len(shown):  # one line per log: the first line of the message says what failed
        shown = shown.assign(content=shown["content"].str.split("\n").str[0].str.strip())
    _frame(shown, ["timestamp", "loglevel", "trace_id", "content"], f"no error logs of {args.service} "
           f"in the last {args.since}")
    _shown(len(shown), len(df), f"error logs in the last {args.since} (the newest)", capped=len(df) >= 1000)
    w = verdict.windows(_run_timeline(args))
    if w is not None and len(df):  # one error log per failed EmptyCart: the verdict's failures
        after = int((df["timestamp"].dt.tz_localize(None) >= w.change_at).sum())
        out(f"{after} of them since {w.label} at {w.change_at:%H:%M:%S} UTC")
    if link:
        out(f"in the Logs app: {link}")
    return 0


def _shop_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=1.0, help="how long (default 1)")
    p.add_argument("--rate", type=float, default=5.0, help="cart sessions per second (default 5; 0 = flat out)")


@command("shop", "cart traffic: add an item, view the cart, empty it; counts failures", _shop_args)
def cmd_shop(args) -> int:
    from labkit.shop import Shop

    if not 0 < args.minutes <= 60:
        raise BadInput("--minutes must be more than 0 and at most 60.")
    with printer() as progress:  # one line rewritten in place on a terminal
        result = Shop(settings(args)).run(seconds=args.minutes * 60, rate=args.rate, progress=progress)
    out(result.summary())
    for note in result.notes:
        err(f"note: {note}")
    for f in result.failures[:5]:
        out(f"  {f.timestamp:%H:%M:%S} {f.operation}: {f.detail}")
    return 1 if result.unreachable else 0


@command("check", "preflight: token scopes, the service, the tenant's pipeline, route and runbook, flagd, the flag",
         lambda p: p.add_argument("--flag", default="cartFailure"))
def cmd_check(args) -> int:
    from labkit.lab import Lab

    lab = Lab(settings(args))
    try:
        result = lab.check(flag=args.flag)
    finally:
        lab.close()
    out(str(result))
    return 0 if result.ok else 1


cli_tenant.register(command, settings, out)  # labkit tenant setup [--dry-run] [--annotate] [--undo]


# ---- the workbook -----------------------------------------------------------------------------------
def _lab_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=None, help="JupyterLab's port (default 8888, else a free one)")
    p.add_argument("--no-browser", action="store_true", help="only print the URL; open no browser")


@command("lab", "open the workbook in JupyterLab (starting the local lab when nothing is configured)",
         lambda p: (_lab_args(p), _release_arg(p)))
def cmd_lab(args) -> int:
    from labkit.workbook import open_jupyterlab

    _choose_release(args)
    return open_jupyterlab(port=args.port, open_browser=not args.no_browser)


@command("workshop", "run every notebook headless on the lab; write executed notebooks and HTML",
         lambda p: p.add_argument("--out", default="workshop-run", help="folder (default ./workshop-run)"))
def cmd_workshop(args) -> int:
    from labkit.workbook import run_workbook

    written = run_workbook(args.out, say=lambda m: err(m))
    out("\n".join(str(p) for p in written))
    return 0


# ---- entry point ----------------------------------------------------------------------------------
def _global_args(p: argparse.ArgumentParser, suppress: bool) -> None:
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    p.add_argument("--namespace", default=d(None), help="Kubernetes namespace (default: LAB_NAMESPACE or default)")
    p.add_argument("--kubeconfig", default=d(None), help="kubeconfig file (default: KUBECONFIG or ~/.kube/config)")
    p.add_argument("-v", "--verbose", action="count", default=d(0), help="more detail (never secrets)")


def build_parser() -> argparse.ArgumentParser:
    from labkit import __version__

    # The `labkit` command (pyproject's console script) names itself; else the module way.
    prog = "labkit" if sys.argv and sys.argv[0].rsplit("/", 1)[-1] == "labkit" else "python -m labkit"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"labkit {__version__}")
    _global_args(parser, suppress=False)
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS.values():
        sub = subs.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        _global_args(sub, suppress=True)  # global options also work after the command
        cmd.configure(sub)
    return parser


@command("room", "a workshop for a room on JupyterHub: `labkit room --seats N`, `labkit room rehearse ...` "
                 "(labkit room --help)", lambda p: None)
def cmd_room(args) -> int:  # reached only by `labkit room` alone; main() hands room's options over
    return _room([])


def _room(argv: list[str]) -> int:
    """The room is its own program above the CLI (labkit/room), loaded only for `labkit room`."""
    import importlib

    return importlib.import_module("labkit.room.cli").main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["room"]:
        try:
            return _room(argv[1:])
        except LabError as exc:
            err(f"error: {exc}")
            return exc.exit_code
    args = build_parser().parse_args(argv)  # argparse errors exit 2
    try:
        code = COMMANDS[args.command].run(args) or 0
        if getattr(args, "local_lab_note", False):
            err("(local lab: sandbox data, not a real tenant)")
        return code
    except LabError as exc:
        err(f"error: {exc}")
        if args.verbose:
            import traceback

            traceback.print_exc()
        return exc.exit_code
    except KeyboardInterrupt:
        err("interrupted")
        return 130
    except Exception as exc:  # a bug: one line, details with -v
        first = (str(exc).splitlines() or [""])[0][:200]
        err(f"error: unexpected {type(exc).__name__}: {first} (run with -v for details)")
        if args.verbose:
            import traceback

            traceback.print_exc()
        return 1
