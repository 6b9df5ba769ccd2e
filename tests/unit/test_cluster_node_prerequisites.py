"""What a containerd node needs, and the messages that say how to get it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loopline.cluster.node import prerequisites

ROUTES = """\
default via 192.0.2.1 dev eth0
10.88.0.0/16 dev cni-podman0 proto kernel scope link src 10.88.0.1
10.42.0.0/16 dev loopline0 proto kernel scope link src 10.42.0.1
10.40.0.0/14 dev vpn0 scope link
192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.10
"""


def test_only_other_devices_overlapping_the_pod_network_are_reported() -> None:
    clashes = prerequisites.overlapping_routes(ROUTES)
    assert clashes == ["10.40.0.0/14 dev vpn0 scope link"]


def test_podman_default_network_does_not_clash() -> None:
    assert prerequisites.overlapping_routes("10.88.0.0/16 dev cni-podman0 scope link\n") == []


def test_missing_commands_are_named_with_their_debian_package(tmp_path: Path) -> None:
    missing = prerequisites.missing_packages(path=str(tmp_path))  # an empty PATH
    assert missing["containerd"] == ["containerd", "containerd-shim-runc-v2", "ctr"]
    assert missing["runc"] == ["runc"]
    assert "iptables" in missing["iptables"]
    assert missing["conntrack"] == ["conntrack"]


def test_search_path_adds_the_sbin_directories(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/home/me/bin:/usr/bin")
    parts = prerequisites.search_path().split(":")
    assert parts[:2] == ["/home/me/bin", "/usr/bin"]
    assert "/usr/sbin" in parts
    assert "/sbin" in parts
    assert len(parts) == len(set(parts))


def test_check_names_every_missing_piece(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty bin dir and (when not root) the missing privilege are both reported, in
    one message that says how to get each."""
    with pytest.raises(prerequisites.NodePrerequisiteError) as caught:
        prerequisites.check(tmp_path)
    message = str(caught.value)
    assert message.startswith("cannot start a containerd node:")
    assert f"{tmp_path} lacks kubelet, kube-proxy, pause" in message
    assert "platform/build-node.sh" in message
    if os.geteuid() != 0:
        assert "run as root" in message


@pytest.mark.parametrize(
    ("argv", "ours"),
    [
        (["/root/.cache/loopline/k8s-v1.34.4/bin/kubelet", "--config=/s/node/kubelet/c"], True),
        (["kube-proxy", "--config=x"], True),
        (["/usr/bin/containerd", "--config=/tmp/x/state/node/containerd/config.toml"], True),
        (["/usr/bin/containerd", "--config", "/tmp/x/state/node/containerd/config.toml"], True),
        (["/usr/bin/containerd"], False),  # the machine's own containerd (podman's, docker's)
        (["/usr/bin/containerd", "--config=/etc/containerd/config.toml"], False),
        (["containerd-shim-runc-v2", "-address", "/s/node/containerd/containerd.sock"], False),
        (["python", "kubelet"], False),
        ([], False),
    ],
)
def test_running_node_components_are_told_from_the_machines_own(
    argv: list[str], ours: bool
) -> None:
    """A shim alone does not make a node run: the shims of a killed node are what the
    next `up` removes."""
    assert prerequisites.is_node_component(argv) is ours
