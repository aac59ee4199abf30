"""`--start-servers`: the facilitator starts every seat's server before people log in, as JupyterHub
rooms commonly do (z2jh's pre-puller and `c.Spawner` start-ahead recipes), so a login finds its
JupyterLab running instead of waiting for it to start while 40 others start at once.

The facilitator is the hub's admin: one token of theirs starts every seat's server through the hub's
REST API (POST /hub/api/users/{name}/server, the call the admin page's "Start server" makes).
"""
from __future__ import annotations

import sys
import time

from labkit.errors import Unreachable
from labkit.room.kernel import SeatLogin
from labkit.room.seats import FACILITATOR


def start_servers(hub_url: str, password: str, seats: list[str], timeout: float = 300) -> float:
    """Ask the hub to start every seat's server, wait until all are ready; seconds it took."""
    login = SeatLogin(hub_url, FACILITATOR, password)
    start = time.monotonic()
    try:
        login.login()
        for seat in seats:
            login.ask_for_server(seat)
        waiting = set(seats)
        while True:
            users = login.client.get("/hub/api/users", params={"state": "active"}).json()
            ready = {u["name"] for u in users if (u.get("servers") or {}).get("", {}).get("ready")}
            if waiting & ready:
                waiting -= ready
                print(f"  seats' servers ready: {len(seats) - len(waiting)} of {len(seats)}", file=sys.stderr,
                      flush=True)
            if not waiting:
                break
            if time.monotonic() - start > timeout:
                raise Unreachable(f"{len(waiting)} seats' servers were not ready within {timeout:.0f} s "
                                  f"({', '.join(sorted(waiting)[:5])}...; see the hub's log)")
            time.sleep(1)
        return time.monotonic() - start
    finally:
        login.close()
