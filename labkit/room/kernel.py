"""One seat as an attendee drives it: log in through the hub's form, start the seat's server, open a
notebook (a Jupyter session, as JupyterLab does), and run its cells in the seat's own kernel over the
kernel's websocket (Jupyter's messaging protocol, v5.3), timing each cell."""
from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx

from labkit.errors import LabError, Unreachable


@dataclass
class CellRun:
    """One cell as it ran: what it called first, how long it took, and its error if any."""

    name: str
    seconds: float
    error: str | None = None
    text: str = ""  # stream and text/plain output (for reading values back)


@dataclass
class SeatLogin:
    """A seat's session on the hub: its cookie login, then an API token for its own server."""

    hub_url: str
    seat: str
    password: str
    client: httpx.Client = field(init=False)
    token: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)  # set on Ctrl-C: the seat ends where it is

    def __post_init__(self):
        self.client = httpx.Client(base_url=self.hub_url, timeout=60)

    def login(self) -> None:
        """The hub's login form, as a browser posts it (with the _xsrf cookie's value)."""
        self.client.get("/hub/login")
        r = self.client.post("/hub/login", data={"username": self.seat, "password": self.password,
                                                 "_xsrf": self.client.cookies.get("_xsrf", "")})
        if r.status_code != 302 or "jupyterhub-hub-login" not in self.client.cookies:
            raise LabError(f"{self.seat} could not log in to the hub ({r.status_code}); its password is in "
                           "the room's secrets.json.")
        r = self.client.post(f"/hub/api/users/{self.seat}/tokens", json={"note": "labkit room rehearse",
                                                                          "expires_in": 4 * 3600},
                             headers={"X-XSRFToken": self.client.cookies.get("_xsrf", "")})
        r.raise_for_status()
        self.token = r.json()["token"]
        self.client.headers["Authorization"] = f"token {self.token}"

    def start_server(self, timeout: float = 300) -> float:
        """Ask the hub for the seat's server (as the spawn page does); seconds until it is ready."""
        start = time.monotonic()
        self.ask_for_server(self.seat)
        while time.monotonic() - start < timeout:
            server = (self.client.get(f"/hub/api/users/{self.seat}").json().get("servers") or {}).get("", {})
            if server.get("ready"):
                return time.monotonic() - start
            self.pause(0.5)
        raise Unreachable(f"{self.seat}'s server was not ready within {timeout:.0f} s (see the hub's log)")

    def ask_for_server(self, seat: str) -> None:
        """POST the hub's start of `seat`'s server (its own, or any seat's as the admin facilitator)."""
        r = self.client.post(f"/hub/api/users/{seat}/server")
        if r.status_code not in (201, 202, 400):  # 400: already running
            raise LabError(f"the hub would not start {seat}'s server: {r.status_code} {r.text[:200]}")

    def pause(self, seconds: float) -> None:
        """Sleep, unless the rehearsal is stopped (then KeyboardInterrupt, in this seat's thread)."""
        if self.stop.wait(seconds):
            raise KeyboardInterrupt

    def close(self) -> None:
        self.client.close()


