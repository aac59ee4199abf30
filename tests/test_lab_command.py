"""`labkit lab` as a newcomer meets it: JupyterLab on copies of the workbook that git does not track,
open on 00-setup, the URL printed last, Jupyter's and the kernels' log lines in a file, not the
terminal; a second `labkit lab` attaches to the running local lab, and its Ctrl-C leaves that lab alone."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import browser as ui
from labkit.settings import read_dotenv
from labkit.workbook import NOTEBOOKS, copy_workbook

ROOT = Path(__file__).resolve().parent.parent
URL = re.compile(r"^    (http://127\.0\.0\.1:(\d+)/lab/tree/00-setup\.ipynb\?token=\w+)$")


def _env(tmp: Path, kernel_env: dict) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DT_", "LABKIT_")) and k not in (
        "KUBECONFIG", "FRONTEND_URL", "CODESPACE_VSCODE_FOLDER")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**env, **kernel_env, **ui.isolated_jupyter_env(tmp / "jupyter"),
            "LABKIT_STATE_DIR": str(tmp / "state"), "LABKIT_WORKBOOK_DIR": str(tmp / "workbook"),
            "LABKIT_SEED_HOURS": "0.2", "LABKIT_POD_START": "0.3", "LABKIT_POD_TERMINATE": "0.3"}


class Terminal:
    """`labkit lab` in a terminal of its own: what it printed, and Ctrl-C to its process group."""

    def __init__(self, env: dict[str, str], sigint_ignored: bool = False):
        # sigint_ignored: as `labkit lab &` in a script starts it (the shell ignores SIGINT for it)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "labkit", "lab", "--no-browser", "--port", str(ui.free_port())],
            env=env, cwd=ROOT / "tests", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None)
        self.lines: list[str] = []
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            match = URL.match(self.lines[-1])
            if match:
                self.url = match.group(1)
                return
        raise AssertionError(f"no URL: {self.lines} {self.proc.stderr.read()}")

    def ctrl_c(self) -> tuple[str, str]:
        os.killpg(self.proc.pid, signal.SIGINT)
        rest, err = self.proc.communicate(timeout=60)  # JupyterLab gets 30 s to stop, then is killed
        return rest, err


@pytest.fixture
def terminals(tmp_path, kernel_env):
    made: list[Terminal] = []

    def open_one(**how) -> Terminal:
        made.append(Terminal(_env(tmp_path, kernel_env), **how))
        return made[-1]

    yield open_one
    for t in made:
        if t.proc.poll() is None:
            t.ctrl_c()


def test_jupyterlab_opens_on_00_with_the_url_last_and_its_log_in_the_state_dir(terminals, tmp_path):
    first = terminals(sigint_ignored=True)  # its Ctrl-C must work even so
    state = tmp_path / "state"

    assert first.lines[0].startswith("Started the local lab")
    page = httpx.get(first.url, timeout=10)
    assert page.status_code == 200 and "JupyterLab" in page.text
    nb = httpx.get(first.url.replace("/lab/tree/", "/api/contents/"), timeout=10).json()
    assert nb["name"] == "00-setup.ipynb" and nb["path"] == "00-setup.ipynb"  # the workbook copy
    assert sorted(p.name for p in (tmp_path / "workbook").glob("*.ipynb")) == sorted(
        p.name for p in NOTEBOOKS.glob("*.ipynb"))
    port = URL.match(first.lines[-1]).group(2)
    log = (state / f"jupyterlab-{port}.log").read_text()
    assert "Jupyter Server" in log and f"{state / f'jupyterlab-{port}.log'}" in "\n".join(first.lines)

    rest, err = first.ctrl_c()
    assert rest.strip() == ""  # the URL stays the last thing the terminal shows
    assert "[I " not in err and "ServerApp" not in err  # Jupyter's ~25 start lines are in the file
    assert not (state / "lab.env").exists()  # it started the local lab: Ctrl-C stopped it


def test_a_second_labkit_lab_attaches_and_its_ctrl_c_leaves_the_first_working(terminals, tmp_path):
    first = terminals()
    env_file = tmp_path / "state" / "lab.env"
    before = env_file.read_text()

    sandbox = subprocess.run([sys.executable, "-m", "labkit", "sandbox"], capture_output=True, text=True,
                             env=_env(tmp_path, {}), timeout=60)  # the case: beside a labkit lab
    assert sandbox.returncode == 1 and f"already runs on {tmp_path / 'state'} (pid {first.proc.pid}," \
        in sandbox.stderr, sandbox.stderr
    second = terminals()
    assert second.lines[0].startswith("Attaching to the running local lab")
    assert "Ctrl-C stops JupyterLab." in "\n".join(second.lines)  # not "and the local lab": not its
    second.ctrl_c()

    assert first.proc.poll() is None and env_file.read_text() == before
    flags = subprocess.run([sys.executable, "-m", "labkit", "flags"], capture_output=True, text=True,
                           env={**_env(tmp_path, {}), **read_dotenv(env_file)}, timeout=60)
    assert flags.returncode == 0 and "cartFailure" in flags.stdout, flags.stderr
    assert httpx.get(first.url, timeout=10).status_code == 200


def test_the_workbook_copy_keeps_the_attendees_edits(tmp_path):
    source, target = tmp_path / "notebooks", tmp_path / "workbook"
    source.mkdir()
    (source / "01.ipynb").write_text('{"v": 1}')
    (source / "02.ipynb").write_text('{"v": 1}')
    assert copy_workbook(source, target) == []
    (target / "01.ipynb").write_text('{"v": 1, "outputs": "mine"}')  # the attendee ran it

    (source / "01.ipynb").write_text('{"v": 2}')  # a git pull brings new notebooks
    (source / "02.ipynb").write_text('{"v": 2}')
    said = copy_workbook(source, target)

    assert (target / "01.ipynb").read_text() == '{"v": 1, "outputs": "mine"}'
    assert said == [f"kept your {target / '01.ipynb'} (notebooks/01.ipynb changed since: rename "
                    "yours to get the new one)"]
    assert (target / "02.ipynb").read_text() == '{"v": 2}'  # untouched copies follow the notebooks
    assert copy_workbook(source, target) == said  # said again, still kept


def test_the_workbook_folder_is_not_tracked_by_git():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "-q", "workbook/01-introduce-change.ipynb"], cwd=ROOT)
    assert ignored.returncode == 0
