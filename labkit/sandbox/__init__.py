"""The local lab: a Kubernetes API, flagd, the demo shop and a Dynatrace tenant on loopback.

Imported only when the local lab is started (`python -m labkit sandbox`, `labkit.connect()` with
nothing configured, the tests). labkit's other modules reach it over HTTP like a real lab.
"""
from __future__ import annotations

import os
import secrets
import string
from dataclasses import dataclass, fields
from pathlib import Path

SHARED_FLAGS = Path(__file__).with_name("flags.yaml")


@dataclass
class Timings:
    """How fast the local lab moves. The workbook keeps realistic values; tests use fast()."""

    pod_terminate: float = 4.0     # s a flagd pod stays Terminating after a scale-down
    pod_start: float = 4.0         # s from Pending to Running and Ready
    shopper_rate: float = 1.0      # background shopper sessions per second (0 = off)
    problem_errors: int = 3        # error logs within problem_window that open a problem
    problem_window: float = 120.0  # s
    problem_quiet: float = 180.0   # s without error logs before the problem closes
    seed_hours: float = 2.0        # hours of baseline traffic seeded at start
    grail_delay: float = 0.2       # s before a Grail query finishes (execute answers 202 first)

    @classmethod
    def fast(cls) -> "Timings":
        return cls(pod_terminate=0.3, pod_start=0.3, shopper_rate=2.0, problem_errors=2,
                   problem_window=60.0, problem_quiet=3.0, seed_hours=2.0, grail_delay=0.05)

    @classmethod
    def from_env(cls, environ=None, base: "Timings | None" = None) -> "Timings":
        """Override any field with LABKIT_<FIELD> (e.g. LABKIT_POD_START=1.5)."""
        env = os.environ if environ is None else environ
        t = base or cls()
        for f in fields(cls):
            raw = env.get(f"LABKIT_{f.name.upper()}")
            if raw:
                setattr(t, f.name, type(f.default)(float(raw)) if f.type != "int" else int(float(raw)))
        return t


def make_token(prefix: str = "dt0c01") -> str:
    """A token shaped like a Dynatrace one, new for every local lab."""
    alphabet = string.ascii_uppercase + string.digits
    part = lambda n: "".join(secrets.choice(alphabet) for _ in range(n))  # noqa: E731
    return f"{prefix}.{part(24)}.{part(64)}"


def kubeconfig_text(server_url: str) -> str:
    """A kubeconfig for a local lab's Kubernetes API (plain http on loopback; kubectl sends no token)."""
    return (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: labkit-local\n  cluster:\n    server: {server_url}\n"
        "users:\n- name: labkit-local\n  user:\n    token: local-lab\n"
        "contexts:\n- name: labkit-local\n  context:\n    cluster: labkit-local\n"
        "    user: labkit-local\n    namespace: default\n"
        "current-context: labkit-local\n"
    )


class LocalLab:
    """All of the local lab in this process, on free loopback ports, until stop()."""

    def __init__(self, state_dir: str | Path, timings: Timings | None = None,
                 flags_yaml: str | None = None):
        from labkit.sandbox import kube, shop, telemetry, tenant
        from labkit.sandbox.http import LabServer

        self.state_dir = Path(state_dir)
        self.timings = timings or Timings.from_env()
        self.api_token = make_token()
        self.ingest_token = make_token()  # the lab's own token: ingest scopes only
        self.platform_token = make_token("dt0s16")
        self.cluster = kube.Cluster(self.timings, flags_yaml or SHARED_FLAGS.read_text())
        self.telemetry = telemetry.Telemetry(self.timings)
        self.shop = shop.Shop(self.cluster.flagd_value, self.telemetry, self.timings)
        self.tenant = tenant.Tenant(self.telemetry, self.timings, {
            self.api_token: tenant.READ_AND_INGEST_SCOPES,
            self.ingest_token: tenant.LAB_INGEST_SCOPES,
        }, platform_tokens={self.platform_token})
        self.kube_server = LabServer(kube.app(self.cluster))
        self.frontend_server = LabServer(shop.app(self.shop))
        self.tenant_server = LabServer(tenant.app(self.tenant))
        self.cluster.register_service("frontend-proxy", 8080, self.frontend_server.app)

    def start(self) -> "LocalLab":
        for server in (self.kube_server, self.frontend_server, self.tenant_server):
            server.start()
        self.cluster.start()
        self.shop.start()
        self.tenant.start()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig_path.write_text(self.kubeconfig())
        env_file = self.state_dir / "lab.env"
        env_file.touch(mode=0o600)
        env_file.write_text("".join(f"export {k}={v}\n" for k, v in self.env.items()))
        return self

    def stop(self) -> None:
        self.shop.stop()
        self.tenant.stop()
        self.cluster.stop()
        for server in (self.kube_server, self.frontend_server, self.tenant_server):
            server.stop()
        for name in ("lab.env", "kubeconfig"):
            (self.state_dir / name).unlink(missing_ok=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def kubeconfig_path(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def env(self) -> dict[str, str]:
        """The variables that point labkit, kubectl and the shell at this local lab."""
        return {
            "KUBECONFIG": str(self.kubeconfig_path),
            "DT_URL": self.tenant_server.url,
            "DT_API_TOKEN": self.api_token,
            "DT_PLATFORM_TOKEN": self.platform_token,
            "FRONTEND_URL": self.frontend_server.url,
            "LABKIT_LOCAL_LAB": "1",
        }

    def kubeconfig(self) -> str:
        return kubeconfig_text(self.kube_server.url)


def default_state_dir() -> Path:
    """Where `python -m labkit sandbox` writes lab.env, so any terminal or kernel can attach."""
    return Path(os.environ.get("LABKIT_STATE_DIR") or Path.home() / ".cache" / "labkit" / "local-lab")
