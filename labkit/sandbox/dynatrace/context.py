"""What the parts of the local tenant's telemetry share (topology, spans, logs, Davis)."""
from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Callable


@dataclass
class Context:
    """One lock guards every part (each holds it only briefly); one seeded random source makes the
    ids and the seeded past, so one seed gives the same lab; `clock` reads the Telemetry's own
    clock at each call, because tests replace it there."""
    lock: threading.Lock
    rng: random.Random
    timings: object
    clock: Callable[[], int]

    def hex(self, n: int) -> str:
        return "".join(self.rng.choice("0123456789abcdef") for _ in range(n))
