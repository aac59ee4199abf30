"""The room's entry: `labkit room ...` is its own program above the CLI (labkit/room/cli.py),
loaded only for `labkit room`; main() hands it every option after `room`."""
from __future__ import annotations

from labkit.cli.common import command


@command("room", "a workshop for a room on JupyterHub: `labkit room --seats N`, `labkit room rehearse ...` "
                 "(labkit room --help)", lambda p: None)
def cmd_room(args) -> int:  # reached only by `labkit room` alone; main() hands room's options over
    return run([])


def run(argv: list[str]) -> int:
    import importlib

    return importlib.import_module("labkit.room.cli").main(argv)
