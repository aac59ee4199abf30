"""The tenant's half of the lab: `labkit tenant setup [--dry-run] [--annotate] [--undo]`; the work is
labkit.tenant's (through Lab). Output: one plain sentence per thing made, kept or removed; exit 0
done, 1 refused or failed."""
from __future__ import annotations

import argparse

from labkit.cli.common import command, out, settings

SETUP_HELP = ("make what the tenant lacks of the lab's half, as the lab page's UI steps would: the runbook "
              "notebook (needs DT_PLATFORM_TOKEN), the OpenPipeline pipeline 'Log Errors' and the route "
              "'Critical Logs' (settings.write, or settings:objects:write on a platform token)")


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["setup"], help=SETUP_HELP)
    p.add_argument("--dry-run", action="store_true",
                   help="show every request it would send (method, path, body; never a token); write nothing")
    p.add_argument("--annotate", action="store_true",
                   help="also put the runbook's link into the cart pod's supportInfo (the cart rolls; labkit waits)")
    p.add_argument("--undo", action="store_true",
                   help="remove what labkit tenant setup made (route, pipeline, notebook), nothing else")


@command("tenant", "the tenant's half of the lab: `labkit tenant setup [--dry-run] [--annotate]`, "
                   "`labkit tenant setup --undo`", arguments)
def cmd_tenant(args) -> int:
    from labkit.lab import Lab
    from labkit.progress import printer

    if args.undo and (args.dry_run or args.annotate):
        from labkit.errors import BadInput

        raise BadInput("--undo takes neither --dry-run nor --annotate: it removes what labkit made.")
    lab = Lab(settings(args))
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
