"""The generated PKI: a real TLS handshake verifies the serving certificate."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from loopline.cluster import pki
from loopline.cluster.layout import Layout


def test_serving_cert_names_loopback_and_service_ip() -> None:
    keys = pki.generate()
    cert = x509.load_pem_x509_certificate(keys.serving_cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert "kubernetes.default.svc" in san.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.0.0.1"}


def test_tls_handshake_verifies_against_the_ca(tmp_path: Path) -> None:
    keys = pki.generate()
    layout = Layout(tmp_path)
    pki.write(keys, layout)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(layout.serving_cert, layout.serving_key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"ok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(layout.ca_cert))
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.recv(2) == b"ok"
    thread.join(5)
    listener.close()


def test_another_ca_is_rejected(tmp_path: Path) -> None:
    ours, theirs = pki.generate(), pki.generate()
    ca = x509.load_pem_x509_certificate(theirs.ca_cert)
    serving = x509.load_pem_x509_certificate(ours.serving_cert)
    assert serving.issuer == ca.subject  # same name, different key...
    try:
        serving.verify_directly_issued_by(ca)
    except Exception:
        pass  # ...so the signature check fails
    else:
        raise AssertionError("serving certificate verified against a foreign CA")
    serving.verify_directly_issued_by(x509.load_pem_x509_certificate(ours.ca_cert))


def test_service_account_key_pair_matches_and_keys_are_private(tmp_path: Path) -> None:
    keys = pki.generate()
    layout = Layout(tmp_path)
    pki.write(keys, layout)
    private = serialization.load_pem_private_key(layout.sa_key.read_bytes(), None)
    public = serialization.load_pem_public_key(layout.sa_pub.read_bytes())
    assert isinstance(private, rsa.RSAPrivateKey)
    assert isinstance(public, rsa.RSAPublicKey)
    signature = private.sign(b"jwt", padding.PKCS1v15(), hashes.SHA256())
    public.verify(signature, b"jwt", padding.PKCS1v15(), hashes.SHA256())
    for path in (
        layout.sa_key,
        layout.ca_key,
        layout.serving_key,
        layout.etcd_key,
        layout.etcd_client_key,
    ):
        assert path.stat().st_mode & 0o077 == 0, path
    assert all(path.is_file() for path in pki.files(layout))


def test_etcd_has_its_own_ca_and_the_cluster_ca_cannot_open_it() -> None:
    """The controller-manager signs approved CSRs with the cluster CA; were etcd to trust
    that CA, a certificate obtained through the API would open etcd around RBAC."""
    keys = pki.generate()
    etcd_ca = x509.load_pem_x509_certificate(keys.etcd_ca_cert)
    cluster_ca = x509.load_pem_x509_certificate(keys.ca_cert)
    client = x509.load_pem_x509_certificate(keys.etcd_client_cert)
    server = x509.load_pem_x509_certificate(keys.etcd_cert)
    client.verify_directly_issued_by(etcd_ca)
    server.verify_directly_issued_by(etcd_ca)
    assert etcd_ca.subject != cluster_ca.subject
    usages = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_issue_signs_client_and_serving_certificates_with_the_cluster_ca() -> None:
    """What the node's components and CoreDNS present: groups as organizations, the usage
    their role needs, verified against the CA that signed them."""
    keys = pki.generate()
    cert_pem, key_pem = pki.issue(
        keys.ca_cert, keys.ca_key, "system:node:n", organizations=("system:nodes",)
    )
    cert = x509.load_pem_x509_certificate(cert_pem)
    subject = cert.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:n"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ca = x509.load_pem_x509_certificate(keys.ca_cert)
    ca_key = ca.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    assert cert.signature_hash_algorithm is not None
    ca_key.verify(
        cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
    )
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]

    serving, _ = pki.issue(keys.ca_cert, keys.ca_key, "n", server=True, ips=("192.0.2.2",))
    served = x509.load_pem_x509_certificate(serving)
    usage = served.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.2"]

    other = pki.generate()
    with pytest.raises(ValueError, match="not an EC key"):
        pki.issue(keys.ca_cert, other.sa_key, "x")
