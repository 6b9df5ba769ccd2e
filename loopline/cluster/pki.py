"""Certificates and keys of the local cluster.

A private CA signs the apiserver's serving certificate so clients verify TLS for real (no
`insecure-skip-tls-verify`) and the kubeconfig can embed the CA. A separate RSA key pair
signs service-account tokens. etcd has a CA of its own and accepts only clients holding a
certificate from it (kube-apiserver), so local users cannot read or write etcd around RBAC. Everything is generated per state directory and never
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
_CLOCK_SKEW = dt.timedelta(minutes=5)  # tolerated difference between clocks
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
    etcd_ca_cert: bytes
    etcd_cert: bytes
    etcd_key: bytes
    etcd_client_cert: bytes
    etcd_client_key: bytes


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _ca(common_name: str, now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    common_name: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    now: dt.datetime,
    usages: list[x509.ObjectIdentifier],
    *,
    dns_names: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    organizations: tuple[str, ...] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = issuer
    key = ec.generate_private_key(ec.SECP256R1())
    name = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    name.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if dns_names or ips:
        san = x509.SubjectAlternativeName(
            [x509.DNSName(name) for name in dns_names]
            + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        )
        builder = builder.add_extension(san, critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def issue(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    common_name: str,
    *,
    organizations: tuple[str, ...] = (),
    server: bool = False,
    ips: tuple[str, ...] = (),
    dns_names: tuple[str, ...] = (),
    now: dt.datetime | None = None,
) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) signed by the cluster CA on disk: a client certificate
    (the organizations are its groups), or a serving one for `ips`/`dns_names` when `server`.

    Components added to a running cluster (the node, CoreDNS) authenticate this way: the
    API server reads its static token file once at start, but trusts its CA at once."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the cluster CA key is not an EC key; was it written by loopline?")
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert, key = _leaf(
        common_name,
        (ca_cert, ca_key),
        now or dt.datetime.now(dt.UTC),
        [usage],
        dns_names=dns_names,
        ips=ips,
        organizations=organizations,
    )
    return _pem_cert(cert), _pem_key(key)


def generate(now: dt.datetime | None = None, *, extra_ips: tuple[str, ...] = ()) -> PKI:
    """A fresh cluster CA with the apiserver's serving certificate for loopback and the
    service IP, an SA key pair, and etcd's own CA with etcd's certificate and the client
    certificate kube-apiserver presents to etcd (etcd requires one: `--client-cert-auth`).
    `extra_ips`: more addresses the apiserver is reached at (a containerd node's IP)."""
    now = now or dt.datetime.now(dt.UTC)
    ca = _ca("loopline-local-ca", now)
    serving = _leaf(
        "kube-apiserver",
        ca,
        now,
        [ExtendedKeyUsageOID.SERVER_AUTH],
        dns_names=SERVING_DNS_NAMES,
        ips=SERVING_IPS + tuple(ip for ip in extra_ips if ip not in SERVING_IPS),
    )
    etcd_ca = _ca("loopline-etcd-ca", now)
    # One certificate serves clients and the (single-member) peer listener, which checks
    # it as a client too, hence both usages.
    etcd = _leaf(
        "loopline-etcd",
        etcd_ca,
        now,
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        dns_names=("localhost",),
        ips=("127.0.0.1",),
    )
    etcd_client = _leaf(
        "kube-apiserver-etcd-client", etcd_ca, now, [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    # Service-account tokens are RS256 JWTs by default, so this key is RSA.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return PKI(
        ca_cert=_pem_cert(ca[0]),
        ca_key=_pem_key(ca[1]),
        serving_cert=_pem_cert(serving[0]),
        serving_key=_pem_key(serving[1]),
        sa_key=_pem_key(sa_key),
        sa_pub=sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        # etcd's CA key is not kept: nothing issues etcd certificates after `up`, and a
        # key that is not on disk cannot mint a way into etcd.
        etcd_ca_cert=_pem_cert(etcd_ca[0]),
        etcd_cert=_pem_cert(etcd[0]),
        etcd_key=_pem_key(etcd[1]),
        etcd_client_cert=_pem_cert(etcd_client[0]),
        etcd_client_key=_pem_key(etcd_client[1]),
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
    layout.etcd_ca_cert.write_bytes(pki.etcd_ca_cert)
    layout.etcd_cert.write_bytes(pki.etcd_cert)
    layout.etcd_client_cert.write_bytes(pki.etcd_client_cert)
    write_private(layout.etcd_key, pki.etcd_key)
    write_private(layout.etcd_client_key, pki.etcd_client_key)


def files(layout: Layout) -> tuple[Path, ...]:
    """Every file `write` creates: recovery needs all of them, unchanged."""
    return (
        layout.ca_cert,
        layout.ca_key,
        layout.serving_cert,
        layout.serving_key,
        layout.sa_key,
        layout.sa_pub,
        layout.etcd_ca_cert,
        layout.etcd_cert,
        layout.etcd_key,
        layout.etcd_client_cert,
        layout.etcd_client_key,
    )
