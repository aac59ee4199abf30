"""`labkit workshop`: every notebook run headless on the lab, executed copies and HTML written."""
from __future__ import annotations

from labkit.cli.common import command, err, out


@command("workshop", "run every notebook headless on the lab; write executed notebooks and HTML",
         lambda p: p.add_argument("--out", default="workshop-run", help="folder (default ./workshop-run)"))
def cmd_workshop(args) -> int:
    from labkit.workbook import run_workbook

    written = run_workbook(args.out, say=lambda m: err(m))
    out("\n".join(str(p) for p in written))
    return 0
