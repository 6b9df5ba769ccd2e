"""CoreDNS against the real local control plane (the kwok session cluster): it lists
Services from the API server with its own client certificate and answers for them, and
publishes itself as the `kube-dns` Service with an EndpointSlice to the host.

The containerd node's pods reach it through kube-proxy (tests/realnode); here the host
asks it directly on loopback, with a hand-made DNS query (no resolver library needed).
"""

from __future__ import annotations

import json
import random
import socket
import struct
from collections.abc import Iterator

import pytest

from loopline.cluster import dns
from loopline.cluster.binaries import find_go
from loopline.cluster.settings import ClusterSettings
from tests.fixtures.cluster import ClusterHandle


def query_a(
    server: tuple[str, int], name: str, timeout: float = 3.0, attempts: int = 3
) -> tuple[int, list[str]]:
    """Send an A query over UDP; return (rcode, the A records' addresses).

    Resent on timeout, as every stub resolver does (glibc: `options timeout:5 attempts:2`):
    UDP promises no delivery, and a CI machine under load may leave one answer late."""
    ident = random.randrange(1 << 16)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        for attempt in range(attempts):
            sock.sendto(packet, server)
            try:
                reply = _reply_to(sock, ident)
                break
            except TimeoutError:
                if attempt == attempts - 1:
                    raise TimeoutError(
                        f"no answer from {server} for {name} in {attempts} x {timeout}s"
                    ) from None
    _, flags, qdcount, ancount = struct.unpack(">HHHH", reply[:8])
    offset = 12
    for _ in range(qdcount):
        while reply[offset] != 0:
            offset += reply[offset] + 1
        offset += 5
    addresses = []
    for _ in range(ancount):
        if reply[offset] & 0xC0 == 0xC0:
            offset += 2
        else:
            while reply[offset] != 0:
                offset += reply[offset] + 1
            offset += 1
        rtype, _cls, _ttl, length = struct.unpack(">HHIH", reply[offset : offset + 10])
        offset += 10
        if rtype == 1 and length == 4:
            addresses.append(socket.inet_ntoa(reply[offset : offset + 4]))
        offset += length
    return flags & 0xF, addresses


def _reply_to(sock: socket.socket, ident: int) -> bytes:
    """The reply with our id (a late answer to an earlier attempt carries the same id, and
    answers the same question)."""
    while True:
        reply, _ = sock.recvfrom(4096)
        if len(reply) >= 12 and struct.unpack(">H", reply[:2])[0] == ident:
            return reply


@pytest.fixture(scope="module")
def coredns(cluster: ClusterHandle) -> Iterator[dns.RunningDns]:
    if find_go() is None and not (cluster.bin_dir / dns.BINARY).exists():
        pytest.skip("no CoreDNS binary and no Go to build it (platform/build-coredns.sh)")
    dns.ensure_binary(ClusterSettings(), cluster.bin_dir)
    running = dns.start(
        cluster.local.layout,
        cluster.bin_dir,
        cluster.kubectl,
        cluster.server,
        upstreams=("127.0.0.1:9",),  # nothing answers: names outside the cluster fail fast
    )
    try:
        yield running
    finally:
        dns.stop(running.record)
        for kind, name, namespace in (
            ("endpointslice", f"{dns.SERVICE_NAME}-host", dns.NAMESPACE),
            ("service", dns.SERVICE_NAME, dns.NAMESPACE),
            ("clusterrolebinding", dns.CLUSTER_ROLE, None),
            ("clusterrole", dns.CLUSTER_ROLE, None),
        ):
            args = ["delete", kind, name, "--ignore-not-found"]
            cluster.kubectl(*args, *([f"--namespace={namespace}"] if namespace else []))


def test_coredns_answers_for_services_from_the_api_server(
    coredns: dns.RunningDns, cluster: ClusterHandle, namespace: str
) -> None:
    server = ("127.0.0.1", coredns.config.port)
    try:
        rcode, addresses = query_a(server, "kubernetes.default.svc.cluster.local")
    except TimeoutError as exc:
        log = cluster.local.layout.log(dns.PROCESS_NAME)
        pytest.fail(f"{exc}; CoreDNS's log ({log}):\n{log.read_text()[-3000:]}")
    assert rcode == 0
    assert addresses == ["10.0.0.1"]

    cluster.kubectl(
        "create", "service", "clusterip", "answered", "--tcp=80:8080", f"--namespace={namespace}"
    )
    ip = cluster.kubectl(
        "get", "service", "answered", f"--namespace={namespace}", "-o", "jsonpath={.spec.clusterIP}"
    ).stdout
    name = f"answered.{namespace}.svc.cluster.local"
    found = cluster.wait_for(
        lambda: query_a(server, name)[1] or None, timeout=30, what=f"{name} to resolve"
    )
    assert found == [ip]
    rcode, addresses = query_a(server, f"absent.{namespace}.svc.cluster.local")
    assert rcode == 3  # NXDOMAIN: the kubernetes plugin owns the zone
    assert addresses == []


def test_kube_dns_service_and_endpoint_slice_point_at_the_host(
    coredns: dns.RunningDns, cluster: ClusterHandle
) -> None:
    service = json.loads(
        cluster.kubectl("get", "service", "kube-dns", "-n", "kube-system", "-o", "json").stdout
    )
    assert service["spec"]["clusterIP"] == dns.DNS_SERVICE_IP == "10.0.0.10"
    assert "selector" not in service["spec"]
    slice_ = json.loads(
        cluster.kubectl(
            "get", "endpointslice", "kube-dns-host", "-n", "kube-system", "-o", "json"
        ).stdout
    )
    assert slice_["endpoints"][0]["addresses"] == [coredns.config.listen_address]
    assert {p["port"] for p in slice_["ports"]} == {coredns.config.port}
    # The EndpointSlice controller leaves a slice it does not manage alone.
    assert slice_["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == (
        dns.MANAGED_BY
    )


def test_readiness_probe_sees_coredns_ready(coredns: dns.RunningDns) -> None:
    assert dns.ready(coredns.config.ready_port)
    assert set(coredns.ports) == {dns.PORT_KEY, dns.READY_PORT_KEY, "coredns-health"}