class SeatKernel:
    """A notebook's session and kernel in the seat's own server, over one websocket that reconnects as
    JupyterLab's does: with the same session id, so the server replays what the kernel said meanwhile."""

    RECONNECTS = 7  # JupyterLab's limit; it waits 1, 2, 4 ... s between tries

    def __init__(self, login: SeatLogin, notebook: str):
        self.login, self.notebook = login, notebook
        self.base = f"/user/{login.seat}/"
        self.session_id = uuid.uuid4().hex
        self.reconnects = 0  # over the kernel's life (a rehearsal reports them)
        r = login.client.post(self.base + "api/sessions", json={
            "path": notebook, "name": notebook, "type": "notebook", "kernel": {"name": "python3"}})
        r.raise_for_status()
        self.kernel_id = r.json()["kernel"]["id"]
        self.ws = None
        self._reconnect(first=True)

    def _connect(self):
        import websocket

        url = (self.login.hub_url.replace("http", "ws", 1) + self.base +
               f"api/kernels/{self.kernel_id}/channels?session_id={self.session_id}")
        # 40 seats' servers and kernels starting on 2 cores answer the upgrade slowly (measured: 30 s was too
        # short for 2 of 40); a browser's JupyterLab waits and retries as long
        ws = websocket.create_connection(url, header=[f"Authorization: token {self.login.token}"], timeout=120)
        ws.settimeout(5)  # a cell may run for minutes without a message: recv wakes up to check the deadline
        return ws

    def _reconnect(self, first: bool = False) -> None:
        """(Re)open the websocket. The server drops it when the kernel does not answer within its
        kernel_info_timeout (a kernel still starting on a loaded machine), or a proxy restarts."""
        import websocket

        if self.ws is not None:
            self.ws.close()
        for attempt in range(self.RECONNECTS + 1):
            try:
                self.ws = self._connect()
                self.reconnects += not first
                return
            except (websocket.WebSocketException, OSError) as exc:
                if getattr(exc, "status_code", None) in (403, 404) or attempt == self.RECONNECTS:  # gone
                    raise Unreachable(f"{self.login.seat}'s kernel websocket would not open after "
                                      f"{attempt + 1} tries: {type(exc).__name__}: {str(exc)[:200]}") from exc
                self.login.pause(2 ** attempt)

    def cells(self) -> list[str]:
        """The notebook's code cells, as the server has the file (the workbook as shipped)."""
        r = self.login.client.get(self.base + f"api/contents/{quote(self.notebook)}")
        r.raise_for_status()
        return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                for c in r.json()["content"]["cells"] if c["cell_type"] == "code"]

    def _send(self, msg_type: str, content: dict, msg_id: str) -> None:
        import websocket

        message = json.dumps({
            "header": {"msg_id": msg_id, "username": self.login.seat, "session": self.session_id,
                       "msg_type": msg_type, "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [], "content": content})
        try:
            self.ws.send(message)
        except (websocket.WebSocketException, OSError):
            self._reconnect()
            self.ws.send(message)

    def _recv(self) -> dict | None:
        """The next message, or None after a quiet 5 s or a reconnect (self.reconnects tells which)."""
        import websocket

        try:
            return json.loads(self.ws.recv())
        except websocket.WebSocketTimeoutException:
            return None
        except (websocket.WebSocketConnectionClosedException, OSError):
            self._reconnect()
            return None

    def run(self, code: str, timeout: float = 900) -> CellRun:
        msg_id, probe = uuid.uuid4().hex, None
        execute = {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                   "allow_stdin": False, "stop_on_error": True}
        self._send("execute_request", execute, msg_id)
        start, error, texts, replied, idle, heard = time.monotonic(), None, [], False, False, False
        connection = self.reconnects  # the websocket the cell went out on
        while not (replied and idle):
            if time.monotonic() - start > timeout:
                raise Unreachable(f"a cell ran longer than {timeout:.0f} s in {self.login.seat}'s kernel")
            self.login.pause(0)  # Ctrl-C: within a recv's 5 s
            msg = self._recv()
            if self.reconnects != connection:
                connection = self.reconnects
                if not heard:  # did the kernel get the cell? Its shell answers in order: ask it something
                    probe = uuid.uuid4().hex
                    self._send("kernel_info_request", {}, probe)
            if msg is None:
                continue
            parent = (msg.get("parent_header") or {}).get("msg_id")
            if parent == probe and msg["msg_type"] == "kernel_info_reply":
                probe = None
                if not heard:  # the kernel answered what came after the cell, and never saw the cell
                    self._send("execute_request", execute, msg_id)
                continue
            if parent != msg_id:
                continue
            heard = True
            kind, content = msg["msg_type"], msg.get("content", {})
            if kind == "execute_reply":
                replied = True
                if content.get("status") == "error" and not error:
                    error = f"{content.get('ename')}: {content.get('evalue', '')[:300]}"
            elif kind == "error":
                error = f"{content.get('ename')}: {content.get('evalue', '')[:300]}"
            elif kind == "stream":
                texts.append(content.get("text", ""))
            elif kind in ("execute_result", "display_data"):
                texts.append(content.get("data", {}).get("text/plain", ""))
            elif kind == "status" and content.get("execution_state") == "idle":
                idle = True
        return CellRun(cell_name(code), time.monotonic() - start, error, "".join(texts))

    def close(self, shutdown: bool = False) -> None:
        try:
            if self.ws is not None:
                self.ws.close()
        finally:
            if shutdown:
                self.login.client.delete(self.base + f"api/kernels/{self.kernel_id}")


def cell_name(code: str) -> str:
    """A cell's short name: what it assigns or calls first ('lab = labkit.connect()' -> 'connect')."""
    import re

    for line in code.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "import ", "from ")):
            continue
        call = re.search(r"([A-Za-z_][\w]*)\s*\(", line)
        return call.group(1) if call else line[:24]
    return "imports"
