"""`labkit room` on a Python without JupyterHub (the README's first command installs the workbook only):
it says the one install command at once, before it installs or starts anything."""
import subprocess
import sys
import time

BLOCK = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("jupyterhub", "jupyterhub_idle_culler"):
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
from labkit.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_room_without_jupyterhub_names_the_install_command_at_once(tmp_path):
    for argv in (["room", "--seats", "2"], ["room", "rehearse", "--seats", "1"]):
        started = time.monotonic()
        run = subprocess.run([sys.executable, "-c", BLOCK, *argv], cwd=tmp_path, capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 1, (run.stdout, run.stderr)
        assert "pip install -e '.[room]' && npm install --prefix .room configurable-http-proxy" in run.stderr
        assert "jupyterhub" in run.stderr and "installing" not in run.stderr  # nothing fetched from npm
        assert not (tmp_path / ".room").exists()  # nothing made or started
        assert time.monotonic() - started < 30
