"""`labkit room rehearse`: the whole room run as attendees would, on this machine, before the day.

Every seat logs in through the hub, starts its server, and runs notebook 01 (as shipped) in its own
kernel; with --change odd only odd seats flip cartFailure, even seats run up to the change and then
only shop (they are the room's control group: on a shared tenant they must see nothing of their
neighbours' failures). Per seat: the time of every cell and the peak memory of the seat's processes;
then the room's totals. Last, the board's api/seats, read as the facilitator, must agree with what
each seat did. Exit 1 if a seat failed, a control seat saw failures, or the board disagrees.
"""
from __future__ import annotations

import json
import math
import re
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from labkit.errors import LabError
from labkit.room.kernel import CellRun, SeatKernel, SeatLogin
from labkit.room.seats import FACILITATOR

# The calls in 01 that make the change; a control seat stops before the first of them.
CHANGE_CALLS = ("inform_dynatrace(", ".apply(", "change_flag(", "make_change(")
CONTROL_CELLS = ("result = lab.generate_traffic(seconds=30, rate=5)\nresult",
                 "import json\nprint(json.dumps({'failures': len(result.failures), 'seen': [\n"
                 "    f'{f.operation} {f.status} {f.detail[:120]}' for f in result.failures[:3]]}))")
STEPS_CELL = ("import json\nprint('LABKIT-STEPS ' + json.dumps([s.kind for s in lab.timeline.steps]))\n"
              "from labkit.room import report\n"
              "print('LABKIT-REPORTER ' + json.dumps(report._installed[0].status() if report._installed else None))")
MB = 1024 * 1024


@dataclass
class SeatResult:
    seat: str
    changes: bool
    ready_seconds: float = math.nan
    cells: list[CellRun] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    peak_mb: float = 0.0
    error: str | None = None
    control_failures: int = 0
    control_seen: list[str] = field(default_factory=list)  # the first few as the shop saw them
    notebook_cells: int = 0  # how many of `cells` are 01's own (a control seat adds its shopping)
    reporter: dict | None = None  # the kernel's report thread as it ended (report.Reporter.status)
    reconnects: int = 0  # times the kernel's websocket dropped and came back (as JupyterLab's would)

    @property
    def turned_on(self) -> str:
        """The variant the seat's 01 turned on: what its `on = lab.on_variant()` cell printed."""
        cell = next((c for c in self.cells if c.name == "on_variant" and c.text), None)
        said = re.search(r"is the variant (\S+)", cell.text) if cell else None  # its sentence (answers.OnVariant)
        return said.group(1) if said else cell.text.strip().strip("'\"") if cell else "on"

    @property
    def failed(self) -> bool:
        return self.error is not None or any(c.error for c in self.cells)


class MemoryWatch:
    """Peak resident memory of each seat's processes (its JupyterLab server and its kernels, which
    hold its local lab), sampled every half second while the rehearsal runs."""

    def __init__(self, seats: list[str], folder: Path):
        self.seats, self.folder = seats, str(folder)  # only this room's processes (others may run)
        self.peak = {s: 0 for s in seats}
        self.room_peak = 0
        self.shared_peak = 0  # --shared-tenant: every seat's lab in one process
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="room-memory")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            seen, shared = self.sample()
            for seat, rss in seen.items():
                self.peak[seat] = max(self.peak[seat], rss)
            self.shared_peak = max(self.shared_peak, shared)
            self.room_peak = max(self.room_peak, sum(seen.values()) + shared)

    def sample(self) -> tuple[dict[str, int], int]:
        import psutil

        seen, shared = {s: 0 for s in self.seats}, 0
        for proc in psutil.process_iter(["pid"]):
            try:
                command = " ".join(proc.cmdline())
                if "labkit.sandbox.shared" in command and self.folder in command:
                    shared += proc.memory_info().rss
                    continue
                env = proc.environ()
                user = env.get("JUPYTERHUB_USER")
                if (user in seen and "jupyterhub.singleuser" in command
                        and env.get("LABKIT_STATE_DIR", "").startswith(self.folder)):
                    family = [proc, *proc.children(recursive=True)]
                    seen[user] += sum(p.memory_info().rss for p in family)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return seen, shared


