"""Certificates and keys of the local cluster.

A private CA signs the apiserver's serving certificate so clients verify TLS for real (no
`insecure-skip-tls-verify`) and the kubeconfig can embed the CA. A separate RSA key pair
signs service-account tokens. Everything is generated per state directory and never
leaves it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from loopline.cluster.commands import KUBERNETES_SERVICE_IP
from loopline.cluster.layout import Layout

_VALIDITY = dt.timedelta(days=365)
SERVING_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
SERVING_IPS = ("127.0.0.1", KUBERNETES_SERVICE_IP)


@dataclass(frozen=True)
class PKI:
    """PEM bytes of everything the control plane needs."""

    ca_cert: bytes
    ca_key: bytes
    serving_cert: bytes
    serving_key: bytes
    sa_key: bytes
    sa_pub: bytes


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def generate(now: dt.datetime | None = None) -> PKI:
    """A fresh CA, a serving certificate for loopback and the service IP, an SA key pair."""
    now = now or dt.datetime.now(dt.UTC)
    not_before = now - dt.timedelta(minutes=5)  # tolerate small clock differences

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loopline-local-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    serving_key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName(
        [x509.DNSName(name) for name in SERVING_DNS_NAMES]
        + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVING_IPS]
    )
    serving_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(serving_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(san, critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    # Service-account tokens are RS256 JWTs by default, so this key is RSA.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return PKI(
        ca_cert=ca_cert.public_bytes(serialization.Encoding.PEM),
        ca_key=_pem_key(ca_key),
        serving_cert=serving_cert.public_bytes(serialization.Encoding.PEM),
        serving_key=_pem_key(serving_key),
        sa_key=_pem_key(sa_key),
        sa_pub=sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def write_private(path: Path, data: bytes) -> None:
    """Write a file only the current user can read (keys, tokens, kubeconfigs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def write(pki: PKI, layout: Layout) -> None:
    """Write the PKI into the state directory; keys are 0600."""
    layout.pki_dir.mkdir(parents=True, exist_ok=True)
    layout.ca_cert.write_bytes(pki.ca_cert)
    layout.serving_cert.write_bytes(pki.serving_cert)
    layout.sa_pub.write_bytes(pki.sa_pub)
    write_private(layout.ca_key, pki.ca_key)
    write_private(layout.serving_key, pki.serving_key)
    write_private(layout.sa_key, pki.sa_key)
