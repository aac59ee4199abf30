"""python -m labkit ...: the lab's steps from a terminal.

Each subcommand is one `@command(...)` handler plus an optional `configure(parser)` for its
arguments; `main()` parses, runs the handler, and turns labkit errors into one line and an exit code
(0 done, 2 bad input, 1 failure, 130 interrupted). Heavy modules load inside the handlers.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from dataclasses import dataclass
from typing import Callable

from labkit.errors import BadInput, LabError

DEFAULT_STATE_DIR = ".labkit/local-lab"


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
    print(*parts, flush=True)


def err(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def settings(args):
    """Settings from env/.env, with --namespace/--kubeconfig on top."""
    from labkit.settings import Settings

    s = Settings.load()
    changes = {}
    if getattr(args, "namespace", None):
        if not re.match(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", args.namespace):
            raise BadInput(f"--namespace {args.namespace[:70]!r} is not a Kubernetes namespace name.")
        changes["namespace"] = args.namespace
    if getattr(args, "kubeconfig", None):
        changes["kubeconfig"] = args.kubeconfig
    return dataclasses.replace(s, **changes)


def cluster(args):
    from labkit.cluster import Cluster

    return Cluster(settings(args))


def progress_printer(prefix: str = "  "):
    """A progress(message, fraction) callback writing plain lines to stderr (repeats skipped)."""
    last = [None]

    def progress(message: str, fraction: float | None = None) -> None:
        if message == last[0]:
            return
        last[0] = message
        pct = f"{fraction * 100:3.0f}% " if fraction is not None else "     "
        err(f"{prefix}{pct}{message}")
    return progress


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


# ---- sandbox --------------------------------------------------------------------------------------
def _sandbox_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                   help=f"where lab.env and kubeconfig are written (default ./{DEFAULT_STATE_DIR})")


@command("sandbox", "run the local lab (Kubernetes API, flagd, shop, Dynatrace API) until Ctrl-C",
         _sandbox_args)
def cmd_sandbox(args) -> int:
    import signal
    import threading
    from pathlib import Path

    from labkit.sandbox import LocalLab

    state_dir = Path(args.state_dir).resolve()
    stop = threading.Event()
    previous = {}

    def on_signal(signum, frame):
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, on_signal)
    lab = LocalLab(state_dir)
    try:
        lab.start()
        if not stop.is_set():
            out(f"local lab ready: source {state_dir / 'lab.env'}")
            out(f"  Kubernetes API  {lab.kube_server.url}   KUBECONFIG={lab.kubeconfig_path}")
            out("                  ConfigMap flagd-config, Deployment flagd, Services flagd (OFREP 8016), "
                "frontend-proxy")
            out(f"  demo shop       {lab.frontend_server.url}   (FRONTEND_URL)")
            out(f"  Dynatrace API   {lab.tenant_server.url}   (DT_URL; the local lab, not a real tenant)")
            out("Try: kubectl get pods; python -m labkit flags; python -m labkit set cartFailure on")
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


@command("flags", "list the flags: variants, default variant, and what flagd serves", _flags_args)
def cmd_flags(args) -> int:
    from labkit.errors import Unreachable
    from labkit.flags import format_value

    lab = cluster(args)
    ff = lab.flag_file()
    flags = [ff.flag(args.flag)] if args.flag else ff.flags
    try:
        served = lab.served_values()
        why = ""
    except Unreachable as exc:
        served, why = {}, str(exc)
    rows, stale = [], []
    for f in flags:
        variants = " ".join(f"{name}={format_value(v)}" for name, v in f.variants.items())
        s = served.get(f.key)
        shown = f"{s.variant} ({format_value(s.value)})" if s and s.variant else (
            format_value(s.value) if s else "-")
        if s and s.variant != f.default_variant:
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
    if stale:
        out(f"* flagd still serves an older default for {', '.join(stale)}: it loads the ConfigMap when its "
            "pod starts. Restart it: python -m labkit set FLAG VARIANT (restarts flagd).")
    if why:
        err(f"note: served values unknown: {why}")
    return 0


# ---- set ------------------------------------------------------------------------------------------
def _set_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("flag", help="flag key, e.g. cartFailure")
    p.add_argument("variant", help="variant name, e.g. on, off, 25%%")
    p.add_argument("--no-restart", action="store_true", help="change the ConfigMap only")
    p.add_argument("--dry-run", action="store_true", help="print the diff; change nothing")
    p.add_argument("--no-event", action="store_true", help="do not send a change event to Dynatrace")
    p.add_argument("--how", choices=("scale", "rollout"), default="scale",
                   help="restart flagd by scaling to 0 and back (the lab's way) or a rollout restart")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for flagd (default 120)")


def _send_change_event(args, change) -> None:
    """HOOK (lead, part 2): tell Dynatrace a change is coming, before it is applied."""
    if args.no_event:
        return
    err("note: change events come with the Dynatrace client; none sent")


@command("set", "set a flag's default variant, restart flagd and check it serves the new value", _set_args)
def cmd_set(args) -> int:
    from labkit.errors import Unreachable

    lab = cluster(args)
    preview = lab.set_default_variant(args.flag, args.variant, dry_run=True)  # validates; writes nothing
    if args.dry_run:
        out(preview.diff.rstrip("\n") if preview.changed else preview.summary())
        out("dry run: nothing changed")
        return 0
    if preview.changed:
        _send_change_event(args, preview)
        change = lab.set_default_variant(args.flag, args.variant)
        out(f"changed ConfigMap {change.after.name}: {change.summary()}")
        if args.verbose:
            out(change.diff.rstrip("\n"))
    else:
        change = preview
        try:
            if lab.served_value(args.flag).variant == args.variant:
                out(f"{args.flag} is already {args.variant!r} and flagd serves it; nothing to do.")
                return 0
        except Unreachable:
            pass
        out(f"{args.flag} already defaults to {args.variant!r} in the ConfigMap, but flagd does not serve it yet.")
    if args.no_restart:
        out(f"flagd keeps serving the old value until it restarts: python -m labkit set {args.flag} "
            f"{args.variant} (without --no-restart), or kubectl scale deploy flagd --replicas=0 and back.")
        return 0
    err(f"restarting flagd ({args.how}):")
    result = lab.restart_flagd(timeout=args.timeout, progress=progress_printer(), how=args.how)
    served = lab.wait_served(args.flag, args.variant, timeout=min(30.0, args.timeout),
                             progress=progress_printer())
    out(f"flagd restarted ({result.how}, {result.replicas} pod(s), {result.seconds:.1f}s) and serves "
        f"{args.flag} = {served}")
    return 0


# ---- entry point ----------------------------------------------------------------------------------
def _global_args(p: argparse.ArgumentParser, suppress: bool) -> None:
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    p.add_argument("--namespace", default=d(None), help="Kubernetes namespace (default: LAB_NAMESPACE or default)")
    p.add_argument("--kubeconfig", default=d(None), help="kubeconfig file (default: KUBECONFIG or ~/.kube/config)")
    p.add_argument("-v", "--verbose", action="count", default=d(0), help="more detail (never secrets)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m labkit", description=__doc__.splitlines()[0])
    _global_args(parser, suppress=False)
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS.values():
        sub = subs.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        _global_args(sub, suppress=True)  # global options also work after the command
        cmd.configure(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # argparse errors exit 2
    try:
        return COMMANDS[args.command].run(args) or 0
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