def run_seat(hub_url: str, seat: str, password: str, notebook: str, changes: bool,
             stop: threading.Event) -> SeatResult:
    result = SeatResult(seat, changes)
    login = SeatLogin(hub_url, seat, password, stop=stop)
    kernel = None
    try:
        login.login()
        result.ready_seconds = login.start_server()
        kernel = SeatKernel(login, notebook)
        cells = kernel.cells()
        if not changes:
            first_change = next((i for i, c in enumerate(cells) if any(k in c for k in CHANGE_CALLS)), len(cells))
            cells = cells[:first_change] + list(CONTROL_CELLS)
            result.notebook_cells = first_change
        else:
            result.notebook_cells = len(cells)
        for code in cells:
            login.pause(0)
            ran = kernel.run(code)
            result.cells.append(ran)
            if ran.error:
                break
            if code == CONTROL_CELLS[1]:
                said = json.loads(ran.text.strip().splitlines()[-1])
                result.control_failures, result.control_seen = said["failures"], said["seen"]
        steps = kernel.run(STEPS_CELL, timeout=60)
        line = next((x for x in steps.text.splitlines() if x.startswith("LABKIT-STEPS ")), None)
        result.steps = json.loads(line.split(" ", 1)[1]) if line else []
        line = next((x for x in steps.text.splitlines() if x.startswith("LABKIT-REPORTER ")), None)
        result.reporter = json.loads(line.split(" ", 1)[1]) if line else None
    except Exception as exc:  # one seat's failure is reported with the others, not raised
        result.error = f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        if kernel is not None:
            result.reconnects = kernel.reconnects
            kernel.close()
        login.close()
    return result


def run_seats(pool: ThreadPoolExecutor, seats: list[tuple]) -> list[SeatResult]:
    """Every seat at once, in the pool; a line as each ends (a room of 40 runs for minutes)."""
    futures = [pool.submit(run_seat, *seat) for seat in seats]
    for done, future in enumerate(as_completed(futures), 1):
        result = future.result()
        said = f" ({result.seat} failed)" if result.failed else ""
        print(f"  seats done: {done} of {len(seats)}{said}", file=sys.stderr, flush=True)
    return [f.result() for f in futures]


def board_rows(hub_url: str, password: str) -> dict[str, dict]:
    """The board's api/seats, read as the facilitator (logged in through the hub, with a token)."""
    login = SeatLogin(hub_url, FACILITATOR, password)
    try:
        login.login()
        r = login.client.get("/services/labkit-board/api/seats")
        r.raise_for_status()
        return {row["seat"]: row for row in r.json()["seats"]}
    finally:
        login.close()


def disagreements(result: SeatResult, row: dict | None) -> list[str]:
    """Where the board's row differs from what the seat did (or a control seat saw failures)."""
    if row is None:
        return ["the board has no row for it"]
    found = []
    if row.get("steps") != result.steps:
        found.append(f"board steps {row.get('steps')} != the seat's timeline {result.steps}")
    if row.get("status") != "reporting":
        found.append(f"board status {row.get('status')!r} (server {row.get('server')}, last report "
                     f"{row.get('last_report')}, last activity {row.get('last_activity')}; "
                     f"the kernel's reporter {result.reporter})")
    served = set((row.get("flag_served") or {}).values())
    want = {result.turned_on} if result.changes else {"off"}
    if served != want:
        found.append(f"board says flagd serves {sorted(map(str, served))}, the seat left it {sorted(want)}")
    # a problem closes once its events end, a quiet period after the seat's last failing request: in a
    # long rehearsal an early seat's problem is closed by the time the board is read, and the board is right
    seen_open = "problem opened" in result.steps
    if result.changes and not (row.get("problem") == "open" or (seen_open and row.get("problem") == "closed")):
        found.append(f"board problem {row.get('problem')!r}, the seat waited for an open one")
    if not result.changes and (row.get("failures_seen") or row.get("problem") == "open"):
        found.append(f"a control seat shows failures (problem {row.get('problem')!r})")
    return found


