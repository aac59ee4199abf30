"""`pip install .` from a clean clone: labkit imports anywhere, the `labkit` command works, and the
wheel carries the local lab's data (its flags.yaml, also from sandbox sub-packages)."""
from __future__ import annotations

import subprocess
import time
import pytest

import installed  # tests/installed.py (pytest puts tests/ on sys.path)

pytestmark = pytest.mark.install

PROBE = "labkit/sandbox/_probe"  # a sub-package added to the clone: its data must land in the wheel


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A clone of this branch's last commit, installed (not editable) into a fresh venv."""
    work = tmp_path_factory.mktemp("install")
    installed.run(["git", "clone", "-q", installed.ROOT, work / "clone"], cwd=work)
    probe = work / "clone" / PROBE
    probe.mkdir()
    (probe / "__init__.py").write_text('"""A probe: data files of sandbox sub-packages are packaged."""\n')
    (probe / "probe.yaml").write_text("probe: true\n")
    (probe / "probe.json").write_text('{"probe": true}\n')
    python = installed.fresh_venv(work / "venv")
    seconds = installed.pip_install(python, str(work / "clone"), cwd=work)
    print(f"pip install --no-deps <clone>: {seconds:.1f} s")
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    return python, elsewhere


def test_labkit_command_and_version(venv):
    python, elsewhere = venv
    proc = installed.run([python.parent / "labkit", "--version"], cwd=elsewhere)
    assert proc.stdout.strip() == f"labkit {_version()}"
    usage = installed.run([python.parent / "labkit", "--help"], cwd=elsewhere).stdout
    assert usage.startswith("usage: labkit") and "sandbox" in usage
    module = installed.run([python, "-m", "labkit", "--version"], cwd=elsewhere)
    assert module.stdout == proc.stdout


def _version() -> str:
    import labkit

    return labkit.__version__


def test_import_from_another_folder_uses_the_installed_copy(venv):
    python, elsewhere = venv
    where = installed.run([python, "-c", "import labkit, labkit.sandbox; print(labkit.__file__)"],
                          cwd=elsewhere).stdout.strip()
    assert where.startswith(str(python.parent.parent)) and "site-packages" in where, where


def test_wheel_carries_the_local_labs_data(venv):
    python, elsewhere = venv
    code = ("import importlib.metadata as m; "
            "print('\\n'.join(str(f) for f in m.files('labkit') if f.locate().is_file()))")
    files = set(installed.run([python, "-c", code], cwd=elsewhere).stdout.split())
    assert any(f.startswith("labkit/sandbox/") and f.endswith("flags.yaml") for f in files), files
    assert {f"{PROBE}/probe.yaml", f"{PROBE}/probe.json"} <= files, "sub-package data left out"


def test_installed_local_lab_starts_from_its_flags_yaml(venv, tmp_path):
    """`labkit sandbox` from the wheel seeds the ConfigMap from the packaged flags.yaml."""
    python, elsewhere = venv
    state = {"LABKIT_STATE_DIR": str(tmp_path / "state")}
    sandbox = subprocess.Popen([python.parent / "labkit", "sandbox"], cwd=elsewhere,
                               env=installed.clean_env(**state), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        first = sandbox.stdout.readline()  # blocks until the lab is up (or the process ends)
        assert first.startswith("local lab ready"), first + (sandbox.stdout.read() if sandbox.poll() else "")
        flags = installed.run([python.parent / "labkit", "flags"], cwd=elsewhere, timeout=60, **state)
        assert "cartFailure" in flags.stdout, flags.stdout
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)
