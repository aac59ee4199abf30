"""JupyterHub for a room: its configuration (rendered as a readable jupyterhub_config.py), and the hub
process: start it, wait until it answers, stop it and everything it started.

The hub runs seats with SimpleLocalProcessSpawner (no Unix users): each seat's JupyterLab runs in
the seat's home under the room's folder, with the seat's own LABKIT_STATE_DIR, so the first kernel
that calls `labkit.connect()` starts the seat's own local lab (and the kernel's end stops it).
jupyterhub-idle-culler, a hub service, stops servers idle for longer than the cull timeout.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from labkit.errors import LabError, Unreachable
from labkit.room.seats import BOARD, FACILITATOR, Room

PROXY = "configurable-http-proxy"
REPO = Path(__file__).resolve().parents[2]
SEAT_KEYS = ("LABKIT_STATE_DIR", "LABKIT_CLUSTER_NAME", "LABKIT_BOARD_URL")
# Seats on one machine share its loopback ports. Each seat's server picks its kernels' five TCP ports by
# binding port 0 and letting go; 40 servers doing so at once hand one port to two kernels, and the one
# that loses ("Address already in use") hangs in ipykernel's exit (zmq's Context.term), never answering
# (measured: 1 of 40 seats, and 1 of 2 in a loaded CI run). IPC sockets in each seat's own runtime dir
# take no ports. (A seat pod on Zero to JupyterHub has its own network, so it keeps TCP.)
KERNEL_TRANSPORT = "--KernelManager.transport=ipc"
RUNTIME_KEY = "JUPYTER_RUNTIME_DIR"  # a seat's own runtime dir, for those sockets


def hear_sigint() -> None:
    """In a child before exec: SIGINT back to its default. A `labkit room` started in the background
    has SIGINT ignored, which its children inherit, and the hub stops its services and seats' servers
    with SIGINT first (then waits before SIGTERM)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proxy_command(folder: Path, install: bool = True) -> str:
    """configurable-http-proxy from PATH or the room's own node_modules; installed there from npm
    the first time (nothing global)."""
    local = folder / "node_modules" / ".bin" / PROXY
    repo = REPO / ".room" / "node_modules" / ".bin" / PROXY  # where .ci/run and the README put it
    found = shutil.which(PROXY) or next((str(p) for p in (local, repo) if p.exists()), None)
    if found or not install:
        return found or str(local)
    npm = shutil.which("npm")
    if not npm:
        raise LabError(f"JupyterHub needs {PROXY} (from npm) and there is no npm on this machine. "
                       "Install Node.js and npm, then run labkit room again.")
    print(f"installing {PROXY} from npm into {folder}/node_modules (once)", file=sys.stderr)
    done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(folder), PROXY],
                          capture_output=True, text=True)
    if done.returncode or not local.exists():
        raise LabError(f"npm could not install {PROXY}: {done.stderr.strip()[-300:]}. "
                       f"Run `npm install --prefix {folder} {PROXY}` by hand to see why.")
    return str(local)


