"""`labkit room`: a small room on JupyterHub, end to end, as a facilitator and its attendees meet it.

Needs JupyterHub (requirements.txt) and configurable-http-proxy (npm; .ci/run installs it in .room/).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from labkit import releases
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # browser.py
pytest.importorskip("jupyterhub", reason="labkit room needs JupyterHub (pip install -r requirements.txt)")
PROXY = shutil.which("configurable-http-proxy") or ROOT / ".room/node_modules/.bin/configurable-http-proxy"
pytestmark = pytest.mark.skipif(not Path(PROXY).exists() and not shutil.which("npm"),
                                reason="no configurable-http-proxy and no npm to install it")

FAST = {"LABKIT_POD_START": "0.3", "LABKIT_POD_TERMINATE": "0.3",
        "LABKIT_GRAIL_DELAY": "0.05", "LABKIT_BOARD_HEARTBEAT": "1"}


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DT_", "LABKIT_", "KUBECONFIG"))}
    return {**env, **FAST, "PYTHONPATH": str(ROOT), **extra}


def _free_port() -> int:
    from labkit.room.hub import free_port

    return free_port()


# ------------------------------------------------------------------------------ the hub's config
def test_the_hub_config_names_every_seat_the_facilitator_and_no_password(tmp_path):
    from traitlets.config import Config

    from labkit.room.hub import HubConfig
    from labkit.room.seats import Room

    room = Room(tmp_path / "room", 3)
    made = room.prepare()
    text = HubConfig(room, port=8123, proxy="/x/configurable-http-proxy").render()
    assert not any(p in text for p in made["passwords"].values()) and made["board_token"] not in text
    c = Config()
    exec(compile(text, "jupyterhub_config.py", "exec"), {"c": c})  # noqa: S102 - our own rendered file
    assert c.Authenticator.allowed_users == {"seat-1", "seat-2", "seat-3", "facilitator"}
    assert c.Authenticator.admin_users == {"facilitator"}
    assert c.JupyterHub.spawner_class == "jupyterhub.spawner.SimpleLocalProcessSpawner"
    assert [s["name"] for s in c.JupyterHub.services] == ["labkit-board", "idle-culler"]
    spawner = type("S", (), {"user": type("U", (), {"name": "seat-2"})()})()
    env = {k: (v(spawner) if callable(v) else v) for k, v in c.Spawner.environment.items()}
    assert env["LABKIT_CLUSTER_NAME"] == "seat-2"
    assert env["LABKIT_STATE_DIR"] == str(room.folder / "seats" / "seat-2" / ".labkit")
    assert env["LABKIT_BOARD_URL"] == "http://127.0.0.1:8123/services/labkit-board/"
    home = room.home("seat-2")
    assert (home / "01-introduce-change.ipynb").is_file() and oct(home.stat().st_mode)[-3:] == "700"
    assert oct(room.secrets_path.stat().st_mode)[-3:] == "600"


# -------------------------------------------------------------------- a room, until Ctrl-C
@pytest.fixture(scope="module")
def room(tmp_path_factory):
    """`labkit room --seats 2` in the foreground of its own process, as a facilitator runs it."""
    folder = tmp_path_factory.mktemp("room") / ".room"
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "labkit", "room", "--seats", "2", "--port", str(port),
                             "--dir", str(folder), "--silent-after", "20"], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Ctrl-C") or proc.poll() is not None:
            break
    assert any("board: " in x for x in lines), "".join(lines)
    proc.lines, proc.url, proc.folder = lines, f"http://127.0.0.1:{port}", folder
    proc.passwords = json.loads((folder / "secrets.json").read_text())["passwords"]
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def _login(room, seat):
    from labkit.room.kernel import SeatLogin

    login = SeatLogin(room.url, seat, room.passwords[seat])
    login.login()
    return login


def _board(room, login, path="api/seats", method="GET", **kw):
    return login.client.request(method, f"/services/labkit-board/{path}", **kw)


def _row(room, facilitator, seat, until, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        row = {r["seat"]: r for r in _board(room, facilitator).json()["seats"]}[seat]
        if until(row) or time.monotonic() > deadline:
            return row
        time.sleep(0.5)


def test_the_room_prints_the_hub_the_facilitators_login_and_the_board(room):
    text = "".join(room.lines)
    assert f"JupyterHub for 2 seats: {room.url}/" in text
    assert "facilitator login: facilitator" in text
    assert f"board: {room.url}/services/labkit-board/" in text
    assert not any(p in text for p in room.passwords.values())  # passwords stay in secrets.json


def test_only_the_facilitator_reads_the_board(room):
    seat = _login(room, "seat-1")
    facilitator = _login(room, "facilitator")
    try:
        assert _board(room, seat).status_code == 403
        assert httpx.get(f"{room.url}/services/labkit-board/api/seats", timeout=10).status_code in (302, 403)
        rows = _board(room, facilitator).json()["seats"]
        assert [r["seat"] for r in rows] == ["seat-1", "seat-2"]
        assert all(r["status"] == "not started" for r in rows)
    finally:
        seat.close()
        facilitator.close()


def test_a_seat_reports_its_steps_goes_silent_and_the_facilitator_resets_its_lab(room):
    from labkit.room.kernel import SeatKernel

    seat = _login(room, "seat-1")
    facilitator = _login(room, "facilitator")
    other = _login(room, "seat-2")
    try:
        seat.start_server()
        kernel = SeatKernel(seat, "01-introduce-change.ipynb")
        # its kernel talks over IPC sockets in the seat's short runtime dir: no loopback port to race for
        from labkit.room.seats import Room

        files = list(Room(room.folder, 2).runtime_dir("seat-1").glob("kernel-*.json"))
        assert files and {json.loads(f.read_text())["transport"] for f in files} == {"ipc"}
        on = releases.get().lab_on_variant  # the lab page's `on` on the seat's demo release
        for code in ("import labkit\nlab = labkit.connect()", f"lab.change_flag({on!r})"):
            assert kernel.run(code, timeout=120).error is None
        row = _row(room, facilitator, "seat-1", lambda r: "flag applied" in r["steps"] and r["flag_served"]
                   and set(r["flag_served"].values()) == {on})
        assert row["status"] == "reporting" and row["lab"] == "running"
        assert set(row["flag_served"].values()) == {on}, row
        # a seat's token reports only for that seat
        forged = other.client.post("/services/labkit-board/api/seats/seat-1/steps",
                                   json={"step": {"kind": "rolled back"}})
        assert forged.status_code == 403
        # the facilitator resets seat-1's lab: flag off and served everywhere, a new run begun by the reset
        reset = _board(room, facilitator, "api/seats/seat-1/reset", "POST")
        assert reset.status_code == 200 and "cartFailure" in reset.json()["reset"], reset.text
        row = _row(room, facilitator, "seat-1", lambda r: r["flag_served"] and
                   set(r["flag_served"].values()) == {"off"} and r["steps"] == ["lab reset"])
        assert set(row["flag_served"].values()) == {"off"} and row["steps"] == ["lab reset"]
        # the kernel ends (as a crashed or closed notebook does): the seat goes silent, not fine
        kernel.close(shutdown=True)
        row = _row(room, facilitator, "seat-1", lambda r: r["status"] == "silent")
        assert row["status"] == "silent" and row["server"] == "running"
    finally:
        for login in (seat, facilitator, other):
            login.close()


def test_the_facilitator_sees_the_board_in_a_browser_and_resets_a_seat(room):
    """Debian's chromium: the hub's login, then the board's rows, live; "reset lab" on seat-1."""
    import browser

    if browser.missing():
        pytest.skip(browser.missing())
    from playwright.sync_api import sync_playwright

    seat = _login(room, "seat-1")
    try:
        seat.start_server()
        from labkit.room.kernel import SeatKernel

        kernel = SeatKernel(seat, "01-introduce-change.ipynb")
        code = f"import labkit\nlab = labkit.connect()\nlab.change_flag({releases.get().lab_on_variant!r})"
        assert kernel.run(code, timeout=120).error is None
        browser.ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            chromium = p.chromium.launch(executable_path=browser.CHROMIUM, args=browser.CHROMIUM_ARGS)
            page = chromium.new_page(viewport={"width": 1400, "height": 420})
            page.goto(f"{room.url}/services/labkit-board/")
            page.fill("#username_input", "facilitator")
            page.fill("#password_input", room.passwords["facilitator"])
            page.click("#login_submit")
            row = page.locator("#rows tr", has_text="seat-1")
            # what every flagd pod serves (read from the lab) and the last step (reported) may come in
            # either order: wait for both, as a facilitator watching the board would
            row.filter(has_text=f": {releases.get().lab_on_variant}").filter(has_text="flagd serving the new value").wait_for(timeout=60000)
            page.screenshot(path=str(browser.ARTIFACTS / "room-board.png"))
            page.on("dialog", lambda d: d.accept())
            row.locator("button").click()
            row.filter(has_text=": off").wait_for(timeout=30000)
            page.screenshot(path=str(browser.ARTIFACTS / "room-board-after-reset.png"))
            chromium.close()
        kernel.close()
    finally:
        seat.close()


