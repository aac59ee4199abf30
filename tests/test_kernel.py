"""A workbook kernel shows labkit's errors, and `lab` missing after a restart, as one sentence."""
from __future__ import annotations

import os

import pytest

from labkit.kernel import KERNEL_STARTUP

jupyter_client = pytest.importorskip("jupyter_client")


def _run(kc, code: str) -> list[dict]:
    """The iopub messages of one execution (until the kernel is idle again)."""
    msg_id = kc.execute(code)
    out = []
    while True:
        msg = kc.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return out
        out.append(msg)


@pytest.fixture
def kernel(tmp_path):
    env = {**os.environ, "PYTHONSTARTUP": str(KERNEL_STARTUP)}
    for key in ("DT_URL", "DT_API_TOKEN", "DT_PLATFORM_TOKEN", "KUBECONFIG", "LABKIT_STATE_DIR"):
        env.pop(key, None)
    km = jupyter_client.KernelManager(kernel_name="python3")
    km.start_kernel(env=env, cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    yield kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def _error(messages) -> dict:
    errors = [m["content"] for m in messages if m["msg_type"] == "error"]
    assert len(errors) == 1, messages
    return errors[0]


def test_lab_missing_after_a_restart_says_which_cell_to_run(kernel):
    error = _error(_run(kernel, 'lab.served("cartFailure")'))  # a fresh kernel: nothing ran yet
    assert error["ename"] == "NameError" and len(error["traceback"]) == 1
    assert "Run the notebook's first code cell (`lab = labkit.connect()`)" in error["traceback"][0]


def test_a_labkit_error_is_a_sentence_not_a_traceback(kernel):
    error = _error(_run(kernel, "import labkit\nlabkit.connect(state_dir='nowhere', start_local=False)"))
    assert error["traceback"] == [f"Unreachable: {error['evalue']}"]
    assert "python -m labkit sandbox" in error["evalue"] and "File " not in error["traceback"][0]


def test_other_errors_keep_their_traceback(kernel):
    error = _error(_run(kernel, "undefined_name_of_mine"))
    assert len(error["traceback"]) > 1 and error["ename"] == "NameError"


def test_an_interrupt_inside_a_labkit_step_is_a_sentence(kernel):
    code = ("import labkit.timeline as t\n"
            "t.now = lambda: (_ for _ in ()).throw(KeyboardInterrupt())  # Ctrl-C inside a step\n"
            "t.Timeline().add('flag applied')")
    error = _error(_run(kernel, code))
    assert error["ename"] == "KeyboardInterrupt" and len(error["traceback"]) == 1
    assert "Run the cell again to finish it" in error["traceback"][0]


def test_an_interrupt_in_the_users_own_code_keeps_its_traceback(kernel):
    error = _error(_run(kernel, "raise KeyboardInterrupt"))
    assert len(error["traceback"]) > 1
