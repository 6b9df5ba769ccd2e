"""Configuration of the containerd node's components (pure: no I/O, no processes).

Every setting that these machines need and that differs from upstream's defaults is here,
with the reason, so it can be reviewed and unit-tested apart from the code that runs it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from loopline.cluster.node.layout import NodeLayout

NODE_NAME = "loopline-node"
# The pod network: one bridge of our own (never the `cni0` other tools may use) with
# host-local addresses; kube-proxy's --cluster-cidr must match so it masquerades
# traffic from outside the pod network to Services. Not 10.88.0.0/16, the usual CNI
# example: podman's default network (cni-podman0) has it, and two bridges with one
# subnet leave pods unreachable ("no route to host") as soon as podman has run.
POD_CIDR = "10.42.0.0/16"
BRIDGE = "loopline0"
CNI_NETWORK = "loopline"
CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
CLUSTER_DOMAIN = "cluster.local"
# The address CoreDNS's Service claims in the service range (the dns module fills it).
DEFAULT_CLUSTER_DNS = "10.0.0.10"
# The sandbox image is packed from platform/node/pause and imported at `up`: nothing
# can be pulled from public registries on these machines.
PAUSE_IMAGE = "loopline.local/pause:3.10"
CRI_NAMESPACE = "k8s.io"


@dataclass(frozen=True)
class NodePorts:
    """Ports of the node's own listeners (the kubelet's is on the node IP)."""

    kubelet: int
    kubelet_healthz: int
    proxy_healthz: int
    proxy_metrics: int


@dataclass(frozen=True)
class NodeSpec:
    """Everything a node's configuration depends on that is chosen at `up`."""

    layout: NodeLayout
    node_ip: str
    ports: NodePorts
    cluster_dns: str = DEFAULT_CLUSTER_DNS
    registry_port: int | None = None  # a plain-http registry on 127.0.0.1


def _toml_str(value: str | Path) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def containerd_config(spec: NodeSpec) -> str:
    """containerd 1.6's config (version 2) with root, state and socket of our own.

    - `restrict_oom_score_adj`: this sandbox lacks CAP_SYS_RESOURCE, so the sandbox's
      oom_score_adj of -998 is refused and runc fails with "can't get final child's PID
      from pipe: EOF"; restricted, containerd never asks for less than its own score.
    - `SystemdCgroup = false`: there is no systemd; the kubelet uses cgroupfs too.
    - `config_path`: per-registry hosts.toml files, so `127.0.0.1:<port>/...` is pulled
      over plain http like any registry on a real cluster.
    - The opt plugin's path: its default (/opt/containerd) is outside the state dir.
    """
    layout = spec.layout
    return f"""version = 2
root = {_toml_str(layout.containerd_root)}
state = {_toml_str(layout.containerd_state)}
oom_score = 0

[grpc]
  address = {_toml_str(layout.containerd_socket)}

[ttrpc]
  address = ""

[debug]
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = {_toml_str(layout.containerd_root / "opt")}
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = {_toml_str(PAUSE_IMAGE)}
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    enable_selinux = false
    disable_apparmor = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = {_toml_str(CNI_BIN_DIR)}
      conf_dir = {_toml_str(layout.cni_conf_dir)}
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = {_toml_str(layout.registry_hosts_dir)}
"""


def registry_hosts(port: int) -> tuple[str, str]:
    """(directory name, hosts.toml) that let containerd pull `127.0.0.1:<port>/...` over
    plain http: the local registry serves no TLS."""
    host = f"127.0.0.1:{port}"
    toml = (
        f'server = "http://{host}"\n\n'
        f'[host."http://{host}"]\n'
        '  capabilities = ["pull", "resolve", "push"]\n'
        "  skip_verify = true\n"
    )
    return host, toml