def test_ctrl_c_stops_the_hub_every_seat_and_leaves_nothing_running(room):
    import psutil

    seat = _login(room, "seat-2")
    try:
        seat.start_server()
    finally:
        seat.close()
    family = psutil.Process(room.pid).children(recursive=True)
    commands = [" ".join(p.cmdline()) for p in family]
    assert any("jupyterhub.singleuser" in c for c in commands) and any("labkit.room.board" in c for c in commands)
    room.send_signal(signal.SIGINT)
    rest = room.stdout.read()
    assert room.wait(60) == 0
    assert "room stopped" in rest and "leftover" not in rest
    assert [p.pid for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []


# ------------------------------------------------------------------- the rehearsal, end to end
def test_rehearse_a_small_room_odd_seats_change_even_seats_stay_clean(tmp_path):
    # --start-servers: the facilitator starts the seats' servers first (the tests above cover a login
    # that starts its own server), so each login finds its server running
    out = tmp_path / "rehearsal.json"
    done = subprocess.run([sys.executable, "-m", "labkit", "room", "rehearse", "--seats", "2", "--change", "odd",
                           "--port", str(_free_port()), "--dir", str(tmp_path / ".room"), "--json", str(out),
                           "--start-servers"],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    seats = {s["seat"]: s for s in result["seats"]}
    assert seats["seat-1"]["changes"] and "problem opened" in seats["seat-1"]["steps"]
    assert not seats["seat-2"]["changes"] and seats["seat-2"]["control_failures"] == 0
    assert "first failure seen by the shop" not in seats["seat-2"]["steps"]
    assert result["totals"]["board_disagrees"] == {} and result["totals"]["failed_seats"] == []
    assert "seat-1 (changes cartFailure)" in done.stdout and "room: seats 2" in done.stdout
    from labkit.room.seats import Room

    assert not Room(tmp_path / ".room", 2).runtime_root.exists()  # the kernels' IPC sockets went with the hub
    assert "room stopped" in done.stdout and "leftover" not in done.stdout
    assert "started 2 seats' servers in" in done.stdout and "seats' servers ready: 2 of 2" in done.stderr
    assert result["totals"]["servers"] == "pre-started by the facilitator"
    assert all(s["ready_seconds"] < 1.0 for s in seats.values()), seats  # found running: no server starts in 1 s


def test_ctrl_c_stops_a_rehearsal_while_its_seats_run_cells_and_leaves_nothing_running(tmp_path):
    import psutil

    # its own session, signalled as a group: what a terminal's Ctrl-C does (the hub has its own session)
    proc = subprocess.Popen([sys.executable, "-m", "labkit", "room", "rehearse", "--seats", "2", "--change", "all",
                             "--port", str(_free_port()), "--dir", str(tmp_path / ".room"), "--start-servers"],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:  # both seats' kernels running 01
            if len(_room_kernels(tmp_path / ".room", 2)) >= 2:
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(2)  # into 01's cells
        family = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGINT)
        sent = time.monotonic()
        out = proc.communicate(timeout=120)[0]
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-3000:]
    assert "stopping: every seat stops where it is" in out and "room stopped" in out and "leftover" not in out
    assert took < 20, f"{took:.1f} s from Ctrl-C to exit (the seats ran 01 to its end first?)\n{out[-2000:]}"
    assert [p.pid for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    assert "room: seats" not in out  # no report of a rehearsal that did not run


def _room_kernels(folder: Path, seats: int) -> list:
    """The room's seats' kernels: their connection files are in the room's runtime dirs (not its folder)."""
    import psutil

    from labkit.room.seats import Room

    runtime = str(Room(folder, seats).runtime_root)
    return [p for p in psutil.process_iter(["cmdline"])
            if "ipykernel" in " ".join(p.info["cmdline"] or []) and runtime in " ".join(p.info["cmdline"] or [])]


# ------------------------------------------------------------------------ a seat's reports, culling
def test_the_timeline_tells_its_hooks_and_a_failing_hook_stops_nothing(tmp_path):
    from labkit import timeline

    seen = []

    def broken(step):
        raise RuntimeError("the board is down")

    timeline.HOOKS[:] = [broken, seen.append]
    try:
        run = timeline.Timeline(tmp_path / "timeline.jsonl")
        step = run.add(timeline.FLAG_APPLIED, flag="cartFailure", old="off", new="on")
        run.clear()
    finally:
        timeline.HOOKS.clear()
    assert seen == [step, None]  # None: the run was cleared (the board forgets the seat's steps)


def test_the_report_hook_installs_only_in_a_seat_of_a_room(monkeypatch):
    from labkit.room import report

    assert report.install({"LABKIT_BOARD_URL": "http://127.0.0.1:1/services/labkit-board/"}) is None
    assert report.install({}) is None


def test_an_idle_seat_is_culled_and_its_lab_stops_with_it(tmp_path):
    """jupyterhub-idle-culler, a hub service, stops a seat's server idle past --cull-after; the seat's
    local lab lived in its kernel, so it stops too (its Kubernetes API no longer answers)."""
    from labkit.room.kernel import SeatKernel, SeatLogin

    folder, port = tmp_path / ".room", _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "labkit", "room", "--seats", "1", "--port", str(port),
                             "--dir", str(folder), "--cull-after", "10"], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("Ctrl-C") or proc.poll() is not None:
                break
        url = f"http://127.0.0.1:{port}"
        password = json.loads((folder / "secrets.json").read_text())["passwords"]["seat-1"]
        seat = SeatLogin(url, "seat-1", password)
        seat.login()
        seat.start_server()
        kernel = SeatKernel(seat, "01-introduce-change.ipynb")
        assert kernel.run("import labkit\nlab = labkit.connect()", timeout=120).error is None
        kernel.close()
        kubeconfig = folder / "seats/seat-1/.labkit/kubeconfig"
        server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            servers = seat.client.get("/hub/api/users/seat-1").json().get("servers") or {}
            if not servers:
                break
            time.sleep(1)
        assert servers == {}, "the culler did not stop the idle seat"
        # the kernel, orphaned when its server stops, ends itself within seconds (ipykernel's parent
        # poller), and the seat's lab with it
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(server + "/healthz", verify=False, timeout=2)
            except httpx.ConnectError:
                break
            time.sleep(0.5)
        with pytest.raises(httpx.ConnectError):
            httpx.get(server + "/healthz", verify=False, timeout=2)
        assert _room_kernels(folder, 1) == [], "a culled seat's kernel is still running"
        seat.close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def test_on_a_cluster_the_board_shows_the_state_a_seat_reads_in_its_own_pod(tmp_path):
    """Zero to JupyterHub: the seats' folders are in their pods, not beside the board; each heartbeat
    then carries the seat's own reading of its lab, and the row shows it (silent when it stops)."""
    from labkit.room.board import Board
    from labkit.room.seats import Room

    board = Board(Room(tmp_path / "srv", 2), silent_after=60, hub_auth=None)
    board.servers = {"seat-1": {"servers": {"": {"ready": True}}}, "seat-2": {"servers": {"": {"ready": True}}}}
    board.report("seat-1", {"step": {"kind": "flag applied", "time": "2026-12-02T10:00:00+00:00"}})
    board.report("seat-1", {"heartbeat": True, "state": {"lab": "running", "flag_served": {"flagd-a": "on"},
                                                          "problem": "open"}})
    one, two = board.rows()
    assert (one["status"], one["last_step"], one["flag_served"], one["problem"]) == \
        ("reporting", "flag applied", {"flagd-a": "on"}, "open")
    assert two["status"] == "silent" and two["lab"] == "not started"  # running, never reported: not fine


def test_the_board_says_what_the_cart_reads_and_when_it_is_only_its_default():
    from types import SimpleNamespace

    from labkit.room.state import _cart_text

    assert _cart_text(SimpleNamespace(value=0.1, variant="10%", error_code=None)) == "0.1 (10%)"
    assert _cart_text(SimpleNamespace(value=0, variant=None, error_code="TYPE_MISMATCH")) == \
        "0 (TYPE_MISMATCH: its code default)"


def test_the_rehearsal_takes_a_closed_problem_only_from_a_seat_that_saw_it_open():
    from labkit.room.rehearse import SeatResult, disagreements

    seat = SeatResult("seat-1", changes=True, steps=["change", "problem opened"])
    row = {"steps": seat.steps, "status": "reporting", "flag_served": {"flagd-1": "on"}, "problem": "closed"}
    assert disagreements(seat, row) == []  # it opened, then closed a quiet period after the seat's last failure
    never = SeatResult("seat-3", changes=True, steps=["change"])
    assert disagreements(never, {**row, "steps": never.steps}) == [
        "board problem 'closed', the seat waited for an open one"]
    assert disagreements(seat, {**row, "problem": "none"}) == ["board problem 'none', the seat waited for an open one"]
