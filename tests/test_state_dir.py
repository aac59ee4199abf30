"""One local lab per state dir, with real processes: a second `labkit sandbox` refuses and touches
nothing; an attached kernel's Ctrl-C leaves the running lab working; a killed owner frees the dir;
a new start begins a new run (the tenant is seeded anew, the old timeline is set aside)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labkit.sandbox import LocalLab, Timings
from labkit.sandbox.state import StateDirBusy, owner
from labkit.settings import read_dotenv

ROOT = Path(__file__).resolve().parent.parent
FAST = {"LABKIT_POD_START": "0.3", "LABKIT_POD_TERMINATE": "0.3", "LABKIT_SEED_HOURS": "0.2",
        "LABKIT_SHOPPER_RATE": "0.5"}


def _env(**extra) -> dict[str, str]:
    """A terminal with nothing configured (no tenant, no kubeconfig), this checkout's labkit first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DT_", "LABKIT_")) and k not in (
        "KUBECONFIG", "FRONTEND_URL", "CODESPACE_VSCODE_FOLDER")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**env, **FAST, **extra}


def _labkit(*args, env, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labkit", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT / "tests")


def _sandbox(state: Path) -> subprocess.Popen:
    """`labkit sandbox` in the foreground of its own terminal; returns once it says it is ready."""
    proc = subprocess.Popen([sys.executable, "-m", "labkit", "sandbox", "--state-dir", str(state)],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT / "tests")
    lines = []
    for line in proc.stdout:  # ends when the process does
        lines.append(line)
        if line.startswith("Ctrl-C stops"):
            proc.ready_text = "".join(lines)
            return proc
    proc.wait(10)
    raise AssertionError(f"sandbox exited {proc.returncode}: {''.join(lines)}{proc.stderr.read()}")


def _kubectl_works(env_file: Path) -> None:
    """`source lab.env; kubectl get pods` shows flagd Running (skipped where there is no kubectl)."""
    if shutil.which("kubectl") is None:
        return
    env = {**_env(), **read_dotenv(env_file), "HOME": str(env_file.parent)}
    pods = subprocess.run(["kubectl", "get", "pods", "-l", "opentelemetry.io/name=flagd"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert pods.returncode == 0 and "Running" in pods.stdout, pods.stderr


def _stop(proc: subprocess.Popen, sig=signal.SIGINT) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(20)


@pytest.fixture
def first(tmp_path):
    proc = _sandbox(tmp_path / "state")
    yield proc
    _stop(proc)


def test_a_second_sandbox_refuses_and_the_first_keeps_working(first, tmp_path):
    state = tmp_path / "state"
    env_file = state / "lab.env"
    before = env_file.read_text()

    second = _labkit("sandbox", "--state-dir", str(state), env=_env(), timeout=30)

    assert second.returncode == 1, second.stdout + second.stderr
    assert (f"a local lab already runs on {state} (pid {first.pid}, since " in second.stderr
            and f"source {env_file}, or stop it first" in second.stderr), second.stderr
    assert "ready" not in second.stdout
    assert env_file.read_text() == before and (state / "kubeconfig").is_file()
    flags = _labkit("flags", env=_env(**read_dotenv(env_file)))  # a terminal that sourced lab.env
    assert flags.returncode == 0 and "cartFailure" in flags.stdout, flags.stderr
    _kubectl_works(env_file)


def test_ctrl_c_in_an_attached_kernel_leaves_the_running_lab_alone(first, tmp_path):
    state = tmp_path / "state"
    kernel = subprocess.Popen(
        [sys.executable, "-c", "import labkit, sys, time; lab = labkit.connect(state_dir=sys.argv[1]); "
         "print(lab.settings.dt_url, flush=True); time.sleep(60)", str(state)],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT / "tests")
    attached_to = kernel.stdout.readline().strip()
    assert attached_to == read_dotenv(state / "lab.env")["DT_URL"], kernel.stderr.read()

    _stop(kernel)  # Ctrl-C in the kernel that attached

    assert first.poll() is None and (state / "lab.env").is_file() and (state / "kubeconfig").is_file()
    problems = _labkit("failures", "cart", env=_env(**read_dotenv(state / "lab.env")))
    assert problems.returncode == 0, problems.stderr
    assert owner(state)["pid"] == first.pid
    _kubectl_works(state / "lab.env")


def test_ctrl_c_stops_the_owner_and_frees_the_state_dir(tmp_path):
    state = tmp_path / "state"
    proc = _sandbox(state)
    assert _stop(proc) == 0
    assert not (state / "lab.env").exists() and not (state / "kubeconfig").exists()
    assert owner(state) is None
    again = _sandbox(state)  # the next start takes the state dir
    try:
        assert again.poll() is None and owner(state)["pid"] == again.pid
    finally:
        _stop(again)


def test_a_killed_owner_frees_the_state_dir_and_the_next_start_keeps_its_tokens(tmp_path):
    state = tmp_path / "state"
    proc = _sandbox(state)
    token = read_dotenv(state / "lab.env")["DT_API_TOKEN"]
    _stop(proc, signal.SIGKILL)  # no clean-up ran: lab.env and the lock file stay behind
    assert (state / "lab.env").is_file() and owner(state) is None
    again = _sandbox(state)
    try:
        assert read_dotenv(state / "lab.env")["DT_API_TOKEN"] == token  # terminals that sourced it still work
    finally:
        _stop(again)


def test_in_one_process_too_a_second_lab_on_the_same_dir_is_refused(tmp_path):
    with LocalLab(tmp_path, Timings.fast()):
        with pytest.raises(StateDirBusy, match=f"pid {os.getpid()}"):
            LocalLab(tmp_path, Timings.fast())
        assert (tmp_path / "lab.env").is_file()


def test_a_new_start_begins_a_new_run_and_says_where_the_old_one_is(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    old = {"time": "2026-01-01T10:00:00+00:00", "kind": "flag applied", "flag": "cartFailure",
           "old": "off", "new": "on", "note": ""}
    (state / "timeline.jsonl").write_text(json.dumps(old) + "\n")

    proc = _sandbox(state)
    try:
        assert not (state / "timeline.jsonl").exists()  # the tenant has none of its markers any more
        kept = list(state.glob("timeline-*.jsonl"))
        assert len(kept) == 1 and json.loads(kept[0].read_text())["kind"] == "flag applied"
        assert f"is kept as {kept[0]}" in proc.ready_text
    finally:
        _stop(proc)


def test_a_lab_that_failed_to_start_leaves_the_state_dir_free(tmp_path):
    try:
        LocalLab(tmp_path, Timings.fast(), flags_yaml="kind: [unclosed")
    except Exception:
        pass
    else:
        raise AssertionError("a flags.yaml that is not YAML should stop the local lab")
    assert owner(tmp_path) is None
    with LocalLab(tmp_path, Timings.fast()):
        assert owner(tmp_path)["pid"] == os.getpid()