def cni_conflist(spec: NodeSpec) -> dict[str, object]:
    """The pod network: a bridge of our own name, host-local addresses (leases in the
    state dir), masquerade for traffic leaving the node, portmap for hostPorts. The
    loopback plugin is run by containerd itself for every sandbox."""
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(spec.layout.cni_ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(spec: NodeSpec) -> dict[str, object]:
    """The KubeletConfiguration for these machines.

    - `failCgroupV1: false`: the hosts run cgroup v1 (hybrid), which kubelet 1.34 refuses
      by default; `cgroupDriver: cgroupfs` because there is no systemd.
    - `failSwapOn: false`: harmless without swap, and lets the node start on a laptop with it.
    - Authentication by client certificate (the apiserver's, from our CA) and webhook
      (bearer tokens), authorization by webhook: `kubectl logs/exec/port-forward` go
      through the apiserver, which the kubelet asks whether the caller may.
    - Eviction thresholds relaxed to almost nothing: a developer machine's disk at 90% is
      normal and must not evict the pods under test; image GC off (the pause image and the
      test images were imported, not pulled, and could not be pulled back).
    """
    layout = spec.layout
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": spec.node_ip,
        "port": spec.ports.kubelet,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": spec.ports.kubelet_healthz,
        "tlsCertFile": str(layout.kubelet_serving_cert),
        "tlsPrivateKeyFile": str(layout.kubelet_serving_key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True, "cacheTTL": "10s"},
            "x509": {"clientCAFile": str(layout.cluster.ca_cert)},
        },
        "authorization": {"mode": "Webhook", "webhook": {"cacheAuthorizedTTL": "10s"}},
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [spec.cluster_dns],
        "evictionHard": {
            "memory.available": "20Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "resolvConf": "/etc/resolv.conf",
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": True,
        "localStorageCapacityIsolation": True,
        "shutdownGracePeriod": "0s",
        "maxPods": 110,
    }


def kubelet_command(binary: Path, spec: NodeSpec) -> list[str]:
    """The kubelet. `--node-ip`: the apiserver dials the node by its InternalIP (it is
    started with `--kubelet-preferred-address-types=InternalIP`), and pods see the same
    address; `--hostname-override` keeps the node's name fixed whatever the host is called."""
    layout = spec.layout
    return [
        str(binary),
        f"--config={layout.kubelet_config}",
        f"--kubeconfig={layout.kubelet_kubeconfig}",
        f"--root-dir={layout.kubelet_root}",
        f"--node-ip={spec.node_ip}",
        f"--hostname-override={NODE_NAME}",
        f"--cert-dir={layout.kubelet_dir / 'pki'}",
        "--v=1",
    ]


def kube_proxy_config(spec: NodeSpec) -> dict[str, object]:
    """kube-proxy in iptables mode. `conntrack.maxPerCore: 0` leaves the host's conntrack
    table size alone (this sandbox may not write the sysctl); `clusterCIDR` is the pod
    network so traffic from the host to a Service is masqueraded."""
    layout = spec.layout
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "hostnameOverride": NODE_NAME,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{spec.ports.proxy_healthz}",
        "metricsBindAddress": f"127.0.0.1:{spec.ports.proxy_metrics}",
        "clientConnection": {"kubeconfig": str(layout.proxy_kubeconfig)},
        "conntrack": {"maxPerCore": 0, "min": 0},
        # NodePorts on the node IP only, not on every address of the host.
        "nodePortAddresses": ["primary"],
        "iptables": {"masqueradeAll": False, "syncPeriod": "10s", "minSyncPeriod": "0s"},
    }


def kube_proxy_command(binary: Path, spec: NodeSpec) -> list[str]:
    return [str(binary), f"--config={spec.layout.proxy_config}", "--v=1"]


def containerd_command(binary: Path, spec: NodeSpec) -> list[str]:
    return [str(binary), f"--config={spec.layout.containerd_config}"]


_REPLACED_APISERVER_FLAGS = (
    "--bind-address",
    "--advertise-address",
    "--endpoint-reconciler-type",
)


def apiserver_for_real_node(argv: list[str], node_ip: str, layout: NodeLayout) -> list[str]:
    """The control plane's apiserver command, changed for a node that runs real pods.

    Pods reach the apiserver through the `kubernetes` Service, whose endpoint is the
    advertised address: 127.0.0.1 would be the pod itself. So the apiserver advertises
    the node IP and binds all addresses (127.0.0.1 keeps working for the host's
    kubeconfig), and publishes its endpoint again (the lease reconciler). It dials
    kubelets by InternalIP with a client certificate the kubelet trusts, and checks the
    kubelet's serving certificate against the cluster CA.
    """
    kept = [a for a in argv if a.split("=", 1)[0] not in _REPLACED_APISERVER_FLAGS]
    return [
        *kept[:1],
        "--bind-address=0.0.0.0",
        f"--advertise-address={node_ip}",
        "--endpoint-reconciler-type=lease",
        "--kubelet-preferred-address-types=InternalIP",
        f"--kubelet-client-certificate={layout.apiserver_kubelet_client_cert}",
        f"--kubelet-client-key={layout.apiserver_kubelet_client_key}",
        f"--kubelet-certificate-authority={layout.cluster.ca_cert}",
        *kept[1:],
    ]
