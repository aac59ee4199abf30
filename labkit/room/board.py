"""The facilitator's board: a hub-managed service at /services/labkit-board/ (JupyterHub's
examples/service-* and jupyterhub.services.auth are the model).

    GET  /services/labkit-board/                  the board (the facilitator: hub OAuth, admin only)
    GET  /services/labkit-board/api/seats         every seat as JSON (the facilitator's cookie or token)
    POST /services/labkit-board/api/seats/K/steps a seat reports a timeline step (that seat's own hub token)
    POST /services/labkit-board/api/seats/K/reset the facilitator resets one seat's lab

Each row joins three sources: the hub (is the seat's server running, its last activity), the seat's
reports (steps, heartbeats), and the seat's lab itself (state.py: flagd's pods, the cart, the
problem), read by the board where the seats' folders are on its machine (`labkit room`), else as the
seat's heartbeat reads it in the seat's pod (Zero to JupyterHub). A seat whose server runs but that has not reported for `silent_after` seconds is silent.

Run by the hub as `python -m labkit.room.board ROOM_FOLDER SEATS SILENT_AFTER shared|own`.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import ioloop, web

from labkit.room.seats import Room
from labkit.room.state import FAILURE_STEPS, read_seat

POLL = 3.0  # s between reads of every seat's lab


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat() if ts else None


class Board:
    """The seats as the board knows them: reports kept in memory, live state re-read every POLL s."""

    def __init__(self, room: Room, silent_after: float, hub_auth: HubOAuth):
        self.room, self.silent_after, self.hub_auth = room, silent_after, hub_auth
        self.reports = {name: {"steps": [], "last_report": None} for name in room.names}
        self.live: dict[str, dict] = {name: {} for name in room.names}
        self.servers: dict[str, dict] = {}
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="board")

    def report(self, seat: str, body: dict) -> None:
        seen = self.reports[seat]
        seen["last_report"] = time.time()
        step = body.get("step")
        if isinstance(step, dict) and step.get("kind"):
            step = {k: step.get(k) for k in ("kind", "time", "flag", "old", "new", "detail")}
            if step not in seen["steps"]:  # a seat sends a step again when the board's answer was slow
                seen["steps"].append(step)
        if body.get("cleared"):
            seen["steps"] = []
        if isinstance(body.get("state"), dict) and not self.room.state_dir(seat).is_dir():
            self.live[seat] = body["state"]  # on a cluster the seat's lab is in its pod: its own reading

    async def poll_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._poll_hub()
            except Exception as exc:  # the hub restarting: keep the last view
                print(f"labkit-board: the hub's API did not answer ({type(exc).__name__})", file=sys.stderr)
            local = [n for n in self.room.names if self.room.state_dir(n).is_dir()]
            reads = [loop.run_in_executor(self.pool, read_seat, self.room.state_dir(n)) for n in local]
            for name, got in zip(local, await asyncio.gather(*reads, return_exceptions=True)):
                self.live[name] = got if isinstance(got, dict) else {"lab": "unreadable", "error": repr(got)[:160]}
            await asyncio.sleep(POLL)

    async def _poll_hub(self) -> None:
        users = await self.hub_auth._api_request("GET", url_path_join(self.hub_auth.api_url, "users"))
        self.servers = {u["name"]: u for u in users}

    def row(self, seat: str) -> dict:
        seen, live, user = self.reports[seat], self.live.get(seat, {}), self.servers.get(seat, {})
        server = (user.get("servers") or {}).get("", {})
        running = bool(server.get("ready"))
        steps = seen["steps"]
        # The seat's own timeline when the board can read it; its reports otherwise (a cluster).
        kinds = live["timeline_steps"] if "timeline_steps" in live else [s["kind"] for s in steps]
        last = seen["last_report"]
        if not running:
            status = "stopped" if last else "not started"
        elif last is None or time.time() - last > self.silent_after:
            status = "silent"  # its server runs, but its kernels do not report: not fine
        elif live.get("lab") == "unreachable":
            status = "lab unreachable"
        else:
            status = "reporting"
        return {
            "seat": seat, "status": status, "server": "running" if running else ("pending" if server else "stopped"),
            "last_step": kinds[-1] if kinds else None,
            "last_step_time": steps[-1]["time"] if steps and steps[-1]["kind"] == kinds[-1] else None,
            "steps": kinds,
            "flag_served": live.get("flag_served"),
            "cart_reads": live.get("cart_reads"),
            "failures_seen": any(k in FAILURE_STEPS for k in kinds),
            "problem": live.get("problem"),
            "rolled_back": "rolled back" in kinds,
            "lab": live.get("lab", "not started"),
            "last_report": _iso(last),
            "last_activity": user.get("last_activity"),
            "error": live.get("error"),
        }

    def rows(self) -> list[dict]:
        return [self.row(name) for name in self.room.names]

    def reset(self, seat: str) -> str:
        """The seat's lab back to the start: every flag at its release's default, flagd restarted,
        its timeline cleared."""
        from labkit.lab import Lab
        from labkit.room.state import seat_settings

        settings = seat_settings(self.room.state_dir(seat))
        if settings is None:
            return f"{seat} has no lab running: nothing to reset"
        lab = Lab(settings)
        try:
            done = lab.reset()
        finally:
            lab.close()
        self.reports[seat]["steps"] = []
        return repr(done)


class BoardHandler(HubOAuthenticated, web.RequestHandler):
    """Only users the hub lets reach this service (the facilitator, an admin) get past here."""

    def initialize(self, board: Board):
        self.board = board  # hub_auth comes from the app's settings, as HubAuthenticated expects


class PageHandler(BoardHandler):
    @web.authenticated
    def get(self):
        self.set_header("Content-Type", "text/html; charset=utf-8")
        # the hub's OAuth cookie counts for the page's own fetches only with this token (HubOAuth's xsrf)
        page = PAGE.replace("{{prefix}}", os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/"))
        self.write(page.replace("{{xsrf}}", self.xsrf_token.decode()))


class SeatsHandler(BoardHandler):
    @web.authenticated
    def get(self):
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps({"seats": self.board.rows(), "silent_after": self.board.silent_after}))


class ResetHandler(BoardHandler):
    @web.authenticated
    async def post(self, seat: str):
        if seat not in self.board.reports:
            raise web.HTTPError(404, f"no seat {seat} in this room")
        loop = asyncio.get_running_loop()
        done = await loop.run_in_executor(self.board.pool, self.board.reset, seat)
        self.write({"seat": seat, "reset": done})


class StepsHandler(web.RequestHandler):
    """A seat's kernels report here with the seat's own hub token; another seat's token is refused."""

    def initialize(self, board: Board):
        self.board = board

    def check_xsrf_cookie(self):
        pass  # token-authenticated API (no cookie is accepted here)

    async def post(self, seat: str):
        header = self.request.headers.get("Authorization", "")
        token = header.split(None, 1)[1] if header.lower().startswith(("token ", "bearer ")) else ""
        user = await self.board.hub_auth.user_for_token(token, sync=False) if token else None
        if not user or user.get("name") != seat or seat not in self.board.reports:
            raise web.HTTPError(403, "only a seat's own server may report that seat's steps")
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "the report is not JSON") from None
        self.board.report(seat, body if isinstance(body, dict) else {})
        if self.board.room.state_dir(seat).is_dir():
            self.set_status(204)  # the board reads this seat's lab itself
        else:
            self.write({"send_state": True})  # a cluster: the seat's heartbeats carry its own reading


