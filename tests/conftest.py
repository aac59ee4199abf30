"""Shared fixtures: one local lab per test session, on loopback, with fast timings."""
from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `pytest` alone finds labkit too

from labkit.sandbox import LocalLab, Timings


@pytest.fixture(scope="session")
def local_lab(tmp_path_factory):
    lab = LocalLab(tmp_path_factory.mktemp("local-lab"), Timings.fast()).start()
    yield lab
    lab.stop()


@pytest.fixture(scope="session")
def kernel_env(tmp_path_factory):
    """Variables under which a notebook's python3 kernel, started in notebooks/ with no PYTHONPATH
    (as VS Code or a plain `jupyter lab` starts it), imports this checkout's labkit (tests/installed.py)."""
    import installed

    return installed.kernel_with_labkit(tmp_path_factory.mktemp("kernel"))


@pytest.fixture
def lab_on(local_lab) -> str:
    """The variant that is the lab page's `on` on the local lab's demo release (3.0.0: 10%)."""
    return local_lab.release.lab_on_variant


@pytest.fixture
def lab_env(local_lab, monkeypatch):
    """The local lab's variables in os.environ, as `source lab.env` would set them."""
    for key, value in local_lab.env.items():
        monkeypatch.setenv(key, value)
    return dict(local_lab.env)


@pytest.fixture
def kube_sandbox(tmp_path):
    """Make the local lab's Kubernetes API by itself (tests/kube_sandbox.py), started; all stopped after."""
    from kube_sandbox import KubeSandbox

    made = []

    def make(**kw) -> KubeSandbox:
        sandbox = KubeSandbox(tmp_path / f"kube-{len(made)}", **kw)
        sandbox.tmp.mkdir(parents=True, exist_ok=True)
        made.append(sandbox.start())
        return sandbox

    yield make
    for sandbox in made:
        sandbox.stop()


@pytest.fixture
def tenant_sandbox():
    """Make the local lab's Dynatrace tenant and shop by themselves (tests/tenant_sandbox.py); closed after."""
    from tenant_sandbox import TenantSandbox

    made = []

    def make(**timing_overrides) -> TenantSandbox:
        made.append(TenantSandbox(**timing_overrides))
        return made[-1]

    yield make
    for sandbox in made:
        sandbox.close()


@pytest.fixture
def kube_api(local_lab):
    from kubernetes import config

    return config.new_client_from_config(str(local_lab.kubeconfig_path))


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on: connections to it are refused."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _no_faults_left(request):
    """Faults injected by one test never leak into the next."""
    yield
    if "local_lab" in request.fixturenames:
        lab = request.getfixturevalue("local_lab")
        for server in (lab.kube_server, lab.frontend_server, lab.tenant_server):
            server.faults.clear()


def pytest_configure(config):
    config.addinivalue_line("markers", "notebooks: executes the workbook headless (slow)")
    config.addinivalue_line("markers", "browser: drives JupyterLab in Debian's chromium")
    config.addinivalue_line("markers", "install: pip install from a clean clone into a fresh venv")
    config.addinivalue_line("markers", "xdist_group(name): pytest-xdist runs a group's tests on one worker")
    # Ctrl-C tests send SIGINT to labkit's processes, as a terminal does. Started from `nohup ... &` (no job
    # control), the suite inherits SIGINT ignored, every child it starts too, and those tests hang; a handler
    # here is reset to the default in each child at exec
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# ---- the suite in parallel (.ci/run: pytest-xdist, --dist loadgroup) ------------------------------
# The room's, the browser's and the notebooks' tests start hubs, browsers and kernels and time them:
# each kind runs on one worker, one test after another, so they never race each other for the cores.
ALONE = {"test_room.py": "room", "test_seat_kernel.py": "room", "test_browser.py": "browser", "test_notebooks.py": "notebooks"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the marks into the node ids
def pytest_collection_modifyitems(items):
    for item in items:
        group = ALONE.get(item.path.name) or _module_fixture_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


def _module_fixture_group(item) -> str | None:
    """A module whose tests share a module-scoped fixture (a workbook run, a lab of a release) keeps
    them on one worker: spread over four, the fixture would be built four times."""
    defs = getattr(item, "_fixtureinfo", None)
    for fixture_defs in (defs.name2fixturedefs.values() if defs else ()):
        if any(d.scope == "module" for d in fixture_defs):
            return item.path.name
    return None


# ---- hardening results table (issue 6; tests/hardening_report.py) ------------------------------
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if "fault_record" in getattr(item, "fixturenames", ()):
        from hardening_report import mark_outcome

        mark_outcome(item.nodeid, report.passed)  # failed or skipped: not survived


def pytest_sessionfinish(session):
    """On an xdist worker: hand its hardening records to the controller, which prints the table."""
    if hasattr(session.config, "workeroutput") and "hardening_report" in sys.modules:
        session.config.workeroutput["hardening"] = sys.modules["hardening_report"].export()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    records = getattr(node, "workeroutput", {}).get("hardening")
    if records:
        import hardening_report

        hardening_report.merge(records)


def pytest_terminal_summary(terminalreporter):
    if "hardening_report" in sys.modules:
        sys.modules["hardening_report"].terminal_summary(terminalreporter)
