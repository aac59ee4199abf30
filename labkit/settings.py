"""Where the lab is: environment and .env, the Dynatrace URL rules, names, and secrets kept secret."""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from labkit.errors import BadInput

# The lab's names (FACTS.md): one place, so a renamed demo object is a one-line change.
NAMESPACE = "default"
CONFIGMAP = "flagd-config"
CONFIG_KEY = "demo.flagd.json"
FLAGD_DEPLOYMENT = "flagd"
FLAGD_SELECTOR = "opentelemetry.io/name=flagd"
FLAGD_SERVICE = "flagd"
OFREP_PORT = 8016
FLAGD_RPC_PORT = 8013  # flagd's evaluation API (gRPC and Connect JSON): how the demo's cart asks
CART_SELECTOR = "opentelemetry.io/name=cart"
DEFAULT_FRONTEND_URL = "http://localhost:8080"  # the lab's port-forward
SERVICE = "cart"
FLAG = "cartFailure"
TIMELINE_FILE = "timeline.jsonl"  # the run's steps, one JSON line each (labkit.timeline)
LOCAL_LAB_LABEL = "local lab (sandbox on loopback, not a real tenant)"

_TOKEN = re.compile(r"^dt0[a-z][0-9]{2}\.[A-Za-z0-9]+\.[A-Za-z0-9]+$")


