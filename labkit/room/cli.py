"""`labkit room`: a room's JupyterHub on this machine, until Ctrl-C; `labkit room rehearse`: the whole
room run by robots, timed, with the board checked."""
from __future__ import annotations

import argparse
import signal
import sys
import time

from labkit.errors import LabError


def _room_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seats", type=int, required=True, help="how many seats (seat-1 ... seat-N)")
    p.add_argument("--port", type=int, default=8000, help="the hub's port on 127.0.0.1 (default 8000)")
    p.add_argument("--dir", default=".room", help="the room's folder (default ./.room)")
    p.add_argument("--shared-tenant", action="store_true",
                   help="every seat's lab sends to ONE local tenant (seats kept apart by their cluster name)")
    p.add_argument("--cull-after", type=int, default=3600, help="stop a seat's server idle this many s")
    p.add_argument("--silent-after", type=float, default=90.0,
                   help="the board shows a running seat that has not reported for this many s as silent")
    p.add_argument("--start-servers", action="store_true",
                   help="start every seat's server before anyone logs in (a login then finds it running)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labkit room", description=__doc__.splitlines()[0])
    subs = parser.add_subparsers(dest="command")
    _room_args(parser)
    rehearse = subs.add_parser("rehearse", help="log in as every seat, run 01 in each, time it, check the board")
    _room_args(rehearse)
    rehearse.add_argument("--change", choices=("odd", "all"), default="all",
                          help="which seats flip cartFailure (default all)")
    rehearse.add_argument("--notebook", default="01-introduce-change.ipynb")
    rehearse.add_argument("--json", help="also write the results here (benchmarks read it)")
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    # `labkit room rehearse --seats 3` and `labkit room --seats 3`: the options may come either side
    if argv and argv[0] == "rehearse":
        args = build_parser().parse_args(["--seats", "0", *argv])
    else:
        args = build_parser().parse_args(argv)
    if not 1 <= args.seats <= 200:
        raise LabError("--seats must be between 1 and 200.")
    return args


# What a room needs beyond the workbook: the `room` extra (JupyterHub, its idle culler) and the proxy.
INSTALL = ".venv/bin/pip install -e '.[room]' && npm install --prefix .room configurable-http-proxy"


def require_jupyterhub() -> None:
    """Say the one install command at once, before anything is installed or started."""
    import importlib.util

    def lacks(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is None
        except (ImportError, ValueError):  # a broken or blocked install counts as missing
            return True

    missing = [m for m in ("jupyterhub", "jupyterhub_idle_culler") if lacks(m)]
    if missing:
        raise LabError(f"labkit room needs JupyterHub, which this Python lacks ({', '.join(missing)}). "
                       f"Install what a room needs, in the checkout: {INSTALL}")


def main(argv: list[str] | None = None) -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    require_jupyterhub()
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the room as Ctrl-C does
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    if args.command == "rehearse":
        from labkit.room.rehearse import rehearse

        return rehearse(args)
    from labkit.room.hub import describe
    from labkit.room.start import start_room, stop_room

    room, config, hub, tenant = start_room(args)
    print(describe(config), flush=True)
    if tenant is not None:
        print(f"  shared tenant: {tenant.describe()}", flush=True)
    print("Ctrl-C stops the hub, every seat's server and lab.", flush=True)
    try:
        while hub.proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    code = hub.proc.returncode
    left = stop_room(hub, tenant)
    print(f"room stopped{'' if not left else f'; killed {len(left)} leftover processes'}", flush=True)
    if code not in (None, 0, -15):
        print(f"the hub had exited by itself (code {code}): {hub.log_tail()}", file=sys.stderr)
        return 1
    return 0


def _interrupt(*_):
    raise KeyboardInterrupt
