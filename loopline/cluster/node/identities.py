"""Certificates and kubeconfigs of the node's components, signed by the cluster CA.

The kubelet authenticates as `system:node:<name>` in `system:nodes`, so the apiserver's
Node authorizer limits it to its own node and pods, as on a real cluster; kube-proxy is
`system:kube-proxy`, which upstream's bootstrap binding `system:node-proxier` serves. The
apiserver's client certificate for kubelets is in `system:masters`: the kubelet asks the
apiserver (webhook) whether a caller may read logs or exec, and the apiserver itself may.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from loopline.cluster import pki
from loopline.cluster.kubeconfig import CLUSTER_NAME
from loopline.cluster.node.config import NODE_NAME
from loopline.cluster.node.layout import NodeLayout

_VALIDITY = dt.timedelta(days=365)
_CLOCK_SKEW = dt.timedelta(minutes=5)


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
    """(certificate PEM, key PEM) signed by the CA: a client certificate, or a serving
    one for `ips`/`dns_names` when `server`."""
    now = now or dt.datetime.now(dt.UTC)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError("the cluster CA key is not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    name = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    name.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if ips or dns_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in dns_names]
                + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
            ),
            critical=False,
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def cert_kubeconfig(
    server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, user: str
) -> dict[str, object]:
    """A self-contained kubeconfig authenticating by client certificate."""
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(cert_pem),
                    "client-key-data": b64(key_pem),
                },
            }
        ],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": CLUSTER_NAME,
    }


def write(layout: NodeLayout, server: str, node_ip: str) -> None:
    """Certificates and kubeconfigs of the kubelet, kube-proxy and the apiserver's kubelet
    client, from the cluster CA already in the state directory."""
    cluster = layout.cluster
    ca_pem = cluster.ca_cert.read_bytes()
    ca_key_pem = cluster.ca_key.read_bytes()
    layout.kubelet_dir.mkdir(parents=True, exist_ok=True)
    layout.proxy_dir.mkdir(parents=True, exist_ok=True)

    def save(cert_path: Path, key_path: Path, pair: tuple[bytes, bytes]) -> None:
        cert_path.write_bytes(pair[0])
        pki.write_private(key_path, pair[1])

    node_user = f"system:node:{NODE_NAME}"
    kubelet = issue(ca_pem, ca_key_pem, node_user, organizations=("system:nodes",))
    save(layout.kubelet_cert, layout.kubelet_key, kubelet)
    serving = issue(
        ca_pem,
        ca_key_pem,
        NODE_NAME,
        server=True,
        ips=(node_ip, "127.0.0.1"),
        dns_names=(NODE_NAME, "localhost"),
    )
    save(layout.kubelet_serving_cert, layout.kubelet_serving_key, serving)
    proxy = issue(ca_pem, ca_key_pem, "system:kube-proxy")
    save(layout.proxy_cert, layout.proxy_key, proxy)
    apiserver = issue(
        ca_pem, ca_key_pem, "kube-apiserver-kubelet-client", organizations=("system:masters",)
    )
    save(layout.apiserver_kubelet_client_cert, layout.apiserver_kubelet_client_key, apiserver)
    for path, pair, user in (
        (layout.kubelet_kubeconfig, kubelet, node_user),
        (layout.proxy_kubeconfig, proxy, "system:kube-proxy"),
    ):
        config = cert_kubeconfig(server, ca_pem, pair[0], pair[1], user)
        pki.write_private(path, yaml.safe_dump(config, sort_keys=False).encode())
