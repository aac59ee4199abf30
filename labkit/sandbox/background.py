"""The local lab's background loops (the shopper, the tenant's housekeeping) as one small class."""
from __future__ import annotations

import threading


class Background:
    """A daemon thread calling `tick()` every `every()` seconds until stop(); the waits end at once
    on stop(). One tick's error does not end the loop (the local lab keeps running)."""

    def __init__(self, name: str, tick, every):
        self.name, self.tick, self.every = name, tick, every
        self._stop = threading.Event()
        self._thread = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.every()):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a hiccup must not end the lab's background work
                pass