@dataclass
class HubConfig:
    """Everything the rendered jupyterhub_config.py says, as values (tests and z2jh read them)."""

    room: Room
    port: int = 8000
    hub_port: int = field(default_factory=free_port)
    proxy_api_port: int = field(default_factory=free_port)
    board_port: int = field(default_factory=free_port)
    proxy: str = PROXY
    cull_timeout: int = 3600       # s a seat's server may sit idle before the culler stops it
    cull_every: int = 0            # s between the culler's rounds (0: a tenth of the timeout, 10 s to 5 min)
    silent_after: float = 90.0     # s without a report after which the board shows a seat as silent
    passed_env: dict[str, str] = field(default_factory=dict)  # LABKIT_* settings every seat gets

    def __post_init__(self):
        self.cull_every = self.cull_every or max(10, min(300, self.cull_timeout // 10))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def board_url(self) -> str:
        return f"{self.url}/services/{BOARD}/"

    def seat_env(self) -> dict[str, dict[str, str]]:
        return {name: {**self.room.seat_env(name, self.board_url),
                       RUNTIME_KEY: str(self.room.runtime_dir(name))} for name in self.room.names}

    def render(self) -> str:
        """The hub's config file: plain assignments a facilitator can read and check."""
        room, py = self.room, sys.executable
        hub = room.hub_dir
        seats = sorted(room.names)
        return f'''# jupyterhub_config.py for a labkit room of {len(seats)} seats, written by `labkit room`.
# Passwords live in {room.secrets_path} (0600), not here.
import json

SEAT_ENV = json.loads({json.dumps(json.dumps(self.seat_env()))})


def seat_value(key):
    """A per-seat variable: JupyterHub calls it with the seat's spawner."""
    return lambda spawner: SEAT_ENV.get(spawner.user.name, {{}}).get(key, "")


c.JupyterHub.bind_url = {self.url!r}
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{self.hub_port}"
c.JupyterHub.db_url = "sqlite:///{hub}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{hub}/jupyterhub_cookie_secret"
c.JupyterHub.cleanup_servers = True  # the hub's end stops every seat's server (and its lab)
c.ConfigurableHTTPProxy.command = [{self.proxy!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.proxy_api_port}"

c.JupyterHub.authenticator_class = "labkit.room.auth.SeatAuthenticator"
c.SeatAuthenticator.secrets_file = "{room.secrets_path}"
c.Authenticator.allowed_users = {set(seats) | {FACILITATOR}!r}
c.Authenticator.admin_users = {{{FACILITATOR!r}}}

c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
c.SimpleLocalProcessSpawner.home_dir_template = "{room.folder}/seats/{{username}}"
c.Spawner.cmd = [{py!r}, "-m", "jupyterhub.singleuser"]
c.Spawner.args = {[KERNEL_TRANSPORT] + (["--allow-root"] if os.geteuid() == 0 else [])!r}  # root: CI runs as root
c.Spawner.default_url = "/lab/tree/01-introduce-change.ipynb"
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 180
c.Spawner.environment = {{
    **{self.passed_env!r},
    **{{key: seat_value(key) for key in {[*SEAT_KEYS, RUNTIME_KEY]!r}}},
}}

c.JupyterHub.services = [
    {{"name": {BOARD!r}, "url": "http://127.0.0.1:{self.board_port}", "oauth_no_confirm": True,
     "command": [{py!r}, "-m", "labkit.room.board", "{room.folder}", "{len(seats)}", "{self.silent_after}",
                 "{'shared' if room.shared else 'own'}"]}},
    {{"name": "idle-culler",
     "command": [{py!r}, "-m", "jupyterhub_idle_culler", "--timeout={self.cull_timeout}",
                 "--cull-every={self.cull_every}"]}},
]
c.JupyterHub.load_roles = [
    {{"name": "idle-culler", "services": ["idle-culler"],
     "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"]}},
    {{"name": {BOARD!r}, "services": [{BOARD!r}],
     "scopes": ["list:users", "read:users", "read:users:activity", "read:servers"]}},
]
'''


class Hub:
    """The hub process of one room, and everything it starts (proxy, seats' servers, services)."""

    def __init__(self, config: HubConfig):
        self.config = config
        self.proc: subprocess.Popen | None = None
        self.log_path = config.room.hub_dir / "hub.log"

    def start(self, timeout: float = 60) -> "Hub":
        hub_dir = self.config.room.hub_dir
        (hub_dir / "jupyterhub.sqlite").unlink(missing_ok=True)  # a room starts with no servers on record
        config_path = hub_dir / "jupyterhub_config.py"
        config_path.write_text(self.config.render())
        self.config.room.make_runtime_dirs()
        log = open(self.log_path, "ab")
        # its own session: the terminal's Ctrl-C reaches labkit room, which stops the hub in order
        self.proc = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(config_path)],
                                     cwd=hub_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=hear_sigint)
        log.close()
        try:
            self._wait_ready(timeout)
        except BaseException:  # Ctrl-C while it starts: the hub is in its own session, stop it here
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Unreachable(f"JupyterHub exited at start (code {self.proc.returncode}): "
                                  f"{self.log_tail()} (whole log: {self.log_path})")
            try:
                if httpx.get(f"{self.config.url}/hub/api/", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise Unreachable(f"JupyterHub did not answer at {self.config.url} within {timeout:.0f} s: "
                          f"{self.log_tail()} (whole log: {self.log_path})")

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return " | ".join(line.strip()[:200] for line in text[-lines:])

    def processes(self) -> list:
        """The hub and every process under it (psutil.Process), now."""
        import psutil

        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 30) -> list[int]:
        """Stop the hub (it stops the seats' servers, the proxy and its services), then make sure
        nothing it started is left: returns the pids that had to be killed (none, normally)."""
        import psutil

        if self.proc is None:
            return []
        started = self.processes()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        # each server's kernels and lab stop in turn on a shared CPU: 40 seats' take longer than 10 s
        _, alive = psutil.wait_procs(started[1:], timeout=max(10.0, 0.5 * len(started)))
        for p in alive:  # only processes this hub started, by pid
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        self.proc = None
        shutil.rmtree(self.config.room.runtime_root, ignore_errors=True)
        return [p.pid for p in alive]


def passed_env(environ=None) -> dict[str, str]:
    """LABKIT_* settings of `labkit room` (the local lab's timings, the demo release) that every
    seat gets; never a token, and never the seat's own keys."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items()
            if k.startswith("LABKIT_") and k not in SEAT_KEYS and "TOKEN" not in k and k != "LABKIT_LOCAL_LAB"}


def describe(config: HubConfig) -> str:
    room = config.room
    return "\n".join([
        f"JupyterHub for {room.seats} seats: {config.url}/",
        f"  facilitator login: {FACILITATOR} (passwords of every seat and the facilitator: {room.secrets_path})",
        f"  seats: {', '.join(room.names[:3])}{' ...' if room.seats > 3 else ''}, each its own JupyterLab and local lab",
        f"  board: {config.board_url}",
        f"  hub log: {room.hub_dir / 'hub.log'}",
    ])

