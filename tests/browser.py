"""Real-browser helpers: JupyterLab in its own session, Debian's chromium driven by Playwright.

Everything either writes lives under one work directory (isolated Jupyter, IPython, JupyterLab
settings and chromium XDG dirs), so the user's home stays untouched. The server and the browser are
stopped by their own process groups. Waits are on the page's own state (kernel status, cell prompts,
elements), each bounded by an explicit timeout.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from labkit.workbook import lab_settings_args

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run"]
# What Jupyter, IPython and chromium would write into $HOME without the isolation below.
HOME_DIRS = [".jupyter", ".local/share/jupyter", ".ipython", ".config/chromium",
             ".cache/chromium", ".cache/chromium-headless"]


NEWS_PROMPT = "get notified about official Jupyter news"


def news_prompt(page) -> int:
    """How many of JupyterLab's "Would you like to get notified about official Jupyter news?"
    toasts the page shows."""
    return page.get_by_text(NEWS_PROMPT).count()


def log(message: str) -> None:
    print(f"[browser-test {time.strftime('%H:%M:%S')}] {message}", flush=True)


def missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: .venv/bin/pip install -r tests/requirements.txt"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- $HOME stays untouched ---------------------------------------------------------------------
def home_snapshot() -> dict[str, float | None]:
    """Latest mtime under each of HOME_DIRS (None when absent): compare before and after."""
    home = Path.home()
    snap: dict[str, float | None] = {}
    for rel in HOME_DIRS:
        top = home / rel
        if not top.exists():
            snap[rel] = None
            continue
        latest = top.stat().st_mtime
        for n, (dirpath, dirnames, filenames) in enumerate(os.walk(top)):
            if n > 2000:
                break
            for name in dirnames + filenames:
                try:
                    latest = max(latest, os.lstat(os.path.join(dirpath, name)).st_mtime)
                except OSError:
                    pass
        snap[rel] = latest
    return snap


# --- JupyterLab ------------------------------------------------------------------------------
def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")


def isolated_jupyter_env(work: Path) -> dict[str, str]:
    """Jupyter's and IPython's own directories under work, with the lab settings the test needs."""
    dirs = {name: work / sub for name, sub in [
        ("JUPYTER_CONFIG_DIR", "jupyter-config"), ("JUPYTER_DATA_DIR", "jupyter-data"),
        ("JUPYTER_RUNTIME_DIR", "jupyter-runtime"), ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces"), ("IPYTHONDIR", "ipython")]}
    # JupyterLab's language-server autodetection runs `npm prefix -g`, which logs to ~/.npm/_logs.
    dirs["npm_config_cache"] = work / "npm-cache"
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    settings = dirs["JUPYTERLAB_SETTINGS_DIR"]
    # No news toast setting here: the workbook's own app settings (labkit.workbook) must stop it.
    # Every cell and output in the DOM (no virtual scrolling): elements can be waited for and the
    # whole notebook fits in one screenshot.
    _write_json(settings / "@jupyterlab/notebook-extension/tracker.jupyterlab-settings",
                {"windowingMode": "none"})
    return {k: str(v) for k, v in dirs.items()}


class JupyterLab:
    """`jupyter lab` on a free loopback port with a random token, in its own session."""

    def __init__(self, root_dir: Path, work: Path, env: dict[str, str], workbook_settings: bool = True):
        self.workbook_settings = workbook_settings  # False: JupyterLab's own defaults (news prompt)
        self.root_dir = root_dir
        self.work = work
        self.env = {**env, **isolated_jupyter_env(work)}
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.log_path = work / "jupyterlab.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "JupyterLab":
        import httpx

        args = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip", "127.0.0.1",
                "--port", str(self.port), f"--IdentityProvider.token={self.token}", "--allow-root",
                f"--ServerApp.root_dir={self.root_dir}", "--ServerApp.port_retries=0",
                *(lab_settings_args(self.work) if self.workbook_settings else [])]  # as `labkit lab`
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(args, env=self.env, cwd=self.work, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                r = httpx.get(f"http://127.0.0.1:{self.port}/api/status",
                              params={"token": self.token}, timeout=2)
                if r.status_code == 200:
                    log(f"JupyterLab ready on port {self.port} in {time.monotonic() - started:.1f} s")
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)  # polling interval of a readiness probe, not a wait for a condition
        raise TimeoutError(f"JupyterLab not ready within {timeout:.0f} s:\n{self.log_tail()}")

    def url(self, notebook: str, workspace: str | None = None) -> str:
        """The notebook's page; a workspace of its own so no earlier tab is restored next to it."""
        where = f"/lab/workspaces/{workspace}/tree" if workspace else "/lab/tree"
        return f"http://127.0.0.1:{self.port}{where}/{notebook}?token={self.token}"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-chars:].replace(self.token, "<token>")

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM to the server's own process group (server and kernels), SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid  # start_new_session: the server leads its own group
        try:
            os.killpg(pgid, signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        except ProcessLookupError:
            pass
        # Kernels are in the same group; make sure none outlives the server.
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --- chromium ----------------------------------------------------------------------------------
def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == pid]
        found += kids
        frontier += kids
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _browser_group_leaders() -> list[int]:
    """Chromium processes started under this test process that lead their own process group."""
    leaders = []
    for pid in _descendants(os.getpid()):
        try:
            if os.getpgid(pid) == pid and "chromium" in _cmdline(pid).split(" ", 1)[0]:
                leaders.append(pid)
        except ProcessLookupError:
            pass
    return leaders


