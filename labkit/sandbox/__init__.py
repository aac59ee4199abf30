"""The local lab: a Kubernetes API, flagd, the demo shop and a Dynatrace tenant on loopback.

Imported only when the local lab is started (`python -m labkit sandbox`, `labkit.connect()` with
nothing configured, the tests). labkit's other modules reach it over HTTP like a real lab.
"""
from __future__ import annotations

import base64
import json
import math
import os
import secrets
import string
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from labkit.sandbox.shared import SharedTenant

SHARED_FLAGS = Path(__file__).with_name("flags.yaml")  # the lab page's flags.yaml, as in the Codespace
FLAGS_COPY = "flagd-config.json"  # the ConfigMap as last written, so a restarted local lab keeps it
PORTS = "ports.json"              # the ports last used, reused when free so lab.env stays valid
WORKSPACE = "workspace"           # $CODESPACE_VSCODE_FOLDER: the lab page's `kubectl apply -f .../flags.yaml`


@dataclass
class Timings:
    """How fast the local lab moves. The workbook keeps realistic values; tests use fast()."""

    pod_terminate: float = 4.0     # s a flagd pod stays Terminating after a scale-down
    pod_start: float = 4.0         # s from Pending to Running and Ready
    shopper_rate: float = 1.0      # background shopper sessions per second (0 = off)
    problem_quiet: float = 180.0   # s without a record refreshing a Davis event before it ends
    seed_hours: float = 2.0        # hours of baseline traffic seeded at start
    grail_delay: float = 0.2       # s before a Grail query finishes (execute answers 202 first)

    @classmethod
    def fast(cls) -> "Timings":
        return cls(pod_terminate=0.3, pod_start=0.3, shopper_rate=2.0,
                   problem_quiet=3.0, seed_hours=2.0, grail_delay=0.05)

    @classmethod
    def from_env(cls, environ=None, base: "Timings | None" = None) -> "Timings":
        """Override any field with LABKIT_<FIELD> (e.g. LABKIT_POD_START=1.5)."""
        env = os.environ if environ is None else environ
        from labkit.errors import BadInput

        t = base or cls()
        for f in fields(cls):
            name = f"LABKIT_{f.name.upper()}"
            raw = env.get(name)
            if raw:
                try:
                    value = float(raw)
                except ValueError:
                    value = math.nan
                if not math.isfinite(value) or value < 0:
                    raise BadInput(f"{name} must be a number of {'seconds' if f.type != 'int' else 'errors'} "
                                   f"(0 or more, e.g. 1.5); got {raw[:40]!r}. Fix or unset it.")
                setattr(t, f.name, type(f.default)(value) if f.type != "int" else int(value))
        return t


def support_info(tenant_url: str, document_id: str) -> str:
    """The cart's supportInfo linking the runbook on this tenant (labkit.tenant's wording)."""
    from labkit.tenant import support_info as lab_support_info

    return lab_support_info(tenant_url, document_id)


def make_token(prefix: str = "dt0c01") -> str:
    """A token shaped like a Dynatrace one, new for every local lab."""
    alphabet = string.ascii_uppercase + string.digits
    part = lambda n: "".join(secrets.choice(alphabet) for _ in range(n))  # noqa: E731
    return f"{prefix}.{part(24)}.{part(64)}"


def kubeconfig_text(server_url: str, token: str = "local-lab", ca_pem: bytes | None = None) -> str:
    """A kubeconfig for a local lab's Kubernetes API. Over https it carries the lab's CA as
    `certificate-authority-data` (as kind's does), so kubectl checks the server and sends the token."""
    ca = f"    certificate-authority-data: {base64.b64encode(ca_pem).decode()}\n" if ca_pem else ""
    return (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: labkit-local\n  cluster:\n{ca}    server: {server_url}\n"
        f"users:\n- name: labkit-local\n  user:\n    token: {token}\n"
        "contexts:\n- name: labkit-local\n  context:\n    cluster: labkit-local\n"
        "    user: labkit-local\n    namespace: default\n"
        "current-context: labkit-local\n"
    )


