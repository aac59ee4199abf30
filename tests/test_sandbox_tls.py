"""The local lab's Kubernetes API over TLS with its own CA: kubectl and the kubernetes client send the
token, and nobody else on the machine gets in (a room's seats share one Unix user)."""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import urllib.request

import httpx
import pytest
import yaml

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed; these run the real binary")
PODS = "/api/v1/namespaces/default/pods"


def _kubeconfig(lab) -> dict:
    return yaml.safe_load(lab.kubeconfig_path.read_text())


def test_the_kubeconfig_names_https_and_carries_the_labs_ca(local_lab):
    cluster = _kubeconfig(local_lab)["clusters"][0]["cluster"]
    assert cluster["server"].startswith("https://127.0.0.1:")
    ca = base64.b64decode(cluster["certificate-authority-data"])
    assert ca == (local_lab.state_dir / "tls" / "ca.crt").read_bytes()
    # the kubeconfig and the server's key hold secrets: only the lab's user reads them
    for path in (local_lab.kubeconfig_path, local_lab.state_dir / "tls" / "server.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_request_without_the_token_is_refused_with_a_status(local_lab):
    ca = ssl.create_default_context(cafile=str(local_lab.state_dir / "tls" / "ca.crt"))
    r = httpx.get(local_lab.kube_server.url + PODS, verify=ca, timeout=5)
    assert r.status_code == 401
    assert r.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    wrong = httpx.get(local_lab.kube_server.url + PODS, verify=ca, timeout=5,
                      headers={"Authorization": "Bearer local-lab"})  # the old shared token
    assert wrong.status_code == 401
    token = _kubeconfig(local_lab)["users"][0]["user"]["token"]
    ok = httpx.get(local_lab.kube_server.url + PODS, verify=ca, timeout=5,
                   headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and ok.json()["kind"] == "PodList"


def test_a_client_that_does_not_trust_the_labs_ca_is_stopped_at_the_handshake(local_lab):
    with pytest.raises(httpx.ConnectError):
        httpx.get(local_lab.kube_server.url + "/healthz", timeout=5)  # the system's CAs only
    port = local_lab.kube_server.server_address[1]
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/namespaces/default/pods", timeout=5).read()


def test_labkit_reads_the_flag_file_through_the_kubernetes_client(local_lab):
    from labkit.cluster import Cluster
    from labkit.settings import Settings

    flags = Cluster(Settings(kubeconfig=str(local_lab.kubeconfig_path))).flag_file()
    assert "cartFailure" in flags.text


def test_another_labs_token_does_not_open_this_one(local_lab, tmp_path):
    from labkit.sandbox import LocalLab, Timings

    other = LocalLab(tmp_path / "other", Timings.fast())
    try:
        assert other.certificates.token != local_lab.certificates.token
        assert other.certificates.ca_pem != local_lab.certificates.ca_pem
    finally:
        for server in (other.kube_server, other.frontend_server, other.tenant_server):
            server.server_close()


@needs_kubectl
def test_kubectl_works_and_port_forward_runs_over_tls(local_lab, tmp_path):
    env = dict(os.environ, KUBECONFIG=str(local_lab.kubeconfig_path), HOME=str(tmp_path))
    got = subprocess.run([KUBECTL, "get", "deploy", "flagd", "-o", "json"], env=env, capture_output=True,
                         text=True, timeout=30)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["metadata"]["name"] == "flagd"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([KUBECTL, "port-forward", "svc/frontend-proxy", f"{port}:8080"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "Forwarding from 127.0.0.1" in proc.stdout.readline()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert r.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0


def test_the_server_context_offers_http_1_1_only(local_lab):
    """Go's client would try HTTP/2 over TLS; the lab's server speaks HTTP/1.1 (ALPN says so)."""
    ctx = ssl.create_default_context(cafile=str(local_lab.state_dir / "tls" / "ca.crt"))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    port = local_lab.kube_server.server_address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.selected_alpn_protocol() == "http/1.1"
