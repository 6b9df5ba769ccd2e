"""Cluster DNS: CoreDNS as a process of the local cluster, answering for Services.

A real node's pods resolve `<svc>.<ns>.svc.cluster.local` through the `kube-dns` Service,
whose ClusterIP the kubelet writes into every pod's resolv.conf (`clusterDNS`). CoreDNS
runs here as a host process, not as a pod, so the Service has no selector: an
EndpointSlice written by `start` points it at the host address CoreDNS listens on, and
kube-proxy translates the ClusterIP's port 53 to CoreDNS's own port. The host itself asks
CoreDNS on loopback.

The first half of the module builds things (Corefile, objects, command line) and does no
I/O; the second half starts and stops the process.

Size: the Corefile, Service, EndpointSlice and RBAC builders and the process runner of one
component; the builders split out once a second DNS backend (a CoreDNS pod) exists.
"""

from __future__ import annotations

import datetime as dt
import errno
import ipaddress
import json
import os
import socket
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from loopline.cluster import pki
from loopline.cluster import process as proc
from loopline.cluster.binaries import find_go
from loopline.cluster.commands import SERVICE_CIDR
from loopline.cluster.errors import BuildError, ClusterError, MissingBinariesError
from loopline.cluster.kubeconfig import CLUSTER_NAME, cert_kubeconfig
from loopline.cluster.kubectl import Kubectl
from loopline.cluster.layout import Layout
from loopline.cluster.settings import ClusterSettings
from loopline.cluster.state import ProcessRecord
from loopline.cluster.versions import PLATFORM_DIR

CLUSTER_DOMAIN = "cluster.local"
NAMESPACE = "kube-system"
SERVICE_NAME = "kube-dns"
# The tenth address of the service range, as kubeadm chooses: the kubelet's clusterDNS.
DNS_SERVICE_IP = str(ipaddress.ip_network(SERVICE_CIDR)[10])
# Who CoreDNS is to the API server: the common name of its client certificate.
USER = "loopline:coredns"
CLUSTER_ROLE = "loopline:coredns"
PROCESS_NAME = "coredns"
BINARY = "coredns"
BUILD_SCRIPT = PLATFORM_DIR / "build-coredns.sh"
PORT_KEY = "coredns"  # in ClusterState.ports: the DNS port
READY_PORT_KEY = "coredns-ready"
# Labels that keep the EndpointSlice controller's hands off our hand-written slice.
MANAGED_BY = "loopline-cluster"
DEFAULT_RESOLV_CONF = Path("/etc/resolv.conf")


@dataclass(frozen=True)
class DnsConfig:
    """Everything a Corefile depends on."""

    listen_address: str  # non-loopback IPv4 that pods reach (through kube-proxy)
    port: int  # the DNS port, UDP and TCP, on listen_address and on 127.0.0.1
    health_port: int  # /health on 127.0.0.1 (liveness)
    ready_port: int  # /ready on 127.0.0.1: 200 once the Service watch has synced
    kubeconfig: Path
    upstreams: tuple[str, ...]  # where names outside the cluster go
    cluster_domain: str = CLUSTER_DOMAIN

    @property
    def loopback(self) -> str:
        """Where the host asks: `127.0.0.1:PORT`."""
        return f"127.0.0.1:{self.port}"


# -- builders (pure) -----------------------------------------------------------------------


def upstream_servers(resolv_conf: str) -> tuple[str, ...]:
    """The `nameserver` addresses of a resolv.conf, in order.

    CoreDNS's forward plugin could read the file itself, but naming the servers in the
    Corefile makes the choice visible and lets a missing one fail at `start`, not at the
    first lookup a pod makes.
    """
    servers = []
    for line in resolv_conf.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                servers.append(str(ipaddress.ip_address(fields[1].split("%", 1)[0])))
            except ValueError:
                continue
    return tuple(servers)


def validate_listen_address(address: str) -> str:
    """The address pods reach CoreDNS at must be a unicast, non-loopback IPv4: the
    API server refuses loopback and link-local addresses in an EndpointSlice."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError as exc:
        raise ValueError(f"listen_address {address!r} is not an IP address") from exc
    if ip.version != 4 or ip.is_loopback or ip.is_link_local or ip.is_multicast:
        raise ValueError(
            f"listen_address {address} must be a non-loopback, non-link-local IPv4 address "
            "pods can reach (the host's primary address or the pod bridge's gateway)"
        )
    return str(ip)


def corefile(config: DnsConfig) -> str:
    """The Corefile: the cluster zone and reverse zones from the API server, everything
    else forwarded to the host's resolvers, cached.

    `fallthrough` on the reverse zones sends PTR queries for addresses that are not
    Services or pods upstream. `loop` stops CoreDNS when an upstream forwards back to it
    (a host whose resolv.conf names this very listener).
    """
    if not config.upstreams:
        raise ValueError(
            "no upstream DNS servers: the host's resolv.conf names no `nameserver`; pass "
            "upstreams explicitly"
        )
    validate_listen_address(config.listen_address)
    upstreams = " ".join(config.upstreams)
    return f"""\
