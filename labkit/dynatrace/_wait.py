"""Waiting for something to reach the tenant: a check polled with backoff until it returns rows."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from labkit.errors import LabTimeout
from labkit.progress import Progress

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def wait_for(check: Callable[[], "pd.DataFrame"], timeout: float, progress: Progress | None,
             what: str, timeout_message: str) -> "pd.DataFrame":
    """check() until it returns rows, backing off 0.5 s -> 10 s; LabTimeout after `timeout` s."""
    start = time.monotonic()
    deadline = start + max(0.0, timeout)
    delay = 0.5
    while True:
        frame = check()
        elapsed = time.monotonic() - start
        if len(frame):
            if progress:  # "found a problem on service 'cart'", never "found 1 a problem"
                progress(f"found {what}" + (f" ({len(frame)} in all)" if len(frame) > 1 else ""), 1.0)
            return frame
        if progress:
            progress(f"waiting for {what} ({elapsed:.0f} s of {timeout:g} s)",
                     min(1.0, elapsed / timeout) if timeout else None)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LabTimeout(timeout_message)
        time.sleep(min(delay, remaining))
        delay = min(delay * 1.6, 10.0)
