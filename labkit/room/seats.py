"""The room's folder: its seats, their homes and passwords, and the variables each seat's server gets.

    <room>/secrets.json        passwords of seat-1..seat-N and the facilitator, the board's token (0600)
    <room>/seats/seat-K/       the seat's home (0700): the workbook's notebooks, its IPython startup,
                               .labkit/ (its local lab's state dir: lab.env, kubeconfig, CA, timeline)
    <room>/hub/                the hub's database, cookie secret, config and logs

Every seat runs as the same Unix user here, so file modes do not keep seats apart: each seat's lab
has its own CA and bearer token (TLS), its own Dynatrace tokens, and the hub's per-user tokens guard
each JupyterLab. A seat that reads another's files with a terminal can see them (say so to the room).
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import labkit

FACILITATOR = "facilitator"
BOARD = "labkit-board"
NOTEBOOKS = Path(labkit.__file__).resolve().parent.parent / "notebooks"
STARTUP = """\
# Written by `labkit room`: this seat's kernels report their lab steps to the facilitator's board.
try:
    from labkit.room import report
    report.install()
except Exception as exc:  # the lab works without the board
    import sys
    print(f"labkit room: not reporting to the board ({exc!r:.300})", file=sys.__stderr__)
"""


def fill_home(home: Path) -> Path:
    """A seat's home: 0700, the workbook's notebooks (kept if the seat has them already), and the
    IPython startup that reports to the board (also a seat pod's postStart on Zero to JupyterHub)."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    for book in sorted(NOTEBOOKS.glob("*.ipynb")):
        if not (home / book.name).exists():
            shutil.copyfile(book, home / book.name)
    startup = home / ".ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00-labkit-room.py").write_text(STARTUP)
    return home


def seat_names(count: int) -> list[str]:
    return [f"seat-{k}" for k in range(1, count + 1)]


@dataclass
class Room:
    """One room's folder and its seats."""

    folder: Path
    seats: int
    shared: bool = False  # --shared-tenant: every seat's lab runs in one process, on one tenant

    def __post_init__(self):
        self.folder = Path(self.folder).resolve()

    @property
    def names(self) -> list[str]:
        return seat_names(self.seats)

    @property
    def hub_dir(self) -> Path:
        return self.folder / "hub"

    def home(self, seat: str) -> Path:
        return self.folder / "seats" / seat

    def state_dir(self, seat: str) -> Path:
        """The seat's local lab (LABKIT_STATE_DIR): lab.env, kubeconfig, CA, timeline. On a shared
        tenant the labs are started together at the room's start, outside the seats' homes."""
        return self.shared_dir / seat if self.shared else self.home(seat) / ".labkit"

    @property
    def runtime_root(self) -> Path:
        """Where the seats' Jupyter runtime dirs are: connection files and the kernels' IPC sockets, whose
        paths must be short (a Unix socket's path: 107 bytes on Linux, 103 on macOS), so under /tmp,
        named after the room's folder."""
        return Path("/tmp") / f"labkit-room-{hashlib.sha1(str(self.folder).encode()).hexdigest()[:10]}"

    def runtime_dir(self, seat: str) -> Path:
        return self.runtime_root / seat

    @property
    def shared_dir(self) -> Path:
        return self.folder / "shared-tenant"

    @property
    def secrets_path(self) -> Path:
        return self.folder / "secrets.json"

    def secrets(self) -> dict:
        return json.loads(self.secrets_path.read_text())

    def prepare(self) -> dict:
        """Folders, homes and fresh passwords for this start of the room; returns the secrets."""
        for path in (self.folder, self.hub_dir, self.folder / "seats"):
            path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        made = {"passwords": {name: secrets.token_urlsafe(9) for name in [FACILITATOR, *self.names]},
                "board_token": secrets.token_hex(32)}
        fd = os.open(self.secrets_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(made, f)
        for name in self.names:
            self.make_home(name)
        return made

    def make_runtime_dirs(self) -> None:
        """The seats' runtime dirs (0700), made as the hub starts (Hub.stop removes them)."""
        for name in self.names:
            self.runtime_dir(name).mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.runtime_root, 0o700)

    def make_home(self, seat: str) -> Path:
        return fill_home(self.home(seat))

    def seat_env(self, seat: str, board_url: str) -> dict[str, str]:
        """The variables of one seat's server (and so of its kernels): its own lab and identity."""
        return {"LABKIT_STATE_DIR": str(self.state_dir(seat)),
                "LABKIT_CLUSTER_NAME": seat,  # the seat's identity on a shared tenant (contract C4)
                "LABKIT_BOARD_URL": board_url}



def _home_arg() -> Path:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m labkit.room.seats")
    parser.add_argument("--home", required=True, help="the seat's home to fill")
    return Path(parser.parse_args().home)


if __name__ == "__main__":  # python -m labkit.room.seats --home /home/jovyan (a seat pod's postStart)
    fill_home(_home_arg())