@contextmanager
def chromium(work: Path, home: Path | None = None, viewport=(1280, 1500)):
    """A Playwright page in Debian's headless chromium; yields (page, errors).

    chromium's config and cache go to work/xdg-*; `home` (optional) replaces its HOME.
    """
    from playwright.sync_api import sync_playwright

    xdg = {"XDG_CONFIG_HOME": str(work / "xdg-config"), "XDG_CACHE_HOME": str(work / "xdg-cache")}
    if home is not None:
        xdg["HOME"] = str(home)
    for path in xdg.values():
        Path(path).mkdir(parents=True, exist_ok=True)
    pw = sync_playwright().start()
    browser = None
    leaders: list[int] = []
    try:
        before = set(_browser_group_leaders())
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                                     env={**os.environ, **xdg})
        leaders = [p for p in _browser_group_leaders() if p not in before]
        log(f"chromium {browser.version} started (process group {leaders})")
        page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        yield page, errors
    finally:
        try:
            if browser is not None:
                browser.close()
        finally:
            pw.stop()
            for pid in leaders:  # the browser's own process group, should close() have left it
                if "chromium" in _cmdline(pid):
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass


# --- JupyterLab page actions --------------------------------------------------------------------
IDLE = re.compile(r"\|\s*Idle\s*$")


def wait_kernel_idle(page, timeout: float) -> None:
    """The status bar's kernel text ('Python 3 (ipykernel) | Idle')."""
    page.locator(".jp-StatusBar-TextItem", has_text=IDLE).first.wait_for(
        state="visible", timeout=timeout * 1000)


def open_notebook(page, url: str, timeout: float = 60) -> None:
    page.goto(url, timeout=timeout * 1000)
    page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for(timeout=timeout * 1000)
    wait_kernel_idle(page, timeout)


def hide_left_sidebar(page) -> None:
    """Collapse the file browser: the notebook gets the page's width."""
    current = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    if current.count():
        current.first.click()
        current.first.wait_for(state="detached", timeout=5_000)


def run_all_cells(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


_NOTEBOOK_STATE = """() => {
  const prompts = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')]
      .map(p => p.textContent.trim());
  const status = [...document.querySelectorAll('.jp-StatusBar-TextItem')].map(e => e.textContent.trim())
      .find(t => /\\|\\s*(Idle|Busy|Starting|Restarting|Unknown|Connecting|Dead|Reconnecting)/.test(t)) || '';
  const errors = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
      .map(e => e.textContent).filter(t => /Traceback|Error/.test(t));
  return {prompts, status, errors};
}"""


def notebook_state(page) -> dict:
    return page.evaluate(_NOTEBOOK_STATE)


def wait_all_executed(page, timeout: float) -> dict:
    """Until every code cell shows an execution count and the kernel is Idle, or a cell failed."""
    page.wait_for_function(
        "() => { const s = (" + _NOTEBOOK_STATE + ")();"
        " const idle = /\\|\\s*Idle$/.test(s.status);"
        " const busy = s.prompts.some(p => p.includes('*'));"
        " const done = s.prompts.length > 0 && s.prompts.every(p => /\\[\\d+\\]/.test(p));"
        " return idle && !busy && (done || s.errors.length > 0); }",
        timeout=timeout * 1000, polling=250)
    return notebook_state(page)


_SCROLLER = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const outer = panel.querySelector('.jp-WindowedPanel-outer') || panel.querySelector('.jp-Notebook');
  const cells = panel.querySelectorAll('.jp-Notebook .jp-Cell');
  outer.scrollTop = 0;
  const last = cells.length ? cells[cells.length - 1].getBoundingClientRect().bottom : 0;
  const below = window.innerHeight - outer.getBoundingClientRect().bottom;  // status bar
  return Math.ceil(last + 24 + below);
}"""


def screenshot(page, path: Path, max_height: int = 12000) -> Path:
    """The whole notebook from its first cell in one image: grow the viewport to fit it first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    needed = page.evaluate(_SCROLLER) or size["height"]
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], min(needed, max_height))})
    page.evaluate(_SCROLLER)  # re-layout after the resize: back at the top
    page.wait_for_timeout(300)  # one paint after the resize, before the capture
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    return path


def copy_notebooks(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for nb in src.glob("*.ipynb"):
        shutil.copy2(nb, dst / nb.name)
    return dst
