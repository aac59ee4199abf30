"""labkit ... (or python -m labkit ...): the lab's steps from a terminal.

Each subcommand is one `@command(...)` handler plus an optional `configure(parser)` for its
arguments, in the module of its subject: `sandbox` (the local lab, check, the workbook), `flags`
(flags, set, fix, event), `observe` (failures, problems, logs), `traffic` (shop), `tenant`,
`workshop` and `room` (the room's entry); `common` is what they share. `main()` parses, runs the
handler, and turns labkit errors into one line and an exit code (0 done, 2 bad input, 1 failure,
130 interrupted). Heavy modules load inside the handlers.
"""
from __future__ import annotations

import argparse
import sys

from labkit.cli import flags, observe, room, sandbox, tenant, traffic, workshop  # noqa: F401 (they register)
from labkit.cli.common import COMMANDS, err
from labkit.errors import LabError

#: the order `labkit --help` lists the commands in: a lab's day, from starting it to the room
ORDER = ("sandbox", "flags", "set", "fix", "event", "failures", "problems", "logs", "shop", "check", "tenant",
         "lab", "workshop", "room")


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
    for name in sorted(COMMANDS, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
        cmd = COMMANDS[name]
        sub = subs.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        _global_args(sub, suppress=True)  # global options also work after the command
        cmd.configure(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["room"]:
        try:
            return room.run(argv[1:])
        except LabError as exc:
            err(f"error: {exc}")
            return exc.exit_code
        except KeyboardInterrupt:  # the room stopped what it had started before this reaches here
            err("interrupted")
            return 130
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
