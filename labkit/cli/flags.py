"""Flags and changes: `labkit flags` (what the flag file says and flagd serves), `labkit set` (the
lab's change: event, ConfigMap, flagd restarted and proven), `labkit fix` (the release's own variants)
and `labkit event` (a change event alone, the lab's runtimeChange.sh)."""
from __future__ import annotations

import argparse
import json

from labkit.cli.common import cluster, command, dynatrace, err, out, settings, table
from labkit.errors import BadInput, LabError
from labkit.progress import printer
from labkit.settings import FLAG


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


# ---- event ----------------------------------------------------------------------------------------
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
