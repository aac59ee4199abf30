"""The one rule for which lab this is: a configured lab, a running local lab (its lab.env), or a new local lab.

`connect()`, the CLI and `labkit lab` all ask `which_lab()`; this is the only module outside
`labkit.sandbox` that imports it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from labkit.settings import Settings, read_dotenv


@dataclass
class Choice:
    """The lab chosen, how (configured, attached, started, none), and the local lab started here."""

    settings: Settings
    how: str
    variables: dict[str, str] = field(default_factory=dict)  # the local lab's lab.env, if local
    local_lab: object | None = None  # a LocalLab this process started: close() stops it

    @property
    def env(self) -> dict[str, str]:
        """os.environ-style variables that point kernels, kubectl and subprocesses at this lab."""
        return {**os.environ, **self.variables}

    def describe(self) -> str:
        if self.how == "started":
            lab = self.local_lab
            note = f"\n{lab.archive_note}" if lab.archive_note else ""
            return (f"Started the local lab (Kubernetes {lab.kube_server.url}, "
                    f"Dynatrace {lab.tenant_server.url}){note}")
        if self.how == "attached":
            return f"Attaching to the running local lab at {self.settings.dt_url}"
        return f"Using {self.settings.where()}"

    def close(self) -> None:
        if self.local_lab is not None:
            self.local_lab.stop()
            self.local_lab = None

    def __enter__(self) -> "Choice":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def default_state_dir() -> Path:
    """Where a local lab keeps lab.env, its kubeconfig, flags and ports ($LABKIT_STATE_DIR)."""
    from labkit.sandbox import default_state_dir as sandbox_default

    return sandbox_default()


def running_local_lab(state_dir: Path) -> dict[str, str] | None:
    """The variables of a local lab running elsewhere, if its lab.env is there and it answers."""
    import httpx

    env = read_dotenv(state_dir / "lab.env")
    if not env.get("DT_URL"):
        return None
    try:
        httpx.get(env["DT_URL"] + "/", timeout=1.0)
    except httpx.HTTPError:
        return None  # a stale lab.env from a local lab that was killed
    return env


def new_local_lab(state_dir: str | Path, timings=None):
    """A LocalLab on loopback (not started): for `labkit sandbox`, which runs it in the foreground."""
    from labkit.sandbox import LocalLab, Timings

    return LocalLab(state_dir, timings or Timings.from_env())


def which_lab(settings: Settings | None = None, *, state_dir: str | Path | None = None,
              start: bool = True, timings=None, new_state_dir: str | Path | None = None) -> Choice:
    """The lab to work on:

    1. a lab configured in the environment or .env (DT_URL + DT_PLATFORM_TOKEN and/or DT_API_TOKEN,
       or a KUBECONFIG): that one;
    2. else a running local lab (`labkit sandbox`, `labkit lab`, or a kernel's), found by its lab.env
       in the state dir: attach to it;
    3. else, with start=True, a new local lab in the state dir (or `new_state_dir`; the caller
       closes the Choice), so other kernels and terminals attach to it; with start=False, the
       settings as they are.
    """
    settings = settings or Settings.load()
    if settings.has_tenant or settings.kubeconfig:
        return Choice(settings, "configured")
    state_dir = Path(state_dir) if state_dir else default_state_dir()
    env = running_local_lab(state_dir)
    if env:
        return Choice(_settings_for(env), "attached", env)
    if not start:
        return Choice(settings, "none")
    from labkit.sandbox.state import StateDirBusy

    try:
        local = new_local_lab(new_state_dir or state_dir, timings).start()
    except StateDirBusy as busy:  # its owner is still starting (no lab.env yet) or busy: wait for it
        env = _await_running(busy.state_dir)
        if env is None:
            raise
        return Choice(_settings_for(env), "attached", env)
    return Choice(_settings_for(local.env), "started", local.env, local)


def _await_running(state_dir: Path, timeout: float = 15.0) -> dict[str, str] | None:
    """The variables of the lab that owns state_dir once it answers; None if it does not in time."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        env = running_local_lab(state_dir)
        if env:
            return env
        time.sleep(0.2)  # a start takes a few seconds; poll its lab.env and tenant like a terminal would
    return None


def _settings_for(env: dict[str, str]) -> Settings:
    return Settings.load(environ={**os.environ, **env}, dotenv=None)