def make_app(board: Board, prefix: str) -> web.Application:
    seat = r"(seat-\d+)"
    return web.Application([
        (prefix, PageHandler, {"board": board}),
        (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
        (url_path_join(prefix, "api/seats"), SeatsHandler, {"board": board}),
        (url_path_join(prefix, f"api/seats/{seat}/steps"), StepsHandler, {"board": board}),
        (url_path_join(prefix, f"api/seats/{seat}/reset"), ResetHandler, {"board": board}),
    ], cookie_secret=os.urandom(32), hub_auth=board.hub_auth)


def main(argv: list[str] | None = None) -> None:
    from urllib.parse import urlparse

    folder, seats, silent_after, tenant = (argv or sys.argv[1:])[:4]
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/labkit-board/")
    hub_auth = HubOAuth(api_token=os.environ["JUPYTERHUB_API_TOKEN"], cache_max_age=60)
    board = Board(Room(Path(folder), int(seats), tenant == "shared"), float(silent_after), hub_auth)
    app = make_app(board, prefix)
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    # on this machine the board listens on loopback only; in the hub's pod (url http://hub:8181) on all
    app.listen(url.port, url.hostname if url.hostname in ("127.0.0.1", "localhost") else "")
    loop = ioloop.IOLoop.current()
    loop.spawn_callback(board.poll_forever)
    # the hub stops its services with SIGTERM: end quietly, as a service should
    signal.signal(signal.SIGTERM, lambda *_: loop.add_callback_from_signal(loop.stop))
    loop.start()


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>labkit room: the board</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#1b1b1b}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:.35em .5em;text-align:left;font-size:.9em}
th{background:#f3f3f3}.silent,.unreachable{background:#fff1c2}.stopped,.not-started{color:#888}
.open{color:#b00020;font-weight:600}.yes{color:#b00020}.no{color:#2e7d32}button{font-size:.8em}
</style></head><body>
<h1>The room, live</h1>
<p>Each row is one seat's real state: its server on the hub, the steps its kernels reported, and its own
lab read every few seconds (every Ready flagd pod, the cart, the problem). A seat whose server runs but that
stopped reporting shows as <b>silent</b>, not as fine.</p>
<table><thead><tr><th>seat</th><th>status</th><th>lab</th><th>last step</th><th>flagd pods serve</th><th>cart reads</th>
<th>failures seen</th><th>problem</th><th>rolled back</th><th>last activity</th><th></th></tr></thead>
<tbody id="rows"></tbody></table>
<p id="when"></p>
<script>
const prefix = "{{prefix}}", xsrf = "{{xsrf}}";
function ago(iso){if(!iso)return null;const s=Math.round((Date.now()-Date.parse(iso))/1000);
  return s<60?s+" s ago":Math.round(s/60)+" min ago";}
function cell(text,cls){const td=document.createElement("td");td.textContent=text??"—";if(cls)td.className=cls;return td;}
async function reset(seat){
  if(!confirm("Reset "+seat+"'s lab (every flag back to its release default, flagd restarted, timeline cleared)?"))return;
  const r=await fetch(prefix+"api/seats/"+seat+"/reset",{method:"POST",headers:{"X-XSRFToken":xsrf}});
  alert(r.ok?(await r.json()).reset:"reset failed: "+r.status);
}
async function refresh(){
  const r=await fetch(prefix+"api/seats",{headers:{"X-XSRFToken":xsrf}});
  if(!r.ok){document.getElementById("when").textContent="the board's API answered "+r.status;return;}
  const data=await r.json();const body=document.getElementById("rows");body.replaceChildren();
  for(const s of data.seats){
    const tr=document.createElement("tr");tr.className=s.status.replace(/ /g,"-");
    const served=s.flag_served?Object.entries(s.flag_served).map(([p,v])=>p.split("-").pop()+": "+(v??"?")).join(", "):null;
    tr.append(cell(s.seat),cell(s.status),cell(s.lab),cell(s.last_step),cell(served),cell(s.cart_reads),
      cell(s.failures_seen?"yes":"no",s.failures_seen?"yes":"no"),cell(s.problem,s.problem),
      cell(s.rolled_back?"yes":"no"),cell(ago(s.last_report||s.last_activity)));
    const td=document.createElement("td");const b=document.createElement("button");b.textContent="reset lab";
    b.onclick=()=>reset(s.seat);td.append(b);tr.append(td);body.append(tr);
  }
  document.getElementById("when").textContent="read at "+new Date().toLocaleTimeString();
}
refresh();setInterval(refresh,3000);
</script></body></html>
"""

if __name__ == "__main__":
    main()