class LocalLab:
    """All of the local lab in this process, on free loopback ports, until stop().

    `cluster_name` is the k8s.cluster.name its data carries (default: $LABKIT_CLUSTER_NAME, else
    the one it had, else labkit-local). With `tenant` (a SharedTenant) its shop's data goes to
    that tenant, beside other labs' (seats of a workshop), instead of a tenant of its own.
    The tenant starts set up as the lab's getting-started page leaves it (runbook, pipeline, route;
    the cart's supportInfo links the runbook); `bare_tenant` (default $LABKIT_BARE_TENANT=1) starts
    it without them and the cart annotated as the lab's otel-demo-values.yaml has it."""

    def __init__(self, state_dir: str | Path, timings: Timings | None = None,
                 flags_yaml: str | None = None, release: str | None = None,
                 cluster_name: str | None = None, tenant: "SharedTenant | None" = None,
                 bare_tenant: bool | None = None):
        from labkit import releases
        from labkit.sandbox import dynatrace, kube, shop, state
        from labkit.sandbox.dynatrace import seed
        from labkit.sandbox.http import LabServer
        from labkit.sandbox.tls import lab_certificates
        from labkit.settings import cluster_name as checked_cluster_name

        self.state_dir = Path(state_dir)
        # One lab per state dir (else StateDirBusy); held until stop() or until this object is gone.
        self._owner = state.Ownership(self.state_dir)
        self.archived_timeline: Path | None = None
        self.timings = timings or Timings.from_env()
        # The demo release imitated (its cart, images and ConfigMap): argument, else LABKIT_DEMO_RELEASE.
        self.release = releases.get(release or os.environ.get("LABKIT_DEMO_RELEASE"))
        # A lab.env still here is from a local lab that was killed: keep its tokens (and below its
        # ports and flags), so the terminals and kernels that sourced it keep working after a restart.
        previous = _previous_env(self.state_dir / "lab.env")
        self.cluster_name = checked_cluster_name(
            cluster_name or os.environ.get("LABKIT_CLUSTER_NAME") or previous.get("LABKIT_CLUSTER_NAME")
        ) or dynatrace.DEFAULT_CLUSTER
        self.api_token = previous.get("DT_API_TOKEN") or make_token()
        self.ingest_token = make_token()  # the lab's own token: ingest scopes only
        self.platform_token = previous.get("DT_PLATFORM_TOKEN") or make_token("dt0s16")
        saved = None if flags_yaml else _read_json(self.state_dir / FLAGS_COPY)
        self.restored_flags = isinstance(saved, dict) and isinstance(saved.get("data"), dict)
        if self.restored_flags:
            flags_yaml = json.dumps(saved)  # JSON is YAML: the ConfigMap as it was last written
        self.shared = tenant
        if tenant is None:
            self.telemetry = dynatrace.Telemetry(self.timings, cluster=self.cluster_name)
            self.tenant = dynatrace.Tenant(self.telemetry, self.timings, {})
        else:
            self.telemetry, self.tenant = tenant.telemetry, tenant.tenant
        self.tenant.add_token(self.api_token, dynatrace.READ_AND_INGEST_SCOPES)
        self.tenant.add_token(self.ingest_token, dynatrace.LAB_INGEST_SCOPES)
        self.tenant.platform_tokens.add(self.platform_token)
        ports = _read_json(self.state_dir / PORTS)
        ports = ports if isinstance(ports, dict) else {}

        def server(app, name: str, tls=None) -> LabServer:
            port = ports.get(name)
            if isinstance(port, int) and 1024 <= port <= 65535:
                try:
                    return LabServer(app, port=port, tls=tls)
                except OSError:
                    pass  # taken by now: a new free port (lab.env is rewritten at start)
            return LabServer(app, tls=tls)

        self.tenant_server = server(dynatrace.app(self.tenant), "tenant") if tenant is None else tenant.server
        if bare_tenant is None:
            bare_tenant = os.environ.get("LABKIT_BARE_TENANT", "") == "1"
        self.bare_tenant = bare_tenant
        if tenant is None and not bare_tenant:
            seed.set_up(self.tenant)
        runbook = None if bare_tenant else seed.runbook_id(self.tenant)
        # As the chart installs it: the release's own flag file (the lab page's is applied later, by hand).
        self.cluster = kube.LocalCluster(
            self.timings, flags_yaml or self.release.configmap_yaml(), demo_version=self.release.version,
            support_info=support_info(self.tenant_server.url, runbook) if runbook else None)
        self.cluster.on_configmap_change = self._keep_flags
        # The Kubernetes API over TLS with the lab's own CA and token: no one else on the machine gets in.
        self.certificates = lab_certificates(self.state_dir)
        self.cluster.token, self.cluster.token_required = self.certificates.token, True
        # the lab's collector: what the shop writes carries this lab's k8s.cluster.name and its pod's tags
        self.collector = dynatrace.Collector(self.telemetry, self.cluster_name, self.cluster)
        self.shop = shop.DemoShop(self.cluster, self.collector, self.timings, self.release)
        self.kube_server = server(kube.app(self.cluster), "kube", self.certificates.server_context())
        self.frontend_server = server(shop.app(self.shop), "frontend")
        self.cluster.register_service("frontend-proxy", 8080, self.frontend_server.app)

    def _servers(self) -> dict:
        """This lab's own servers by name (a shared tenant's server is not one of them)."""
        own = {"kube": self.kube_server, "frontend": self.frontend_server}
        return own if self.shared else {**own, "tenant": self.tenant_server}

    def start(self) -> "LocalLab":
        from labkit.sandbox import state

        # The tenant starts anew (seeded, in memory): so does the run it is the record of.
        self.archived_timeline = state.archive_timeline(self.state_dir)
        for server in self._servers().values():
            server.start()
        self.cluster.start()
        self.shop.start()
        if not self.shared:
            self.tenant.start()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.state_dir / PORTS, json.dumps({
            name: server.server_address[1] for name, server in self._servers().items()}))
        self.kubeconfig_path.touch(mode=0o600)  # it holds the API's token
        self.kubeconfig_path.write_text(self.kubeconfig())
        workspace = self.state_dir / WORKSPACE
        workspace.mkdir(exist_ok=True)
        if not (workspace / "flags.yaml").exists():  # the attendee's copy: edits to it are theirs
            (workspace / "flags.yaml").write_text(SHARED_FLAGS.read_text())
        env_file = self.state_dir / "lab.env"
        env_file.touch(mode=0o600)
        env_file.write_text("".join(f"export {k}={v}\n" for k, v in self.env.items()))
        return self

    def stop(self) -> None:
        self.shop.stop()
        if not self.shared:
            self.tenant.stop()
        self.cluster.stop()
        for server in self._servers().values():
            server.stop()
        if self._owner.held:  # ours to remove: no other lab ran on this state dir meanwhile
            for name in ("lab.env", "kubeconfig"):
                (self.state_dir / name).unlink(missing_ok=True)
        self._owner.release()

    def _keep_flags(self, configmap: dict | None) -> None:
        """After every write of the flag ConfigMap: keep it in the state dir (deleted: forget it)."""
        path = self.state_dir / FLAGS_COPY
        if configmap is None:
            path.unlink(missing_ok=True)
            return
        meta = configmap.get("metadata") or {}
        kept = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {k: meta[k] for k in ("name", "labels", "annotations") if k in meta},
                "data": configmap.get("data") or {}}
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, json.dumps(kept, indent=1))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def archive_note(self) -> str | None:
        """One line on the earlier run's timeline set aside at start (None when there was none)."""
        if self.archived_timeline is None:
            return None
        return (f"new run: the last start's timeline (its tenant data is gone) is kept as "
                f"{self.archived_timeline}")

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
            "LABKIT_STATE_DIR": str(self.state_dir),
            "LABKIT_CLUSTER_NAME": self.cluster_name,
            "CODESPACE_VSCODE_FOLDER": str(self.state_dir / WORKSPACE),
        }

    def kubeconfig(self) -> str:
        return kubeconfig_text(self.kube_server.url, self.certificates.token, self.certificates.ca_pem)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _previous_env(path: Path) -> dict[str, str]:
    """Tokens from a lab.env left behind (a killed local lab), when they look like tokens."""
    from labkit.settings import _TOKEN, read_dotenv

    env = read_dotenv(path)
    kept = {k: v for k, v in env.items() if k in ("DT_API_TOKEN", "DT_PLATFORM_TOKEN") and _TOKEN.match(v)}
    if env.get("LABKIT_CLUSTER_NAME"):
        kept["LABKIT_CLUSTER_NAME"] = env["LABKIT_CLUSTER_NAME"]
    return kept


def start_shared_tenant(state_dir: str | Path, seats=(), timings: Timings | None = None,
                        split_by_cluster: bool = True) -> "SharedTenant":
    """One local tenant on loopback, started, with a local lab per name in `seats` sending to it
    (labkit.sandbox.shared); add more with .add_seat(name)."""
    from labkit.sandbox.shared import SharedTenant

    shared = SharedTenant(state_dir, timings, split_by_cluster).start()
    try:
        for name in seats:
            shared.add_seat(name)
    except BaseException:
        shared.stop()
        raise
    return shared


def default_state_dir() -> Path:
    """Where `python -m labkit sandbox` writes lab.env, so any terminal or kernel can attach."""
    return Path(os.environ.get("LABKIT_STATE_DIR") or Path.home() / ".cache" / "labkit" / "local-lab")
