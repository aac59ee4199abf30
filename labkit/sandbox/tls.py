"""The local lab's own certificate authority, so its Kubernetes API is served over TLS as kind's is.

client-go (kubectl) and the kubernetes client send the kubeconfig's bearer token only over TLS; over
plain http anyone on the machine could call the API without it. At the first start a CA and a
server certificate for 127.0.0.1/localhost are made in the state dir (the keys 0600) and kept, so a
restarted lab keeps the kubeconfig's `certificate-authority-data` valid.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path

TLS_DIR = "tls"
_YEARS = 5  # the lab's CA outlives any workshop; a new state dir makes a new one


@dataclass(frozen=True)
class LabCertificates:
    """The files of one lab's CA and server certificate, and the API's bearer token."""

    ca_pem: bytes
    cert_path: Path
    key_path: Path
    token: str

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_path, self.key_path)
        # kubectl (Go) and urllib3 both speak HTTP/1.1 here; offering only that keeps Go off HTTP/2.
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx


def lab_certificates(state_dir: str | Path) -> LabCertificates:
    """The lab's CA, server certificate and token in state_dir/tls, made at the first start."""
    folder = Path(state_dir) / TLS_DIR
    ca, cert, key, token = (folder / n for n in ("ca.crt", "server.crt", "server.key", "token"))
    if not all(p.is_file() for p in (ca, cert, key, token)):
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        ca_pem, cert_pem, key_pem = _make_certificates()
        _write_private(key, key_pem)
        _write_private(token, secrets.token_urlsafe(32).encode())
        cert.write_bytes(cert_pem)
        ca.write_bytes(ca_pem)
    return LabCertificates(ca.read_bytes(), cert, key, token.read_text().strip())


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _make_certificates() -> tuple[bytes, bytes, bytes]:
    """(CA cert, server cert, server key) as PEM: a self-signed CA that signs one loopback server."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    until = now + datetime.timedelta(days=365 * _YEARS)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "labkit local lab CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(until)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(until)
              .add_extension(x509.SubjectAlternativeName(names), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem), server.public_bytes(pem), key_pem
