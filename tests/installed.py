"""labkit installed the way a user installs it: a fresh venv, `pip install`, a python3 kernelspec.

The fresh venv gets this interpreter's site-packages through a .pth file (the dependencies are
already here; downloading 600 MB per test run would prove nothing about labkit), and labkit itself
with `pip install --no-deps`, built by pip's own isolated build (pyproject.toml's backend).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without PYTHONPATH (nor a lab's variables), as a new terminal or front end has it."""
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONPATH" and not k.startswith(("DT_", "LABKIT_", "KUBECONFIG", "FRONTEND_URL"))}
    return {**env, **extra}


def run(args: list, cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=clean_env(**env), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def labkit_seen_from(python: str | Path, folder: Path) -> str | None:
    """Where `import labkit` lands for `python` started in `folder` with no PYTHONPATH, or None."""
    proc = subprocess.run([str(python), "-c", "import labkit; print(labkit.__file__)"], cwd=folder,
                          env=clean_env(), capture_output=True, text=True, timeout=60)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def fresh_venv(where: Path) -> Path:
    """A new venv (no pip of its own: this interpreter's pip installs into it) seeing our deps."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    python = where / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site, "_labkit_test_deps.pth").write_text("\n".join(sorted(ours)) + "\n")
    return python


def pip_install(python: Path, *args: str, cwd: Path) -> float:
    """`pip install --no-deps ARGS` into the venv of `python`; returns the seconds it took."""
    started = time.monotonic()
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--disable-pip-version-check",
         "--no-deps", *args], cwd=cwd)
    return time.monotonic() - started


def python3_kernelspec(python: Path, jupyter_path: Path) -> dict[str, str]:
    """A `python3` kernelspec running `python` (as a venv's own ipykernel would register it); the
    returned variables make Jupyter find it first."""
    spec = jupyter_path / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python"}))
    return {"JUPYTER_PATH": str(jupyter_path)}


def kernel_with_labkit(work: Path) -> dict[str, str]:
    """Variables under which the `python3` kernel, started in notebooks/ without PYTHONPATH, imports
    this checkout's labkit: none when this Python has it installed (the README's venv: `-e .`),
    else a venv with `pip install -e .` and its kernelspec."""
    seen = labkit_seen_from(sys.executable, ROOT / "notebooks")
    if seen and Path(seen).resolve().is_relative_to(ROOT):
        return {}
    python = fresh_venv(work / "venv")
    pip_install(python, "-e", str(ROOT), cwd=work)
    seen = labkit_seen_from(python, ROOT / "notebooks")
    assert seen and Path(seen).resolve().is_relative_to(ROOT), seen
    return python3_kernelspec(python, work / "jupyter")
