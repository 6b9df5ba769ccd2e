"""The containerd node's configuration as rendered for these machines (pure builders)."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path

from loopline.cluster import commands, dns
from loopline.cluster.layout import Layout
from loopline.cluster.node import config
from loopline.cluster.node.layout import NodeLayout

LAYOUT = NodeLayout(Layout(Path("/state")))
PORTS = config.NodePorts(
    kubelet=10250, kubelet_healthz=10248, proxy_healthz=10256, proxy_metrics=10249
)


def _spec(registry_port: int | None = 5000) -> config.NodeSpec:
    return config.NodeSpec(LAYOUT, "192.0.2.10", PORTS, registry_port=registry_port)


def test_containerd_config_keeps_everything_under_the_state_dir() -> None:
    parsed = tomllib.loads(config.containerd_config(_spec()))
    assert parsed["version"] == 2
    assert parsed["root"] == "/state/node/containerd/root"
    assert parsed["state"] == "/state/node/containerd/state"
    assert parsed["grpc"]["address"] == "/state/node/containerd/containerd.sock"
    cri = parsed["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == config.PAUSE_IMAGE
    # Without CAP_SYS_RESOURCE the sandbox's -998 oom score is refused and runc fails.
    assert cri["restrict_oom_score_adj"] is True
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["options"]["SystemdCgroup"] is False
    assert cri["cni"]["conf_dir"] == "/state/node/cni/net.d"
    assert cri["cni"]["bin_dir"] == "/usr/lib/cni"
    assert cri["registry"]["config_path"] == "/state/node/containerd/certs.d"
    assert parsed["plugins"]["io.containerd.internal.v1.opt"]["path"].startswith("/state/")


def test_paths_with_quotes_are_escaped_in_toml() -> None:
    odd = NodeLayout(Layout(Path('/tmp/a "quoted" dir')))
    parsed = tomllib.loads(config.containerd_config(config.NodeSpec(odd, "192.0.2.10", PORTS)))
    assert parsed["root"] == '/tmp/a "quoted" dir/node/containerd/root'


def test_registry_hosts_pull_over_plain_http() -> None:
    host, text = config.registry_hosts(5000)
    assert host == "127.0.0.1:5000"
    parsed = tomllib.loads(text)
    assert parsed["server"] == "http://127.0.0.1:5000"
    assert "pull" in parsed["host"]["http://127.0.0.1:5000"]["capabilities"]


def test_cni_network_is_our_own_bridge_and_subnet() -> None:
    conflist = config.cni_conflist(_spec())
    bridge = conflist["plugins"][0]  # type: ignore[index]
    assert bridge["type"] == "bridge"
    assert bridge["bridge"] == "loopline0"
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.42.0.0/16"}]]
    assert bridge["ipam"]["dataDir"] == "/state/node/cni/networks"
    assert conflist["name"] == config.CNI_NETWORK


def test_pod_network_and_service_range_do_not_overlap() -> None:
    pods = ipaddress.ip_network(config.POD_CIDR)
    services = ipaddress.ip_network(commands.SERVICE_CIDR)
    assert not pods.overlaps(services)
    assert ipaddress.ip_address(config.DEFAULT_CLUSTER_DNS) in services
    assert config.DEFAULT_CLUSTER_DNS == dns.DNS_SERVICE_IP == "10.0.0.10"


def test_kubelet_config_for_cgroup_v1_without_systemd() -> None:
    kubelet = config.kubelet_config(_spec())
    assert kubelet["failCgroupV1"] is False
    assert kubelet["cgroupDriver"] == "cgroupfs"
    assert kubelet["clusterDNS"] == ["10.0.0.10"]
    assert kubelet["clusterDomain"] == "cluster.local"
    assert kubelet["address"] == "192.0.2.10"
    assert kubelet["port"] == 10250
    assert kubelet["readOnlyPort"] == 0
    assert kubelet["authentication"]["anonymous"] == {"enabled": False}  # type: ignore[index]
    assert kubelet["authorization"]["mode"] == "Webhook"  # type: ignore[index]
    assert kubelet["containerRuntimeEndpoint"] == "unix:///state/node/containerd/containerd.sock"


def test_kubelet_command_names_the_node_and_its_ip() -> None:
    argv = config.kubelet_command(Path("/bin/kubelet"), _spec())
    assert "--hostname-override=loopline-node" in argv
    assert "--node-ip=192.0.2.10" in argv
    assert "--root-dir=/state/node/kubelet/root" in argv


def test_kube_proxy_masquerades_traffic_from_outside_the_pod_network() -> None:
    proxy = config.kube_proxy_config(_spec())
    assert proxy["mode"] == "iptables"
    assert proxy["clusterCIDR"] == config.POD_CIDR
    assert proxy["hostnameOverride"] == config.NODE_NAME
    assert proxy["conntrack"] == {"maxPerCore": 0, "min": 0}
    assert proxy["healthzBindAddress"] == "127.0.0.1:10256"


def test_apiserver_advertises_the_node_ip_and_dials_kubelets_with_a_certificate() -> None:
    argv = [
        "/bin/kube-apiserver",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        "--endpoint-reconciler-type=none",
        "--secure-port=6443",
    ]
    changed = config.apiserver_for_real_node(argv, "192.0.2.10", LAYOUT)
    assert changed[0] == "/bin/kube-apiserver"
    assert "--bind-address=0.0.0.0" in changed
    assert "--advertise-address=192.0.2.10" in changed
    assert "--endpoint-reconciler-type=lease" in changed
    assert "--secure-port=6443" in changed
    for flag in ("--bind-address", "--advertise-address", "--endpoint-reconciler-type"):
        assert sum(a.startswith(flag + "=") for a in changed) == 1
    assert "--kubelet-client-certificate=/state/node/kubelet/apiserver-client.crt" in changed
    assert f"--kubelet-certificate-authority={LAYOUT.cluster.ca_cert}" in changed


def test_a_containerd_cluster_starts_registry_first_and_dns_after_the_apiserver() -> None:
    names = commands.components(0, "containerd")
    assert names[0] == "registry"
    assert names.index("coredns") == names.index("kube-apiserver") + 1
    assert names[-3:] == ("containerd", "kubelet", "kube-proxy")
    assert commands.components(0) == ("etcd", "kube-apiserver")  # kwok unchanged
