"""Command lines of the control-plane processes (pure: no I/O, no processes).

Kept apart from the code that starts processes so the flags can be read, reviewed and
unit-tested on their own. Every listener is bound to 127.0.0.1: the cluster is for this
machine only, and etcd, which bypasses the apiserver's RBAC, needs a client certificate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loopline.cluster import storage
from loopline.cluster.layout import Layout

# The virtual service network (never routed: there is no kube-proxy) and its first address,
# which the apiserver claims for the `kubernetes` Service and must be in the serving cert.
SERVICE_CIDR = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"
# Pod IPs kwok hands out to fake pods; apart from the service range to avoid confusion.
POD_CIDR = "10.244.0.1/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# The annotation kwok selects its fake nodes by (kwok's documented convention).
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_VALUE = "fake"
KWOK_NODE_LEASE_SECONDS = 40  # renewed every 10 s; see kwok_command

# Start order; `down` stops in reverse so clients go before the servers they talk to.
CORE_COMPONENTS = ("etcd", "kube-apiserver")
NODE_COMPONENTS = ("kube-controller-manager", "kube-scheduler", "kwok")


@dataclass(frozen=True)
class Ports:
    """The loopback ports of one cluster, chosen at `up` and recorded in the state file."""

    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver}"


# A containerd cluster: the registry first (the node's containerd config names its port),
# CoreDNS once the API server serves (it lists Services), then the scheduler and
# controllers, then the real node.
CONTAINERD_COMPONENTS = (
    "registry",
    *CORE_COMPONENTS,
    "coredns",
    "kube-controller-manager",
    "kube-scheduler",
    "containerd",
    "kubelet",
    "kube-proxy",
)


def components(nodes: int, runtime: str = "kwok") -> tuple[str, ...]:
    """The processes a cluster runs, in start order: `nodes` fake nodes for kwok, one real
    node for containerd."""
    if runtime == "containerd":
        return CONTAINERD_COMPONENTS
    return CORE_COMPONENTS + (NODE_COMPONENTS if nodes > 0 else ())


def etcd_client_url(ports: Ports) -> str:
    return f"https://127.0.0.1:{ports.etcd_client}"


def etcd_command(binary: Path, layout: Layout, ports: Ports, *, unsafe_no_fsync: bool) -> list[str]:
    """A single-member etcd on loopback that talks TLS only and requires a client
    certificate from its own CA, on the client and on the peer listener.

    Plain HTTP on loopback let any local user read and write every object (Secrets
    included) without going through the apiserver's authentication and RBAC.
    """
    client = etcd_client_url(ports)
    peer = f"https://127.0.0.1:{ports.etcd_peer}"
    argv = [
        str(binary),
        "--name=loopline",
        f"--data-dir={layout.etcd_data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--cert-file={layout.etcd_cert}",
        f"--key-file={layout.etcd_key}",
        "--client-cert-auth=true",
        f"--trusted-ca-file={layout.etcd_ca_cert}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--peer-cert-file={layout.etcd_cert}",
        f"--peer-key-file={layout.etcd_key}",
        "--peer-client-cert-auth=true",
        f"--peer-trusted-ca-file={layout.etcd_ca_cert}",
        f"--initial-cluster=loopline={peer}",
        # Read only on the first start; a restart on an existing data dir rejoins it.
        "--initial-cluster-state=new",
        "--log-level=warn",
    ]
    if unsafe_no_fsync:
        argv.append("--unsafe-no-fsync")
    return argv


def apiserver_command(
    binary: Path, layout: Layout, ports: Ports, *, extra_args: list[str] | None = None
) -> list[str]:
    """kube-apiserver with token authentication and Node,RBAC authorization.

    RBAC is on (not AlwaysAllow) so the chart's Roles and the operators' permissions are
    tested for real. `--endpoint-reconciler-type=none`: the apiserver refuses to publish a
    loopback address as the `kubernetes` Service endpoint and would log that forever.
    `--shutdown-watch-termination-grace-period`: without it, SIGTERM waits for open watches
    (the controller-manager's, kwok's, an operator's) to end on their own, which measured
    20+ s; with it, watches are closed after 2 s and clients resume on the next server.
    """
    return [
        str(binary),
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={ports.apiserver}",
        f"--etcd-servers={etcd_client_url(ports)}",
        f"--etcd-cafile={layout.etcd_ca_cert}",
        f"--etcd-certfile={layout.etcd_client_cert}",
        f"--etcd-keyfile={layout.etcd_client_key}",
        f"--tls-cert-file={layout.serving_cert}",
        f"--tls-private-key-file={layout.serving_key}",
        f"--client-ca-file={layout.ca_cert}",
        f"--token-auth-file={layout.token_file}",
        "--authorization-mode=Node,RBAC",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={layout.sa_pub}",
        f"--service-account-signing-key-file={layout.sa_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--endpoint-reconciler-type=none",
        "--allow-privileged=true",
        "--shutdown-watch-termination-grace-period=2s",
        "--profiling=false",
        f"--cert-dir={layout.pki_dir}",
        *(extra_args or []),
    ]


def controller_manager_command(binary: Path, layout: Layout, ports: Ports) -> list[str]:
    """kube-controller-manager: Deployments, ReplicaSets, namespaces, GC, service accounts.

    `--use-service-account-credentials` gives each controller its own service account, the
    way real clusters run, so the bootstrap RBAC roles are exercised.
    """
    kubeconfig = layout.component_kubeconfig("kube-controller-manager")
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.controller_manager}",
        "--leader-elect=false",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={layout.sa_key}",
        f"--root-ca-file={layout.ca_cert}",
        f"--cluster-signing-cert-file={layout.ca_cert}",
        f"--cluster-signing-key-file={layout.ca_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        storage.CONTROLLER_MANAGER_FLAG,  # claims bind on the local cluster (cluster.storage)
        "--profiling=false",
    ]


def scheduler_command(binary: Path, layout: Layout, ports: Ports) -> list[str]:
    """kube-scheduler: binds pods to the fake nodes."""
    kubeconfig = layout.component_kubeconfig("kube-scheduler")
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.scheduler}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def kwok_command(binary: Path, layout: Layout, ports: Ports) -> list[str]:
    """kwok: plays kubelet for the annotated fake nodes and the pods bound to them.

    `--config` points into the state directory so a user's ~/.kwok configuration never
    changes how the test cluster behaves.

    `--node-lease-duration-seconds`: without it kwok keeps no node Lease and only rewrites
    the node's Ready heartbeat every 20-45 s (55 s seen on a busy machine), past the
    controller-manager's 50 s grace. The node then flapped NotReady once a minute, the node
    controller marked every pod on it not ready, kwok never set them ready again, and a
    `helm install --wait` timed out (CI, 2026-11-30). With a Lease kwok renews it every
    quarter of its duration, as a kubelet does.
    """
    return [
        str(binary),
        f"--config={layout.kwok_config}",
        f"--node-lease-duration-seconds={KWOK_NODE_LEASE_SECONDS}",
        f"--kubeconfig={layout.component_kubeconfig('kwok')}",
        f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}={KWOK_NODE_VALUE}",
        f"--cidr={POD_CIDR}",
        "--node-ip=127.0.0.1",
        f"--server-address=127.0.0.1:{ports.kwok}",
    ]


def fake_node(name: str) -> dict[str, object]:
    """A Node object kwok will manage: generous capacity, no taints, so any pod fits."""
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                KWOK_NODE_ANNOTATION: KWOK_NODE_VALUE,
                "node.alpha.kubernetes.io/ttl": "0",
            },
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": name,
                "type": "kwok",
            },
        },
        "spec": {},
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
                "kubeProxyVersion": "fake",
                "containerRuntimeVersion": "kwok",
                "kernelVersion": "fake",
                "osImage": "kwok",
                "machineID": name,
                "systemUUID": name,
                "bootID": name,
            },
            "phase": "Running",
        },
    }


def fake_node_names(count: int) -> list[str]:
    return [f"kwok-node-{i}" for i in range(count)]