class Secret:
    """A token whose repr and str are masked, so printing settings or an error never leaks it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        """The token itself: only for an Authorization header to the configured host."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')"

    __str__ = __repr__

    def __eq__(self, other) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self):  # never pickled into a notebook or a cache
        raise TypeError("a Secret cannot be pickled")


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_namespace(name: str, value: str) -> str:
    """A Kubernetes namespace name (RFC 1123 label), or a BadInput naming where it came from."""
    if not re.match(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", value):
        raise BadInput(f"{name} {value[:70]!r} is not a Kubernetes namespace name.")
    return value


def cluster_name(value: str | None) -> str | None:
    """LABKIT_CLUSTER_NAME: this lab's `k8s.cluster.name` (its seat on a shared tenant), or None."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,252}$", value):
        raise BadInput(f"LABKIT_CLUSTER_NAME {value[:70]!r} is not a cluster name (letters, digits and "
                       ". _ : / @ -, as the lab's collector sets k8s.cluster.name). Fix or unset it.")
    return value


def _check_url(name: str, url: str) -> str:
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or len(parts.hostname) > 253:
        raise BadInput(f"{name} must be a URL like https://abc12345.live.dynatrace.com; got {url[:80]!r}"
                       f"{f' ({len(url)} characters)' if len(url) > 80 else ''}.")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise BadInput(
            f"{name} uses http:// for {parts.hostname}; tokens are only sent over https "
            "(plain http is allowed for loopback only). Use the https:// address of your tenant."
        )
    if parts.query or parts.fragment:
        raise BadInput(f"{name} must not carry a query or fragment; use the bare tenant address.")
    return url


def dynatrace_urls(url: str) -> tuple[str, str]:
    """(classic, platform) base URLs from either form of DT_URL, as FACTS.md's rule says."""
    url = _check_url("DT_URL", url)
    parts = urlsplit(url)
    host = parts.hostname or ""
    if is_loopback(host):
        return url, url  # the local lab serves both APIs on one address
    if ".apps." in host:
        classic_host = host.replace(".apps.dynatrace.com", ".live.dynatrace.com").replace(
            ".apps.dynatracelabs.com", ".dynatracelabs.com")
        return url.replace(host, classic_host, 1), url
    if host.endswith(".live.dynatrace.com"):
        return url, url.replace(".live.dynatrace.com", ".apps.dynatrace.com", 1)
    m = re.match(r"^(.*)\.(sprint|dev)\.dynatracelabs\.com$", host)
    if m:
        return url, url.replace(host, f"{m.group(1)}.{m.group(2)}.apps.dynatracelabs.com", 1)
    return url, url  # Managed or ActiveGate: no platform API; the classic host is all there is


def token(name: str, value: str | None) -> Secret | None:
    """A checked token, or None when unset. The error names the variable, never the value."""
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    if not _TOKEN.match(value):
        raise BadInput(
            f"{name} does not look like a Dynatrace token (dt0c01.<public>.<secret>, "
            "no quotes or spaces). Copy it again from Access tokens."
        )
    return Secret(value)


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=value lines (optional 'export ', quotes, # comments); malformed lines are skipped."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key.strip()):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


@dataclass(frozen=True)
class Settings:
    """Everything labkit needs to find the lab. Build it with Settings.load()."""

    dt_url: str | None = None
    platform_url: str | None = None
    api_token: Secret | None = None
    platform_token: Secret | None = None
    frontend_url: str = DEFAULT_FRONTEND_URL
    kubeconfig: str | None = None
    namespace: str = NAMESPACE
    local: bool = False  # True when these settings point at the local lab
    state_dir: str | None = None  # LABKIT_STATE_DIR: where the local lab (and the run's timeline) live
    # LABKIT_CLUSTER_NAME: the k8s.cluster.name this lab's data carries; set, every Dynatrace query
    # and the change event are this seat's only (a shared tenant). Unset: the whole tenant is ours.
    # Not guessed from the kubeconfig: the lab's collector sets no cluster name of its own, so a
    # guessed one would match no data and read as "no failures".
    cluster_name: str | None = None

    @classmethod
    def load(cls, environ: dict | None = None, dotenv: str | Path | None = ".env") -> "Settings":
        """Settings from the environment, falling back to a .env file (environment wins)."""
        env = dict(read_dotenv(Path(dotenv))) if dotenv else {}
        env.update(os.environ if environ is None else environ)
        dt_url = platform_url = None
        if env.get("DT_URL", "").strip():
            dt_url, platform_url = dynatrace_urls(env["DT_URL"])
        if env.get("DT_PLATFORM_URL", "").strip():
            platform_url = _check_url("DT_PLATFORM_URL", env["DT_PLATFORM_URL"])
        namespace = check_namespace("LAB_NAMESPACE", env.get("LAB_NAMESPACE", "").strip() or NAMESPACE)
        return cls(
            dt_url=dt_url,
            platform_url=platform_url,
            api_token=token("DT_API_TOKEN", env.get("DT_API_TOKEN")),
            platform_token=token("DT_PLATFORM_TOKEN", env.get("DT_PLATFORM_TOKEN")),
            frontend_url=_check_url("FRONTEND_URL", env.get("FRONTEND_URL") or DEFAULT_FRONTEND_URL),
            kubeconfig=env.get("KUBECONFIG") or None,
            namespace=namespace,
            local=env.get("LABKIT_LOCAL_LAB") == "1",
            state_dir=env.get("LABKIT_STATE_DIR") or None,
            cluster_name=cluster_name(env.get("LABKIT_CLUSTER_NAME")),
        )

    @property
    def has_tenant(self) -> bool:
        """A tenant address and a token for it: a platform token alone is enough (fidelity.md)."""
        return bool(self.dt_url and (self.api_token or self.platform_token))

    def timeline_path(self) -> Path:
        """Where this lab's run (its timeline) is kept: in the local lab's state dir, or for a real lab
        in a folder per tenant under ~/.cache/labkit/runs (outside the repository, so never committed
        with the notebooks; every kernel and terminal of this machine sees it)."""
        if self.local and self.state_dir:
            return Path(self.state_dir) / TIMELINE_FILE
        host = urlsplit(self.dt_url).hostname if self.dt_url else "no-tenant"
        return Path.home() / ".cache" / "labkit" / "runs" / f"{host}-{self.namespace}" / TIMELINE_FILE

    def where(self) -> str:
        """A one-line, secret-free description of which lab this is."""
        seat = f", cluster {self.cluster_name}" if self.cluster_name else ""
        if self.local:
            return f"{LOCAL_LAB_LABEL} at {self.dt_url}{seat}"
        return f"tenant {self.dt_url or '(none)'}, namespace {self.namespace}{seat}"
