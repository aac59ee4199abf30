"""The CLI's tenant commands: `labkit tenant setup [--dry-run] [--annotate] [--undo]`, and the check
`labkit problems --wait` makes before it waits. cli.py registers them; the work is labkit.tenant's.
Output: one plain sentence per thing made, kept or removed; exit 0 done, 1 refused or failed."""
from __future__ import annotations

import argparse

SETUP_HELP = ("make what the tenant lacks of the lab's half, as the lab page's UI steps would: the runbook "
              "notebook (needs DT_PLATFORM_TOKEN), the OpenPipeline pipeline 'Log Errors' and the route "
              "'Critical Logs' (settings.write, or settings:objects:write on a platform token)")


def register(command, settings, out) -> None:
    """Add `labkit tenant` to the CLI's commands (cli.py hands over its registry and helpers)."""
    @command("tenant", "the tenant's half of the lab: `labkit tenant setup [--dry-run] [--annotate]`, "
                       "`labkit tenant setup --undo`", arguments)
    def cmd_tenant(args) -> int:
        return run(args, settings(args), out)


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["setup"], help=SETUP_HELP)
    p.add_argument("--dry-run", action="store_true",
                   help="show every request it would send (method, path, body; never a token); write nothing")
    p.add_argument("--annotate", action="store_true",
                   help="also put the runbook's link into the cart pod's supportInfo (the cart rolls; labkit waits)")
    p.add_argument("--undo", action="store_true",
                   help="remove what labkit tenant setup made (route, pipeline, notebook), nothing else")


def run(args, settings, out) -> int:
    from labkit.lab import Lab
    from labkit.progress import printer

    if args.undo and (args.dry_run or args.annotate):
        from labkit.errors import BadInput

        raise BadInput("--undo takes neither --dry-run nor --annotate: it removes what labkit made.")
    lab = Lab(settings)
    try:
        if args.undo:
            result = lab.undo_tenant()
        else:
            with printer() as progress:
                result = lab.prepare_tenant(dry_run=args.dry_run, annotate=args.annotate, progress=progress)
    finally:
        lab.close()
    out(str(result))
    return 0


def wait_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", type=float, default=None, nargs="?", const=600.0, metavar="SECONDS",
                   help="wait until a problem opens (default 600 s); stops at once when the tenant cannot open "
                        "the lab's problem, saying why")


def problems(dt, service: str, since, wait: float | None = None):
    """`labkit problems`: the service's problems since `since`; with `wait`, once one opened (after
    checking the tenant can open the lab's problem at all, else a LabError saying why)."""
    from datetime import datetime, timezone

    from labkit.progress import printer
    from labkit.tenant.check import require_problem_possible

    if wait is None:
        return dt.problems(service, since=since)
    require_problem_possible(dt)
    with printer() as progress:
        return dt.wait_for_problem(service, since=datetime.now(timezone.utc), timeout=wait, progress=progress)
