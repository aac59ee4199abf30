"""`labkit room --shared-tenant`: every seat's local lab on ONE local tenant, kept apart by the seat's
cluster name (labkit.sandbox.shared, run as its own process: the room imports no sandbox code).

The seats' labs start together with the room (not at each seat's first login) and stop with it.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time

from labkit.errors import Unreachable
from labkit.room.hub import hear_sigint
from labkit.settings import read_dotenv


class SharedTenant:
    def __init__(self, room):
        self.room = room
        self.proc: subprocess.Popen | None = None
        self.log_path = room.hub_dir / "shared-tenant.log"

    def start(self, timeout: float = 180) -> "SharedTenant":
        self.room.shared_dir.mkdir(parents=True, exist_ok=True)
        for name in self.room.names:
            (self.room.state_dir(name) / "lab.env").unlink(missing_ok=True)  # a killed run's leftovers
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "labkit.sandbox.shared", "--seats", str(self.room.seats),
                 "--state-dir", str(self.room.shared_dir)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=hear_sigint)
        deadline = time.monotonic() + timeout
        try:
            while not all(self._ready(n) for n in self.room.names):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise Unreachable(f"The shared tenant's seats did not start (see {self.log_path}); run "
                                      "`labkit room` without --shared-tenant to give each seat its own tenant.")
                time.sleep(0.3)
        except BaseException:  # a failure or Ctrl-C while the labs start: none is left running
            self.stop()
            raise
        return self

    def _ready(self, seat: str) -> bool:
        return bool(read_dotenv(self.room.state_dir(seat) / "lab.env").get("DT_URL"))

    def describe(self) -> str:
        url = read_dotenv(self.room.state_dir(self.room.names[0]) / "lab.env").get("DT_URL", "?")
        return f"{url} ({self.room.seats} seats' labs in one process, pid {self.proc.pid if self.proc else '-'})"

    def seat_env(self) -> dict[str, str]:
        return {}  # each seat's LABKIT_STATE_DIR (Room.state_dir) already points at its lab

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

