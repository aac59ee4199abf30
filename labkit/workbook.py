"""Jupyter: open the workbook in JupyterLab, or run every notebook headless and keep the results.

Both run on the lab that `labkit.connect()` would find; when that is the local lab, it is started
here once and its variables handed to JupyterLab and the kernels, so every notebook attaches to it.
Kernels import labkit as an installed package (`pip install -e .`, the README's first command), so
the notebooks open in any front end (VS Code, a Codespace, plain `jupyter lab`) without PYTHONPATH.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from labkit.errors import LabError
from labkit.kernel import KERNEL_STARTUP

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
ORDER = ["00-setup", "01-introduce-change", "02-review-problem", "03-roll-back"]
WORKBOOK = "workbook"            # the attendee's copies of notebooks/ (gitignored)
COPIED = ".labkit-copied.json"   # each copy's notebook as copied, so an unchanged copy can be refreshed
# JupyterLab's own defaults the workbook changes: no "Would you like to get notified about official
# Jupyter news?" toast over the notebooks (fetchNews "none" asks; "false" never fetches) and no update
# check (it needs fetchNews on anyway). The plugin and keys are JupyterLab 4's schema,
# @jupyterlab/apputils-extension's notification.json; `--LabApp.news_url=None` does not stop the ask.
SETTINGS_DEFAULTS = {"@jupyterlab/apputils-extension:notification": {"fetchNews": "false",
                                                                     "checkForUpdates": False}}


def _warn_if_not_installed(say=print) -> None:
    """Kernels start in notebooks/ and find labkit only if it is installed: say so before they fail
    (a warning, not an error: a kernelspec of another Python may have it)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("labkit")
    except PackageNotFoundError:
        say(f"warning: labkit is not installed in this Python ({sys.executable}), so its notebook "
            f"kernels cannot import it: run `{sys.executable} -m pip install -e {ROOT}` "
            "(the README's first command does it).")


def _notebooks() -> Path:
    """notebooks/ of the checkout (an editable install), else of the current folder."""
    for folder in (NOTEBOOKS, Path.cwd() / "notebooks"):
        if folder.is_dir():
            return folder
    raise LabError(f"No notebooks/ folder here ({Path.cwd()}) or beside labkit ({ROOT}): run this "
                   "in the labkit checkout, where the workbook lives.")


@contextmanager
def lab_environment(timings=None, say=print, state_dir=None):
    """The lab labkit.which chooses (its .env: os.environ-style variables for kernels); a local lab
    started here (in `state_dir`, else a temporary one) lives as long as the with-block."""
    from labkit.which import which_lab

    # A running local lab is looked for where terminals look; a new one goes into `state_dir`.
    new_dir = state_dir or tempfile.mkdtemp(prefix="labkit-local-lab-")
    with which_lab(timings=timings, new_state_dir=new_dir) as choice:
        say(choice.describe())
        startup = {} if os.environ.get("PYTHONSTARTUP") else {"PYTHONSTARTUP": str(KERNEL_STARTUP)}
        choice.variables = {**choice.variables, **startup}  # every kernel the workbook starts
        yield choice


