"""Command lines of the control-plane components."""

from __future__ import annotations

from pathlib import Path

from loopline.cluster import commands
from loopline.cluster.layout import Layout

LAYOUT = Layout(Path("/state"))
PORTS = commands.Ports(
    etcd_client=2379,
    etcd_peer=2380,
    apiserver=6443,
    controller_manager=10257,
    scheduler=10259,
    kwok=10247,
)


def _flags(argv: list[str]) -> dict[str, str]:
    flags = {}
    for arg in argv[1:]:
        key, _, value = arg.partition("=")
        flags[key] = value
    return flags


def test_components_by_node_count() -> None:
    assert commands.components(0) == ("etcd", "kube-apiserver")
    assert commands.components(2) == (
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
    )


def test_apiserver_uses_rbac_tokens_and_our_pki_on_loopback() -> None:
    argv = commands.apiserver_command(Path("/bin/kube-apiserver"), LAYOUT, PORTS)
    flags = _flags(argv)
    assert argv[0] == "/bin/kube-apiserver"
    assert flags["--authorization-mode"] == "Node,RBAC"
    assert flags["--bind-address"] == "127.0.0.1"
    assert flags["--secure-port"] == "6443"
    assert flags["--etcd-servers"] == "https://127.0.0.1:2379"
    assert flags["--etcd-cafile"] == "/state/pki/etcd-ca.crt"
    assert flags["--etcd-certfile"] == "/state/pki/apiserver-etcd-client.crt"
    assert flags["--etcd-keyfile"] == "/state/pki/apiserver-etcd-client.key"
    assert flags["--token-auth-file"] == "/state/pki/tokens.csv"
    assert flags["--service-account-signing-key-file"] == "/state/pki/sa.key"
    assert flags["--service-account-key-file"] == "/state/pki/sa.pub"
    assert flags["--tls-cert-file"] == "/state/pki/apiserver.crt"


def test_apiserver_extra_args_come_last_so_they_win() -> None:
    argv = commands.apiserver_command(Path("kube-apiserver"), LAYOUT, PORTS, extra_args=["--v=4"])
    assert argv[-1] == "--v=4"


def test_etcd_fsync_switch_and_loopback_urls() -> None:
    fast = commands.etcd_command(Path("etcd"), LAYOUT, PORTS, unsafe_no_fsync=True)
    safe = commands.etcd_command(Path("etcd"), LAYOUT, PORTS, unsafe_no_fsync=False)
    assert "--unsafe-no-fsync" in fast
    assert "--unsafe-no-fsync" not in safe
    flags = _flags(safe)
    assert flags["--listen-client-urls"] == "https://127.0.0.1:2379"
    assert flags["--initial-cluster"] == "loopline=https://127.0.0.1:2380"
    assert flags["--data-dir"] == "/state/etcd"


def test_etcd_requires_client_certificates_from_its_own_ca_on_both_listeners() -> None:
    argv = commands.etcd_command(Path("etcd"), LAYOUT, PORTS, unsafe_no_fsync=True)
    flags = _flags(argv)
    assert flags["--client-cert-auth"] == "true"
    assert flags["--peer-client-cert-auth"] == "true"
    assert flags["--trusted-ca-file"] == flags["--peer-trusted-ca-file"] == "/state/pki/etcd-ca.crt"
    assert flags["--cert-file"] == "/state/pki/etcd.crt"
    assert flags["--key-file"] == "/state/pki/etcd.key"
    urls = [v for k, v in flags.items() if k.endswith("-urls") or k == "--initial-cluster"]
    assert len(urls) == 5
    assert [u for u in urls if "http://" in u] == []


def test_node_components_use_their_own_kubeconfigs_and_no_leader_election() -> None:
    for build, name in (
        (commands.controller_manager_command, "kube-controller-manager"),
        (commands.scheduler_command, "kube-scheduler"),
    ):
        flags = _flags(build(Path(name), LAYOUT, PORTS))
        assert flags["--kubeconfig"] == f"/state/kubeconfigs/{name}.yaml"
        assert flags["--leader-elect"] == "false"
        assert flags["--bind-address"] == "127.0.0.1"


def test_kwok_selects_exactly_the_nodes_we_create() -> None:
    flags = _flags(commands.kwok_command(Path("kwok"), LAYOUT, PORTS))
    key, _, value = flags["--manage-nodes-with-annotation-selector"].partition("=")
    node = commands.fake_node("kwok-node-0")
    metadata = node["metadata"]
    assert isinstance(metadata, dict)
    assert metadata["annotations"][key] == value
    assert flags["--config"] == "/state/kwok.yaml"
    # A node Lease renewed every 10 s keeps the fake node Ready (see kwok_command).
    assert flags["--node-lease-duration-seconds"] == "40"


def test_fake_nodes_have_capacity_and_no_taints() -> None:
    node = commands.fake_node("n")
    assert node["spec"] == {}
    status = node["status"]
    assert isinstance(status, dict)
    assert int(status["allocatable"]["pods"]) > 0
    assert commands.fake_node_names(2) == ["kwok-node-0", "kwok-node-1"]
