"""What every command module shares: the registry (`@command`), output, and the lab's clients
built from the command line's options (settings, Dynatrace, Cluster), plus the listing helpers
the observing commands use (tables, --since, --limit)."""
from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, replace
from typing import Callable

from labkit.errors import BadInput, LabError
from labkit.progress import settle


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


# ---- output ----------------------------------------------------------------------------------------
def out(*parts) -> None:
    settle()  # a progress line still being rewritten ends first
    print(*parts, flush=True)


def err(*parts) -> None:
    settle()
    print(*parts, file=sys.stderr, flush=True)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


# ---- the lab's clients -----------------------------------------------------------------------------
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


# ---- the demo release (sandbox, lab) ----------------------------------------------------------------
def release_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--release", default=None, help="the demo release the local lab imitates: 3.0.0 "
                   "(default, what the lab's unpinned chart installs) or 2.2.0 ($LABKIT_DEMO_RELEASE)")


def choose_release(args) -> None:
    """--release wins over LABKIT_DEMO_RELEASE, for this process and the local lab it starts."""
    if getattr(args, "release", None):
        from labkit import releases

        os.environ["LABKIT_DEMO_RELEASE"] = releases.get(args.release).version


# ---- listings (failures, problems, logs) --------------------------------------------------------------
def frame_table(df, columns: list[str], empty: str) -> None:
    """A DataFrame as a plain table (UTC times to the second), or a sentence when it is empty."""
    if df is None or len(df) == 0:
        out(empty)
        return
    rows = []
    for _, r in df[columns].iterrows():
        rows.append(["-" if (v is None or v != v) else
                     (f"{v:%Y-%m-%d %H:%M:%S}" if hasattr(v, "strftime") else str(v)) for v in r])
    out(table(rows, [c.upper() for c in columns]))


def since_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("service", nargs="?", default="cart", help="service name (default cart)")
    p.add_argument("--since", default=default, help=f"how far back: 30m, 2h, 1d (default {default})")


def ago(value: str) -> str:
    if not re.match(r"^\d{1,4}[mhdw]$", value):
        raise BadInput(f"--since {value[:40]!r} must be a number and a unit: 30m, 2h, 1d or 1w.")
    return f"now-{value}"


def limit_arg(p: argparse.ArgumentParser, default: int, what: str) -> None:
    p.add_argument("--limit", type=int, default=default, help=f"show at most this many {what} (default {default})")


def check_limit(limit: int) -> None:
    if not 1 <= limit <= 1000:
        raise BadInput(f"--limit must be between 1 and 1000; got {limit}.")


def say_shown(count: int, total: int, what: str, capped: bool = False) -> None:
    """'20 of 35 error logs (the newest), --limit to see more' when a listing shows part."""
    if count < total:
        out(f"{count} of {'at least ' if capped else ''}{total} {what}, --limit to see more")


def run_timeline(args):
    """The run's timeline (what the notebooks and `labkit set` record), or None when there is none."""
    from labkit.timeline import Timeline

    path = settings(args).timeline_path()
    return Timeline(path) if path.is_file() else None