def run_notebook(path: Path, out_dir: Path, env: dict, timeout: float = 900) -> Path:
    """Execute one notebook in a fresh kernel with `env`; write it (and an HTML copy) to out_dir."""
    import nbformat
    from nbclient import NotebookClient

    book = nbformat.read(path, as_version=4)
    saved = dict(os.environ)
    # The kernel inherits the lab's variables; charts carry HTML too, so the HTML copy shows them.
    os.environ.update({"PLOTLY_RENDERER": "plotly_mimetype+notebook", **env})
    try:
        NotebookClient(book, timeout=timeout, kernel_name="python3", store_widget_state=False,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / path.name
    nbformat.write(book, target)
    _write_html(book, target.with_suffix(".html"))
    return target


def _write_html(book, target: Path) -> None:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(book)
    target.write_text(body, encoding="utf-8")


def run_workbook(out_dir: str | Path, names: list[str] | None = None, say=print) -> list[Path]:
    """The whole workshop, headless, in order; returns the executed notebooks."""
    out_dir = Path(out_dir)
    written = []
    _warn_if_not_installed(say)
    notebooks = _notebooks()
    with lab_environment(say=say) as choice:
        env = {**choice.env, "LABKIT_STATIC_CHARTS": "1"}
        for name in names or ORDER:
            started = time.monotonic()
            say(f"running {name} ...")
            try:
                written.append(run_notebook(notebooks / f"{name}.ipynb", out_dir, env))
            except Exception as exc:  # nbclient's CellExecutionError carries the failing cell
                raise LabError(f"{name} failed: {str(exc)[-2000:]}") from None
            say(f"  {name} done in {time.monotonic() - started:.1f} s -> {out_dir / name}.ipynb/.html")
    return written


def workbook_dir() -> Path:
    """Where the attendee runs the workbook: copies of notebooks/ that git does not track
    ($LABKIT_WORKBOOK_DIR, else workbook/ beside notebooks/), so outputs never reach a commit."""
    return Path(os.environ.get("LABKIT_WORKBOOK_DIR") or _notebooks().parent / WORKBOOK).resolve()


def copy_workbook(source: Path, target: Path) -> list[str]:
    """Copy the notebooks the attendee has not got yet; refresh a copy still as it was copied when its
    notebook changed (git pull); never overwrite one the attendee ran or edited. Returns what to say."""
    import hashlib
    import json

    target.mkdir(parents=True, exist_ok=True)
    record_path = target / COPIED
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    digest = lambda text: hashlib.sha256(text.encode()).hexdigest()  # noqa: E731
    said = []
    for notebook in sorted(source.glob("*.ipynb")):
        text, copy = notebook.read_text(encoding="utf-8"), target / notebook.name
        if copy.exists():
            mine = digest(copy.read_text(encoding="utf-8"))
            if digest(text) in (mine, record.get(notebook.name)):
                continue  # the same, or the notebook did not change since it was copied
            if mine != record.get(notebook.name):
                said.append(f"kept your {copy} (notebooks/{notebook.name} changed since: rename "
                            "yours to get the new one)")
                continue
        copy.write_text(text, encoding="utf-8")
        record[notebook.name] = digest(text)
    record_path.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return said


def lab_settings_args(state_dir: Path) -> list[str]:
    """JupyterLab arguments for the server labkit starts: its own app settings dir (in the state
    dir) holding the environment's app settings plus SETTINGS_DEFAULTS as an overrides.d file.
    Overrides are defaults: the user's own settings (~/.jupyter/lab/user-settings) still win, and
    no file of the user's or of the environment is written. Rebuilt at each start."""
    import json
    import shutil

    from jupyterlab.commands import get_app_dir

    default = Path(get_app_dir()) / "settings"   # what `jupyter lab` would use without the argument
    target = Path(state_dir) / "jupyterlab-app-settings"
    shutil.rmtree(target, ignore_errors=True)
    if default.is_dir():
        shutil.copytree(default, target)
    (target / "overrides.d").mkdir(parents=True, exist_ok=True)
    (target / "overrides.d" / "labkit-workbook.json").write_text(json.dumps(SETTINGS_DEFAULTS, indent=1),
                                                                  encoding="utf-8")
    return [f"--LabApp.app_settings_dir={target}"]


def _free_port(preferred: int = 8888) -> int:
    import socket

    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise LabError("No free port on 127.0.0.1 for JupyterLab: pass --port.")


def _await_jupyter(proc: subprocess.Popen, url: str, token: str, log_path: Path,
                   timeout: float = 120) -> None:
    """Until JupyterLab answers; its exit or silence is a LabError naming the log."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = _tail(log_path)
            hint = "\nIts port is taken: pass another with --port." if "is not available" in tail else ""
            raise LabError(f"JupyterLab exited ({proc.returncode}) before it was ready; its log, "
                           f"{log_path}, ends with:\n{tail}{hint}")
        try:
            if httpx.get(f"{url}/api/status", params={"token": token}, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)  # a readiness probe's interval: JupyterLab takes a few seconds to start
    proc.terminate()
    raise LabError(f"JupyterLab did not answer within {timeout:.0f} s; see its log: {log_path}")


def _tail(path: Path, lines: int = 4) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop_jupyter(proc: subprocess.Popen, log_path: Path, grace: float = 30) -> int:
    """SIGTERM (it shuts its kernels down), then SIGKILL if it is still there after `grace` seconds."""
    proc.terminate()
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        print(f"JupyterLab did not stop within {grace:.0f} s and was killed; its log: {log_path}")
        return proc.wait()


def open_jupyterlab(port: int | None = None, extra: list[str] | None = None,
                    open_browser: bool = True) -> int:
    """JupyterLab on the attendee's workbook copies, open on 00-setup, its kernels pointed at the lab;
    Jupyter's and the kernels' logs go to a file in the state dir, the URL is printed last.
    Returns JupyterLab's exit code."""
    import secrets
    import signal

    from labkit.which import default_state_dir

    _warn_if_not_installed()
    state_dir = default_state_dir()
    folder = workbook_dir()
    for line in copy_workbook(_notebooks(), folder):
        print(line)
    port = port or _free_port()
    token = secrets.token_hex(24)
    first = f"{ORDER[0]}.ipynb"
    args = [sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={folder}",
            "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
            f"--ServerApp.default_url=/lab/tree/{first}"]  # the browser Jupyter opens lands on 00
    args += lab_settings_args(state_dir)
    if not open_browser:
        args.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--allow-root")

    def stop(signum, frame):  # a terminal closing or `kill`: stop JupyterLab and the local lab too
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    # Ctrl-C / `kill -INT` also when started in the background of a script (SIGINT ignored, inherited)
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        # The default state dir: terminals (`python -m labkit flags`, kubectl) attach to this lab too.
        with lab_environment(state_dir=state_dir) as choice:
            state_dir.mkdir(parents=True, exist_ok=True)
            log_path = state_dir / f"jupyterlab-{port}.log"  # one per server: a second one's is its own
            # JUPYTER_TOKEN, not an argument: `ps` shows arguments to every user of the machine.
            # stdin not a terminal: Ctrl-C stops JupyterLab at once instead of asking "Shutdown?".
            with open(log_path, "wb") as log:  # this run's log
                # Its own session: Ctrl-C reaches labkit only, which stops JupyterLab with one SIGTERM
                # (a SIGINT as well sent it into its "Interrupted..." path, whose stop could hang 30 s).
                proc = subprocess.Popen(args + (extra or []), env={**choice.env, "JUPYTER_TOKEN": token},
                                        cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                base = f"http://127.0.0.1:{port}"
                _await_jupyter(proc, base, token, log_path)
                also = " and the local lab" if choice.local_lab is not None else ""
                print(f"JupyterLab runs the workbook in {folder} (copies git does not track); its log "
                      f"and the kernels' are in {log_path}.\nCtrl-C stops JupyterLab{also}. "
                      f"Start with {first}, then 01, 02, 03:\n\n    {base}/lab/tree/{first}?token={token}\n",
                      flush=True)
                return proc.wait()
            except KeyboardInterrupt:
                return _stop_jupyter(proc, log_path)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
