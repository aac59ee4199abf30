"""A seat's kernels report their timeline steps, and a heartbeat, to the facilitator's board.

Installed by the seat's IPython startup (seats.STARTUP) when the seat's server runs under the hub:
it posts with the hub's own credentials (the server's JUPYTERHUB_API_TOKEN, which the board checks
with the hub), from a background thread, so a slow or absent board never slows a cell.
"""
from __future__ import annotations

import os
import queue
import threading
import time

import httpx

from labkit import timeline

HEARTBEAT = float(os.environ.get("LABKIT_BOARD_HEARTBEAT", "20"))  # s between "still here" reports
RETRY = 1.0  # s before a step the board did not take is sent again
_installed: list = []


class Reporter:
    def __init__(self, board_url: str, seat: str, token: str):
        self.url = board_url.rstrip("/") + f"/api/seats/{seat}/steps"
        self.headers = {"Authorization": f"token {token}"}
        self.outbox: queue.Queue = queue.Queue()
        self.problem: str | None = None  # the last failure to report, said once
        self.send_state = False  # the board asks for the seat's own reading when it cannot read its files
        self.sent = 0  # reports the board took
        self.error: str | None = None  # the last failure in full (never holds the token: httpx's
        # errors name the URL, not the headers)
        # Made here, in the kernel's main thread: made in the reporting thread at startup, while the
        # first cell imports labkit, it sometimes died before its first report (measured: 2 of 20 rooms).
        self.client = httpx.Client(timeout=10)
        self.thread = threading.Thread(target=self._run, name="labkit-board-report", daemon=True)
        self.thread.start()

    def __call__(self, step) -> None:
        if step is None:
            self.outbox.put({"cleared": True})
        else:
            self.outbox.put({"step": {"kind": step.kind, "time": step.time.isoformat(), "flag": step.flag,
                                      "old": step.old, "new": step.new, "detail": step.detail}})

    @staticmethod
    def _state() -> dict | None:
        """The seat's lab as this seat sees it (the board on a cluster cannot read the seat's files)."""
        state_dir = os.environ.get("LABKIT_STATE_DIR")
        if not state_dir:
            return None
        from labkit.room.state import read_seat

        try:
            return read_seat(state_dir)
        except Exception as exc:  # noqa: BLE001 - a heartbeat still goes out
            return {"lab": "unreadable", "error": type(exc).__name__}

    def _run(self) -> None:
        body = None  # a step the board has not taken yet is sent again, in order, until it does
        while True:
            try:
                if body is None:
                    try:
                        body = self.outbox.get(timeout=HEARTBEAT)
                    except queue.Empty:
                        body = {"heartbeat": True, **({"state": self._state()} if self.send_state else {})}
                r = self.client.post(self.url, json=body, headers=self.headers)
                self.send_state = r.status_code == 200 and bool(r.json().get("send_state"))
                problem = None if r.status_code in (200, 204) else f"answered {r.status_code}"
                self.sent += problem is None
                retry = r.status_code >= 500
            except Exception as exc:  # noqa: BLE001 - down, restarting, slow or broken: this thread lives on
                problem, retry = type(exc).__name__, True
                self.error = repr(exc)[:300]
            self._note(problem)
            if retry and body is not None and "heartbeat" not in body:
                time.sleep(RETRY)
            else:
                body = None

    def status(self) -> dict:
        """Is this kernel reporting: its thread alive, reports taken, the last failure (a rehearsal
        prints it beside a seat the board shows as silent)."""
        return {"alive": self.thread.is_alive(), "sent": self.sent, "problem": self.problem, "error": self.error,
                "waiting": self.outbox.qsize()}

    def _note(self, problem: str | None) -> None:
        """One line in the seat server's log when reporting starts or stops failing (never the token)."""
        if problem != self.problem:
            import sys

            print(f"labkit room: the board {problem}; this seat shows as silent until it answers"
                  if problem else "labkit room: reporting to the board again", file=sys.__stderr__, flush=True)
            self.problem = problem


def install(environ=None) -> Reporter | None:
    """Report this kernel's steps to the board, when it runs in a room's seat; once per process."""
    env = os.environ if environ is None else environ
    board, seat, token = env.get("LABKIT_BOARD_URL"), env.get("JUPYTERHUB_USER"), env.get("JUPYTERHUB_API_TOKEN")
    if not (board and seat and token) or _installed:
        return _installed[0] if _installed else None
    reporter = Reporter(board, seat, token)
    timeline.HOOKS.append(reporter)
    _installed.append(reporter)
    reporter.outbox.put({"heartbeat": True})  # the kernel is up: the seat is here
    return reporter