def board_agrees(hub_url: str, password: str, results: list[SeatResult], wait: float = 30) -> dict[str, list]:
    """Read the board until it agrees with every seat or `wait` s pass (its reads lag a few s)."""
    deadline = time.monotonic() + wait
    while True:
        rows = board_rows(hub_url, password)
        found = {r.seat: disagreements(r, rows.get(r.seat)) for r in results if not r.failed}
        if not any(found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(2)


def p95(values: list[float]) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def report(results: list[SeatResult], watch: MemoryWatch, everyone_ready: float, wall: float,
           found: dict[str, list], servers: str = "started at each login") -> dict:
    lines = []
    for r in results:
        peak = watch.peak.get(r.seat, 0) / MB
        r.peak_mb = round(peak, 1)
        what = "changes cartFailure" if r.changes else "control (no change)"
        lines.append(f"{r.seat} ({what}): ready {r.ready_seconds:.1f} s, peak {peak:.0f} MB"
                     + (f", kernel websocket reconnected {r.reconnects}x" if r.reconnects else "")
                     + (f", ERROR {r.error}" if r.error else ""))
        lines += [f"    {c.seconds:7.2f} s  {c.name}" + (f"  ERROR {c.error}" if c.error else "") for c in r.cells]
        if not r.changes:
            lines.append(f"    control shop saw {r.control_failures} failures")
            lines += [f"      {seen}" for seen in r.control_seen]
        lines += [f"    board disagrees: {d}" for d in found.get(r.seat, [])]
    times = [c.seconds for r in results for c in r.cells[:r.notebook_cells]]  # 01's cells, not the control's
    peaks = [r.peak_mb for r in results]
    totals = {
        "seats": len(results),
        "failed_seats": [r.seat for r in results if r.failed],
        "control_seats_with_failures": [r.seat for r in results if not r.changes and r.control_failures],
        "board_disagrees": {s: d for s, d in found.items() if d},
        "kernel_reconnects": sum(r.reconnects for r in results),
        "seconds_until_every_seat_ready": round(everyone_ready, 1),
        "servers": servers,  # what "ready" measured: a login that starts its server, or finds it running
        "wall_seconds": round(wall, 1),
        "p95_cell_seconds": round(p95(times), 2),
        "median_cell_seconds": round(statistics.median(times), 2) if times else math.nan,
        # each seat's server and kernels, plus its share of the shared tenant's process (if any)
        "memory_per_seat_mb": round(statistics.mean(peaks) + watch.shared_peak / MB / len(peaks), 1)
        if peaks else math.nan,
        "room_peak_mb": round(watch.room_peak / MB, 1),
        "shared_tenant_peak_mb": round(watch.shared_peak / MB, 1),  # 0 unless --shared-tenant
    }
    lines.append("room: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
    print("\n".join(lines), flush=True)
    return totals


def rehearse(args) -> int:
    """Start a room (or use the one running at --port), run every seat, check the board."""
    import httpx

    from labkit.room.start import start_room, stop_room
    from labkit.room.seats import Room

    hub_url = f"http://127.0.0.1:{args.port}"
    try:
        running = httpx.get(f"{hub_url}/hub/api/", timeout=2).status_code == 200
    except httpx.HTTPError:
        running = False
    hub = tenant = None
    if running:
        room = Room(Path(args.dir), args.seats, shared=args.shared_tenant)
        print(f"using the room running at {hub_url}", flush=True)
    else:
        room, config, hub, tenant = start_room(args)
        print(f"started a room of {args.seats} seats at {hub_url}", flush=True)
    secrets = room.secrets()["passwords"]
    seats = room.names
    if any(s not in secrets for s in seats):
        raise LabError(f"the room at {hub_url} has fewer seats than --seats {args.seats}.")
    changes = {s: args.change == "all" or int(s.split("-")[1]) % 2 == 1 for s in seats}
    start, stop = time.monotonic(), threading.Event()
    pool = ThreadPoolExecutor(max_workers=len(seats))
    try:
        with MemoryWatch(seats, room.folder) as watch:
            results = run_seats(pool, [(hub_url, s, secrets[s], args.notebook, changes[s], stop) for s in seats])
        wall = time.monotonic() - start
        ready = max((r.ready_seconds for r in results if not math.isnan(r.ready_seconds)), default=math.nan)
        found = board_agrees(hub_url, secrets[FACILITATOR], results)
        servers = "pre-started by the facilitator" if getattr(args, "start_servers", False) else "started at each login"
        totals = report(results, watch, ready, wall, found, servers)
    except KeyboardInterrupt:  # Ctrl-C (or kill): every seat ends where it is, then the room stops
        print("stopping: every seat stops where it is, then the room", file=sys.stderr, flush=True)
        raise
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)  # seats notice within a websocket recv (5 s)
        if hub is not None:
            left = stop_room(hub, tenant)
            print(f"room stopped{f'; killed {len(left)} leftover processes' if left else ''}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"totals": totals, "seats": [
            {**asdict(r), "cells": [asdict(c) | {"text": ""} for c in r.cells]} for r in results]}, indent=1))
    bad = totals["failed_seats"] or totals["control_seats_with_failures"] or totals["board_disagrees"]
    return 1 if bad else 0
