"""Recovery of a local cluster whose processes were killed, and etcd closed to local users.

A cluster of its own (not the session one: these tests kill its processes). A dead
kube-apiserver or etcd must come back from `loopline cluster up` with everything it had:
objects, CA, port, admin token and service-account tokens, so every kubeconfig and client
keeps working. Deleting is only `down`'s or `up --reset`'s, and `--reset` says so. etcd,
which answers below RBAC, must refuse anyone without a client certificate from its own CA.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from loopline.cluster import state as st
from loopline.cluster.process import port_is_free
from loopline.wait import wait_for
from tests.fixtures.cluster import ClusterHandle, start_cluster

pytestmark = pytest.mark.security

NAMESPACE = "keep-me"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loopline.cli.main", "cluster", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if text in cmdline and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    state_dir = tmp_path_factory.mktemp("recovery") / "state"
    handle = start_cluster(state_dir, nodes=0)
    try:
        yield handle
    finally:
        handle.local.down()
        assert _processes_mentioning(str(state_dir)) == []


@pytest.fixture(scope="module")
def seeded(own: ClusterHandle) -> dict[str, str]:
    """Objects a person would be upset to lose, and a service-account token issued
    before any kill (signed with the key recovery must keep)."""
    api = own.api_client()
    try:
        core = k8s.CoreV1Api(api)
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NAMESPACE)))
        core.create_namespaced_config_map(
            NAMESPACE,
            k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="settings"), data={"k": "v"}),
        )
        core.create_namespaced_secret(
            NAMESPACE,
            k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="creds"), string_data={"pw": "s3cret"}),
        )
        core.create_namespaced_service_account(
            NAMESPACE, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="reader"))
        )
        model = {
            "apiVersion": "loopline.dev/v1alpha1",
            "kind": "Model",
            "metadata": {"name": "fraud"},
            "spec": {"task": "anomaly-detection", "pipelineRef": {"name": "training"}},
        }
        k8s.CustomObjectsApi(api).create_namespaced_custom_object(
            "loopline.dev", "v1alpha1", NAMESPACE, "models", model
        )
    finally:
        api.close()
    token = own.kubectl("create", "token", "reader", "-n", NAMESPACE, "--duration=1h")
    return {"sa_token": token.stdout.strip()}


def _assert_intact(own: ClusterHandle, seeded: dict[str, str]) -> None:
    """Everything seeded is still there, reached with the kubeconfig written at the first
    `up` (same server URL, CA and admin token) and the old service-account token."""
    api = own.api_client()
    try:
        core = k8s.CoreV1Api(api)
        assert core.read_namespace(NAMESPACE).status.phase == "Active"
        assert core.read_namespaced_config_map("settings", NAMESPACE).data == {"k": "v"}
        secret = core.read_namespaced_secret("creds", NAMESPACE).data
        assert base64.b64decode(secret["pw"]) == b"s3cret"
        model = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
            "loopline.dev", "v1alpha1", NAMESPACE, "models", "fraud"
        )
        assert model["spec"]["task"] == "anomaly-detection"
    finally:
        api.close()
    with httpx.Client(verify=ssl.create_default_context(cafile=str(own.ca_file))) as http:
        review = http.get(
            f"{own.server}/api/v1/namespaces/{NAMESPACE}/serviceaccounts/reader",
            headers={"Authorization": f"Bearer {seeded['sa_token']}"},
        )
    # Authenticated (not 401) and then refused by RBAC: the pre-kill token still verifies.
    assert review.status_code == 403, review.text


def _kill(own: ClusterHandle, name: str) -> st.ProcessRecord:
    state = own.local.state()
    assert state is not None
    record = state.process(name)
    os.killpg(record.pid, signal.SIGKILL)
    wait_for(lambda: not st.is_alive(record), timeout=10, what=f"{name} to die")
    return record


def _fingerprint(own: ClusterHandle) -> dict[str, bytes | str]:
    layout = own.local.layout
    return {
        "kubeconfig": layout.kubeconfig.read_bytes(),
        "ca": layout.ca_cert.read_bytes(),
        "sa": layout.sa_key.read_bytes(),
        "tokens": layout.token_file.read_bytes(),
        "server": own.server,
    }


@pytest.mark.parametrize("victim", ["kube-apiserver", "etcd"])
def test_up_restarts_a_killed_process_keeping_port_ca_tokens_and_objects(
    own: ClusterHandle, seeded: dict[str, str], victim: str
) -> None:
    before = _fingerprint(own)
    state = own.local.state()
    assert state is not None
    survivor = next(p for p in state.processes if p.name != victim)
    dead = _kill(own, victim)

    status = _cli("status", "--state-dir", str(own.local.state_dir))
    assert status.returncode == 1
    assert f"{victim} (pid {dead.pid}) is dead." in status.stdout
    assert "`loopline cluster up` restarts it with the same etcd data, CA" in status.stdout
    assert f"leaves {survivor.name} running" in status.stdout
    assert "cleans up" not in status.stdout

    began = time.monotonic()
    up = _cli("up", "--no-build", "--state-dir", str(own.local.state_dir))
    took = time.monotonic() - began
    assert up.returncode == 0, up.stderr
    assert f"restarted {victim} with the same etcd data" in up.stdout
    assert f"left {survivor.name} running" in up.stdout
    print(f"`up` brought back a killed {victim} in {took:.1f}s")

    after = own.local.state()
    assert after is not None
    assert after.process(victim).pid != dead.pid
    assert after.process(survivor.name).pid == survivor.pid  # adopted, not restarted
    assert after.ports == state.ports
    assert _fingerprint(own) == before
    assert own.local.status().health is st.Health.RUNNING
    _assert_intact(own, seeded)


def test_up_refuses_to_restart_on_a_taken_port_and_deletes_nothing(
    own: ClusterHandle, seeded: dict[str, str]
) -> None:
    """A new port would strand every client holding the old one: refuse, keep all."""
    before = _fingerprint(own)
    dead = _kill(own, "kube-apiserver")
    port = own.local.state().ports["kube-apiserver"]  # type: ignore[union-attr]
    # The kernel releases a killed process's sockets a moment after it shows as dead.
    wait_for(lambda: port_is_free(port), timeout=10, what=f"port {port} released")
    with socket.create_server(("127.0.0.1", port)):
        up = _cli("up", "--no-build", "--state-dir", str(own.local.state_dir))
    assert up.returncode == 1
    assert f"127.0.0.1:{port} is now taken by another process" in up.stderr
    assert "nothing was deleted" in up.stderr
    assert own.local.state().process("kube-apiserver").pid == dead.pid  # type: ignore[union-attr]
    assert _fingerprint(own) == before
    again = _cli("up", "--no-build", "--state-dir", str(own.local.state_dir))
    assert again.returncode == 0, again.stderr
    _assert_intact(own, seeded)


# -- etcd is closed to anyone but the apiserver ---------------------------------------------


def _etcd_urls(own: ClusterHandle) -> tuple[str, str]:
    state = own.local.state()
    assert state is not None
    return (
        f"127.0.0.1:{state.ports['etcd-client']}",
        f"127.0.0.1:{state.ports['etcd-peer']}",
    )


def _plain_http_answer(hostport: str) -> str:
    """What a plain-HTTP client gets: a status line, or the error that stopped it."""
    host, port = hostport.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("POST", "/v3/kv/range", body=b'{"key":"Lw==","range_end":"MA=="}')
        response = conn.getresponse()
        return f"{response.status} {response.read()[:200]!r}"
    except (OSError, http.client.HTTPException) as exc:
        return f"error: {exc!r}"
    finally:
        conn.close()


def _tls_answer(hostport: str, context: ssl.SSLContext) -> str:
    try:
        with httpx.Client(verify=context, timeout=5) as http:
            response = http.get(f"https://{hostport}/health")
            return f"{response.status_code} {response.text[:200]}"
    except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
        return f"error: {exc!r}"


def _etcd_ca_context(own: ClusterHandle) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(own.local.layout.etcd_ca_cert))


def _cert_from_cluster_ca(own: ClusterHandle, directory: Path) -> tuple[Path, Path]:
    """A client certificate signed by the cluster CA (what an approved CSR yields)."""
    layout = own.local.layout
    ca_cert = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(layout.ca_key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intruder")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "intruder.crt", directory / "intruder.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_etcd_refuses_plain_http_and_clients_without_its_certificate(
    own: ClusterHandle, tmp_path: Path
) -> None:
    client, peer = _etcd_urls(own)
    layout = own.local.layout

    # The apiserver's certificate opens it: the refusals below are about the missing
    # certificate, not about a dead etcd.
    apiserver_like = _etcd_ca_context(own)
    apiserver_like.load_cert_chain(layout.etcd_client_cert, layout.etcd_client_key)
    assert _tls_answer(client, apiserver_like) == '200 {"health":"true","reason":""}'

    for hostport in (client, peer):
        plain = _plain_http_answer(hostport)
        assert not plain.startswith("200"), (hostport, plain)
        assert "kvs" not in plain, (hostport, plain)

        no_cert = _tls_answer(hostport, _etcd_ca_context(own))
        assert no_cert.startswith("error:"), (hostport, no_cert)

        intruder = _etcd_ca_context(own)
        intruder.load_cert_chain(*_cert_from_cluster_ca(own, tmp_path))
        from_cluster_ca = _tls_answer(hostport, intruder)
        assert from_cluster_ca.startswith("error:"), (hostport, from_cluster_ca)

    etcd = own.local.state().process("etcd")  # type: ignore[union-attr]
    assert not [arg for arg in etcd.argv if "http://" in arg]


# -- deleting takes an explicit --reset ------------------------------------------------------


def test_up_reset_deletes_the_cluster_and_says_what(
    own: ClusterHandle, seeded: dict[str, str]
) -> None:
    """Last in this file: it ends the cluster the tests above recovered."""
    old_ca = own.local.layout.ca_cert.read_bytes()
    old_token = own.token
    reset = _cli("up", "--reset", "--no-build", "--state-dir", str(own.local.state_dir))
    assert reset.returncode == 0, reset.stderr
    assert "--reset deleted etcd data" in reset.stdout
    assert "every namespace and object" in reset.stdout
    assert "kubeconfigs of this cluster stop working" in reset.stdout
    assert "Cluster started" in reset.stdout
    assert own.local.layout.ca_cert.read_bytes() != old_ca
    new_token = own.local.admin_token()
    assert new_token != old_token
    state = own.local.state()
    assert state is not None
    verify = ssl.create_default_context(cafile=str(own.local.layout.ca_cert))
    with httpx.Client(verify=verify) as http:
        stale = http.get(
            f"{state.server}/api/v1/namespaces",
            headers={"Authorization": f"Bearer {old_token}"},
        )
        gone = http.get(
            f"{state.server}/api/v1/namespaces/{NAMESPACE}",
            headers={"Authorization": f"Bearer {new_token}"},
        )
    assert stale.status_code == 401
    assert gone.status_code == 404
    with pytest.raises(ApiException):  # the seeded objects went with the old cluster
        _assert_intact(own, seeded)