.:{config.port} {{
    bind 127.0.0.1 {config.listen_address}
    errors
    health 127.0.0.1:{config.health_port}
    ready 127.0.0.1:{config.ready_port}
    kubernetes {config.cluster_domain} in-addr.arpa ip6.arpa {{
        kubeconfig {config.kubeconfig} {CLUSTER_NAME}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    forward . {upstreams}
    cache 30
    loop
    reload
}}
"""


def command(binary: Path, corefile_path: Path) -> list[str]:
    return [str(binary), "-conf", str(corefile_path)]


def service(ip: str = DNS_SERVICE_IP) -> dict[str, object]:
    """The `kube-dns` Service at a fixed ClusterIP (the kubelet's clusterDNS); no
    selector, since no pod backs it."""
    if ipaddress.ip_address(ip) not in ipaddress.ip_network(SERVICE_CIDR):
        raise ValueError(f"DNS service IP {ip} is outside the service range {SERVICE_CIDR}")
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": SERVICE_NAME,
            "namespace": NAMESPACE,
            "labels": {
                "k8s-app": "kube-dns",
                "kubernetes.io/name": "CoreDNS",
                "app.kubernetes.io/managed-by": MANAGED_BY,
            },
        },
        "spec": {
            "clusterIP": ip,
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        },
    }


def endpoint_slice(address: str, port: int) -> dict[str, object]:
    """Where the Service's traffic goes: CoreDNS on the host. The port names match the
    Service's, which is how kube-proxy pairs 53 with CoreDNS's port."""
    validate_listen_address(address)
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{SERVICE_NAME}-host",
            "namespace": NAMESPACE,
            "labels": {
                "kubernetes.io/service-name": SERVICE_NAME,
                "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": [
            {"name": "dns", "port": port, "protocol": "UDP"},
            {"name": "dns-tcp", "port": port, "protocol": "TCP"},
        ],
    }


def rbac() -> list[dict[str, object]]:
    """What the kubernetes plugin reads (list and watch only), bound to CoreDNS's user."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": CLUSTER_ROLE},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": CLUSTER_ROLE},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": CLUSTER_ROLE,
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}],
        },
    ]


def objects(address: str, port: int, ip: str = DNS_SERVICE_IP) -> list[dict[str, object]]:
    """Everything `start` applies, RBAC first so CoreDNS's first list succeeds."""
    return [*rbac(), service(ip), endpoint_slice(address, port)]


def client_certificate(
    ca_cert_pem: bytes, ca_key_pem: bytes, now: dt.datetime | None = None
) -> tuple[bytes, bytes]:
    """A client certificate for USER signed by the cluster CA (PEM cert, PEM key).

    The API server's static token file is read once at start, so a component added to a
    running cluster cannot get a token; a certificate from the CA it already trusts
    (`--client-ca-file`) needs no restart.
    """
    return pki.issue(ca_cert_pem, ca_key_pem, USER, now=now)


# -- runner (I/O) --------------------------------------------------------------------------


@dataclass(frozen=True)
class DnsPaths:
    """CoreDNS's files in the cluster's state directory."""

    root: Path

    @classmethod
    def of(cls, layout: Layout) -> DnsPaths:
        return cls(layout.root / "coredns")

    @property
    def corefile(self) -> Path:
        return self.root / "Corefile"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"


@dataclass(frozen=True)
class RunningDns:
    """A started CoreDNS: record it in the cluster state so `down` stops it."""

    record: ProcessRecord
    config: DnsConfig
    service_ip: str = DNS_SERVICE_IP

    @property
    def cluster_dns(self) -> str:
        """The kubelet's `clusterDNS` entry."""
        return self.service_ip

    @property
    def ports(self) -> dict[str, int]:
        """Entries for `ClusterState.ports`; readiness finds /ready by READY_PORT_KEY."""
        return {
            PORT_KEY: self.config.port,
            READY_PORT_KEY: self.config.ready_port,
            "coredns-health": self.config.health_port,
        }


