"""The one `progress(message, fraction)` callback type every slow labkit call takes, and its terminal printer."""
from __future__ import annotations

import re
import sys
import time
from typing import Callable

Progress = Callable[[str, "float | None"], None]

_pending: list = []  # the stream whose last line is a progress line still being updated


def quiet(_message: str, _fraction: float | None = None) -> None:
    """The default progress: say nothing."""


def settle() -> None:
    """End a progress line that is still being updated (its last text stays), so what is printed
    next starts on a line of its own. The CLI's out()/err() call it."""
    while _pending:
        stream = _pending.pop()
        stream.write("\n")
        stream.flush()


class Printer:
    """A progress callback for a terminal, on stderr ("  25% <title>message").

    On a TTY it is ONE line, rewritten in place (\\r) and cleared at fraction 1.0 or end(); elsewhere
    (a pipe, a CI log) plain lines: every new message, but a counter's updates at most once per
    10 % or 10 s, and never the same message twice."""

    def __init__(self, prefix: str = "  ", title: str = "", stream=None):
        self.prefix, self.title, self._stream = prefix, title, stream
        self._last: str | None = None
        self._said_at, self._said_fraction, self._kind = 0.0, None, ""

    @property
    def stream(self):
        return self._stream or sys.stderr

    @property
    def tty(self) -> bool:
        try:
            return bool(self.stream.isatty())
        except (AttributeError, ValueError):
            return False

    def __call__(self, message: str, fraction: float | None = None) -> None:
        if message == self._last:
            return
        self._last = message
        pct = f"{fraction * 100:3.0f}% " if fraction is not None else "     "
        line = f"{self.prefix}{pct}{self.title}{message}"
        if self.tty:
            self._rewrite(line, done=fraction is not None and fraction >= 1.0)
        elif self._worth_a_line(message, fraction):
            print(line, file=self.stream, flush=True)

    def _rewrite(self, line: str, done: bool) -> None:
        stream = self.stream
        if stream in _pending:
            _pending.remove(stream)
        if done:  # cleared: the command prints its own result next
            stream.write("\r\x1b[K")
        else:
            stream.write("\r" + line + "\x1b[K")
            _pending.append(stream)
        stream.flush()

    def _worth_a_line(self, message: str, fraction: float | None) -> bool:
        """A new kind of message always; a counter's update (the same words, other numbers) once
        per 10 % or 10 s."""
        now, kind = time.monotonic(), re.sub(r"\d+(\.\d+)?", "#", message)
        last = self._said_fraction
        if (kind != self._kind or fraction is None or last is None or fraction >= 1.0
                or fraction - last >= 0.1 or now - self._said_at >= 10):
            self._said_at, self._said_fraction, self._kind = now, fraction, kind
            return True
        return False

    def end(self) -> None:
        """Clear the line (on a TTY); nothing elsewhere."""
        if self.tty and self.stream in _pending:
            _pending.remove(self.stream)
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def __enter__(self) -> "Printer":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.end()
        else:
            settle()  # the last progress stays readable above the error


def printer(prefix: str = "  ", title: str = "", stream=None) -> Printer:
    """A progress callback for a terminal (see Printer)."""
    return Printer(prefix, title, stream)
