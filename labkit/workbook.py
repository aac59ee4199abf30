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
    """os.environ-style variables for kernels, for the lab labkit.which chooses; a local lab started
    here (in `state_dir`, else a temporary one) lives as long as the with-block."""
    from labkit.which import which_lab

    # A running local lab is looked for where terminals look; a new one goes into `state_dir`.
    new_dir = state_dir or tempfile.mkdtemp(prefix="labkit-local-lab-")
    with which_lab(timings=timings, new_state_dir=new_dir) as choice:
        say(choice.describe())
        startup = {} if os.environ.get("PYTHONSTARTUP") else {"PYTHONSTARTUP": str(KERNEL_STARTUP)}
        yield {**choice.env, **startup}


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
    with lab_environment(say=say) as env:
        env = {**env, "LABKIT_STATIC_CHARTS": "1"}
        for name in names or ORDER:
            started = time.monotonic()
            say(f"running {name} ...")
            try:
                written.append(run_notebook(notebooks / f"{name}.ipynb", out_dir, env))
            except Exception as exc:  # nbclient's CellExecutionError carries the failing cell
                raise LabError(f"{name} failed: {str(exc)[-2000:]}") from None
            say(f"  {name} done in {time.monotonic() - started:.1f} s -> {out_dir / name}.ipynb/.html")
    return written


def open_jupyterlab(port: int | None = None, extra: list[str] | None = None) -> int:
    """JupyterLab on notebooks/, its kernels pointed at the lab; returns JupyterLab's exit code."""
    import signal

    from labkit.which import default_state_dir

    _warn_if_not_installed()
    args = [sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={_notebooks()}"]
    if port:
        args.append(f"--port={port}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--allow-root")

    def stop(signum, frame):  # a terminal closing or `kill`: stop JupyterLab and the local lab too
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        # The default state dir: terminals (`python -m labkit flags`, kubectl) attach to this lab too.
        with lab_environment(state_dir=default_state_dir()) as env:
            print("Opening JupyterLab; start with 01-introduce-change.ipynb. "
                  "Ctrl-C stops it and the local lab.")
            proc = subprocess.Popen(args + (extra or []), env=env)
            try:
                return proc.wait()
            except KeyboardInterrupt:
                proc.terminate()
                return proc.wait(timeout=15)
    finally:
        signal.signal(signal.SIGTERM, previous)