def ensure_binary(settings: ClusterSettings, bin_dir: Path) -> Path:
    """CoreDNS in `bin_dir`, built (or found up to date) by platform/build-coredns.sh
    when Go is here; without Go, a binary already there is used as it is."""
    binary = bin_dir / BINARY
    if find_go() is not None and BUILD_SCRIPT.is_file():
        env = {**os.environ, "LOOPLINE_CACHE_DIR": str(settings.resolved_cache_dir())}
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT)], env=env, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise BuildError(
                f"platform/build-coredns.sh failed with exit code {result.returncode}:\n"
                f"{result.stderr[-4000:]}"
            )
    if not os.access(binary, os.X_OK):
        raise MissingBinariesError(
            f"{binary} not found: build CoreDNS with platform/build-coredns.sh (needs Go >= 1.26)"
        )
    return binary


def host_address() -> str:
    """The host's primary IPv4: the source address of its default route. A UDP `connect`
    sends nothing; it only asks the kernel which address it would use."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("203.0.113.1", 53))  # a documentation address
            address = str(sock.getsockname()[0])
        except OSError as exc:
            raise ClusterError(
                "cannot find the host's primary IPv4 address (no default route); pass "
                "listen_address explicitly"
            ) from exc
    if ipaddress.ip_address(address).is_loopback:
        raise ClusterError(
            "the host's only IPv4 address is loopback; pass listen_address explicitly"
        )
    return address


def free_dns_port(addresses: tuple[str, ...], attempts: int = 20) -> int:
    """A port free for both UDP and TCP on every address in `addresses`."""
    for _ in range(attempts):
        candidate = proc.free_ports(1)[0]
        held: list[socket.socket] = []
        try:
            for address in addresses:
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    sock = socket.socket(socket.AF_INET, kind)
                    held.append(sock)
                    sock.bind((address, candidate))
            return candidate
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
        finally:
            for sock in held:
                sock.close()
    raise ClusterError(f"found no port free for DNS on {', '.join(addresses)}")


def ready(ready_port: int, timeout: float = 2.0) -> bool:
    """CoreDNS's /ready on `ready_port`: 200 once every plugin (the kubernetes one: its
    first sync with the API server) is ready."""
    url = f"http://127.0.0.1:{ready_port}/ready"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as exc:
        exc.close()
        return False
    except (urllib.error.URLError, OSError):
        return False


def start(
    layout: Layout,
    bin_dir: Path,
    kubectl: Kubectl,
    server: str,
    *,
    listen_address: str | None = None,
    port: int = 0,
    upstreams: tuple[str, ...] | None = None,
    resolv_conf: Path = DEFAULT_RESOLV_CONF,
    service_ip: str = DNS_SERVICE_IP,
    timeout: float = 60.0,
) -> RunningDns:
    """Start CoreDNS for the cluster in `layout` and publish it as the `kube-dns` Service.

    `listen_address` defaults to the host's primary IPv4; `port` 0 picks one free on it and
    on loopback; `upstreams` default to `resolv_conf`'s nameservers. Returns once /ready
    answers, i.e. CoreDNS has listed Services from the API server.
    """
    binary = bin_dir / BINARY
    if not os.access(binary, os.X_OK):
        raise MissingBinariesError(
            f"{binary} not found: build CoreDNS with platform/build-coredns.sh (needs Go >= 1.26)"
        )
    address = validate_listen_address(listen_address or host_address())
    if upstreams is None:
        try:
            upstreams = upstream_servers(resolv_conf.read_text())
        except OSError as exc:
            raise ClusterError(
                f"cannot read {resolv_conf} for upstream DNS servers: {exc}"
            ) from exc
    health_port, ready_port = proc.free_ports(2)
    paths = DnsPaths.of(layout)
    config = DnsConfig(
        listen_address=address,
        port=port or free_dns_port(("127.0.0.1", address)),
        health_port=health_port,
        ready_port=ready_port,
        kubeconfig=paths.kubeconfig,
        upstreams=upstreams,
    )
    text = corefile(config)  # validates before anything is written or applied
    ca_pem = layout.ca_cert.read_bytes()
    cert_pem, key_pem = client_certificate(ca_pem, layout.ca_key.read_bytes())
    pki.write_private(
        paths.kubeconfig,
        yaml.safe_dump(
            cert_kubeconfig(server, ca_pem, cert_pem, key_pem, user=USER), sort_keys=False
        ).encode(),
    )
    paths.corefile.write_text(text)
    kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": objects(address, config.port, service_ip)}
        ),
    )
    record = proc.start(PROCESS_NAME, command(binary, paths.corefile), layout.log(PROCESS_NAME))
    try:
        proc.wait_until(record, lambda: ready(config.ready_port), timeout=timeout, what="ready")
    except BaseException:
        proc.stop(record)
        raise
    return RunningDns(record=record, config=config, service_ip=service_ip)


def stop(record: ProcessRecord) -> None:
    """Stop CoreDNS (the Service and its EndpointSlice stay: the next start rewrites them)."""
    proc.stop(record)
