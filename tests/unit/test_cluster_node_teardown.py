"""Teardown planning: which iptables rules and chains belong to the containerd node (pure),
and the mountinfo parsing `down` relies on."""

from __future__ import annotations

from pathlib import Path

from loopline.cluster.layout import Layout
from loopline.cluster.node import teardown
from loopline.cluster.node.layout import NodeLayout

NAT = """\
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:CNI-8a1b2c3d4e5f60718293a4b5 - [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:CNI-HOSTPORT-MASQ - [0:0]
:NETAVARK-1D8721804F16F - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -s 10.42.0.5/32 -m comment --comment "name: \\"loopline\\" id: \\"abc\\"" -j CNI-8a1b2c3d4e5f60718293a4b5
-A POSTROUTING -s 10.88.0.0/16 -j NETAVARK-1D8721804F16F
-A CNI-8a1b2c3d4e5f60718293a4b5 -d 10.42.0.0/16 -m comment --comment "name: \\"loopline\\" id: \\"abc\\"" -j ACCEPT
-A KUBE-POSTROUTING -j MASQUERADE
-A NETAVARK-1D8721804F16F -j MASQUERADE
COMMIT
"""

FILTER = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
:CNI-FORWARD - [0:0]
-A INPUT -j KUBE-FIREWALL
-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD
COMMIT
"""


def test_plan_takes_kube_chains_and_rules_naming_our_network_only() -> None:
    plan = teardown.plan_iptables({"nat": NAT, "filter": FILTER, "mangle": ""}, set())
    assert plan.chains["nat"] == [
        "CNI-8a1b2c3d4e5f60718293a4b5",
        "CNI-HOSTPORT-DNAT",
        "CNI-HOSTPORT-MASQ",
        "KUBE-POSTROUTING",
        "KUBE-SERVICES",
    ]
    deleted = [" ".join(rule) for rule in plan.rules["nat"]]
    assert "-D PREROUTING -m comment --comment kubernetes service portals -j KUBE-SERVICES" in (
        deleted
    )
    assert any("10.42.0.5/32" in rule for rule in deleted)
    # Someone else's (podman's netavark) rules and chains stay.
    assert not any("NETAVARK" in rule for rule in deleted)
    assert "NETAVARK-1D8721804F16F" not in plan.chains["nat"]
    # Rules inside our chains go with the chain's flush, not one by one.
    assert not any(rule.startswith("-D KUBE-POSTROUTING") for rule in deleted)
    # The CNI firewall plugin's chains are not ours (we do not run that plugin).
    assert plan.chains["filter"] == ["KUBE-FIREWALL"]
    assert [" ".join(r) for r in plan.rules["filter"]] == ["-D INPUT -j KUBE-FIREWALL"]
    assert plan.chains["mangle"] == []


def test_shared_hostport_chains_that_predate_up_are_kept() -> None:
    plan = teardown.plan_iptables({"nat": NAT}, {"CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ"})
    assert "CNI-HOSTPORT-DNAT" not in plan.chains["nat"]
    assert "CNI-HOSTPORT-MASQ" not in plan.chains["nat"]


def test_shared_hostport_chain_still_used_by_others_is_kept() -> None:
    used = NAT.replace(
        "COMMIT", "-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment other -j DNAT\nCOMMIT"
    )
    plan = teardown.plan_iptables({"nat": used}, set())
    assert "CNI-HOSTPORT-DNAT" not in plan.chains["nat"]
    assert "CNI-HOSTPORT-MASQ" in plan.chains["nat"]


def test_nothing_of_ours_means_an_empty_plan() -> None:
    plain = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j ACCEPT\nCOMMIT\n"
    plan = teardown.plan_iptables({"nat": plain}, set())
    assert plan.rules == {"nat": []}
    assert plan.chains == {"nat": []}


def test_mountinfo_escapes_are_undone() -> None:
    assert teardown._unescape("/tmp/a\\040b\\134c") == "/tmp/a b\\c"


def test_a_node_that_never_started_has_nothing_to_find(tmp_path: Path) -> None:
    """No processes, mounts or records of a node that never started are found."""
    layout = NodeLayout(Layout(tmp_path / "state"))
    assert teardown.load_record(layout) == teardown.Record()
    assert teardown.node_processes(layout.containerd_socket) == []
    assert teardown.mounts_under(layout.root) == []


def test_a_crashed_nodes_state_dir_is_found_from_its_mounts_and_shims() -> None:
    roots = teardown.node_roots(
        [
            "/tmp/a/state/node/kubelet/root",
            "/tmp/a/state/node/kubelet/root/pods/uid/volumes/kubernetes.io~projected/x",
            "/tmp/b/state/node/containerd/state/io.containerd.grpc.v1.cri/sandboxes/id/shm",
            "/tmp/c/state/node/containerd/containerd.sock",  # a shim's -address
            "/var/lib/kubelet/pods/uid/volumes/x",  # a real kubelet's: no state dir of ours
            "/srv/node/kubelet/rootfs",  # only a prefix of the name
            "/node/containerd/x",  # nothing above the node directory
            "/proc",
        ]
    )
    assert roots == [Path("/tmp/a/state"), Path("/tmp/b/state"), Path("/tmp/c/state")]
