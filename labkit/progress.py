"""The one `progress(message, fraction)` callback type every slow labkit call takes, and its terminal printer."""
from __future__ import annotations

import sys
from typing import Callable

Progress = Callable[[str, "float | None"], None]


def quiet(_message: str, _fraction: float | None = None) -> None:
    """The default progress: say nothing."""


def printer(prefix: str = "  ", title: str = "", stream=None) -> Progress:
    """A progress callback for a terminal: one plain line per new message, on stderr
    ("  25% <title>message"); a message said twice in a row is printed once."""
    last: list[str | None] = [None]

    def progress(message: str, fraction: float | None = None) -> None:
        if message == last[0]:
            return
        last[0] = message
        pct = f"{fraction * 100:3.0f}% " if fraction is not None else "     "
        print(f"{prefix}{pct}{title}{message}", file=stream or sys.stderr, flush=True)

    return progress
