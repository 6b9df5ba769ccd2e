"""What a containerd node needs on this machine, and the error that says how to get it."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from pathlib import Path

from loopline.cluster.errors import ClusterError
from loopline.cluster.node import teardown
from loopline.cluster.node.config import BRIDGE, CNI_BIN_DIR, POD_CIDR
from loopline.cluster.node.layout import NODE_DIR

# (command or file, Debian package that ships it)
_COMMANDS = (
    ("containerd", "containerd"),
    ("containerd-shim-runc-v2", "containerd"),
    ("ctr", "containerd"),
    ("runc", "runc"),
    ("iptables", "iptables"),
    ("iptables-save", "iptables"),
    ("conntrack", "conntrack"),
    ("ip", "iproute2"),
)
_CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
NODE_BINARIES = ("kubelet", "kube-proxy", "pause")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class NodePrerequisiteError(ClusterError):
    """Something the containerd node needs is missing; the message says how to install it."""


def search_path() -> str:
    """PATH for the node's processes: the system's sbin directories (iptables, ip) are
    often missing from a user's PATH."""
    current = os.environ.get("PATH", "")
    return ":".join(p for p in dict.fromkeys([*current.split(":"), *PATH.split(":")]) if p)


def missing_packages(path: str | None = None) -> dict[str, list[str]]:
    """Debian package -> the commands/plugins of it that are missing."""
    path = path or search_path()
    missing: dict[str, list[str]] = {}
    for command, package in _COMMANDS:
        if shutil.which(command, path=path) is None:
            missing.setdefault(package, []).append(command)
    for plugin in _CNI_PLUGINS:
        if not os.access(CNI_BIN_DIR / plugin, os.X_OK):
            missing.setdefault("containernetworking-plugins", []).append(str(CNI_BIN_DIR / plugin))
    return missing


def overlapping_routes(routes: str, cidr: str = POD_CIDR, own_device: str = BRIDGE) -> list[str]:
    """Routes (lines of `ip -4 route`) of other devices whose network overlaps `cidr`."""
    pod_network = ipaddress.ip_network(cidr)
    found = []
    for line in routes.splitlines():
        words = line.split()
        if not words or words[0] == "default" or "/" not in words[0]:
            continue
        device = words[words.index("dev") + 1] if "dev" in words else ""
        if device != own_device and ipaddress.ip_network(words[0]).overlaps(pod_network):
            found.append(line.strip())
    return found


def is_node_component(argv: list[str]) -> bool:
    """Whether a command line is a running node's: a kubelet or kube-proxy (ours or anyone
    else's: either would fight over the same iptables chains), or a containerd with a
    Loopline node's configuration (pure)."""
    if not argv:
        return False
    name = Path(argv[0]).name
    if name in ("kubelet", "kube-proxy"):
        return True
    config = f"/{NODE_DIR}/containerd/config.toml"
    return name == "containerd" and any(arg.endswith(config) for arg in argv[1:])


def running_components() -> list[str]:
    """`name (pid N)` of every running node component on this machine."""
    return [
        f"{Path(argv[0]).name} (pid {pid})"
        for pid, argv in teardown.command_lines()
        if is_node_component(argv)
    ]


def _kube_chains() -> bool:
    saved = subprocess.run(
        ["iptables-save", "-t", "nat"], capture_output=True, text=True, check=False, env=_env()
    )
    return ":KUBE-SERVICES " in saved.stdout


def other_node() -> str | None:
    """Why this machine already runs a containerd node (one of its components runs), or
    None."""
    if running := running_components():
        return f"{', '.join(running)} run"
    return None


def leftover() -> str | None:
    """What a containerd node that stopped without `down` left on this machine (its
    bridge, the mounts of its state directory, kube-proxy's chains), when none of a node's
    components runs; or None. `teardown.reclaim` removes it. The chains may be another
    Kubernetes' whose kube-proxy is stopped: with no kube-proxy and no kubelet running they
    serve nothing, and both make theirs afresh when they start."""
    if running_components():
        return None
    parts = [f"the bridge {BRIDGE}"] if Path(f"/sys/class/net/{BRIDGE}").exists() else []
    parts += [f"the mounts and pods of {root}" for root in teardown.crashed_node_roots()]
    if _kube_chains():
        parts.append("kube-proxy's KUBE-SERVICES chain")
    return " and ".join(parts) or None


def _env() -> dict[str, str]:
    return dict(os.environ, PATH=search_path())


def check(bin_dir: Path) -> None:
    """Raise a NodePrerequisiteError naming every missing piece and how to get it."""
    problems = []
    if os.geteuid() != 0:
        problems.append("a containerd node runs containers, mounts and iptables rules: run as root")
    missing = missing_packages()
    if missing:
        detail = "; ".join(f"{pkg} ({', '.join(what)})" for pkg, what in sorted(missing.items()))
        problems.append(
            f"missing Debian packages: {detail}. Install them with `make system-deps` "
            f"(or apt-get install {' '.join(sorted(missing))})"
        )
    absent = [b for b in NODE_BINARIES if not os.access(bin_dir / b, os.X_OK)]
    if absent:
        problems.append(
            f"{bin_dir} lacks {', '.join(absent)}: build them with platform/build-node.sh "
            "(`make node-binaries`)"
        )
    ip = shutil.which("ip", path=search_path())
    routes = subprocess.run([ip, "-4", "route"], capture_output=True, text=True) if ip else None
    if routes is not None and (clashes := overlapping_routes(routes.stdout)):
        problems.append(
            f"the pod network {POD_CIDR} overlaps routes of other interfaces "
            f"({'; '.join(clashes)}): pods would be unreachable. Remove that network "
            "or interface first"
        )
    if not missing and (other := other_node()):
        problems.append(
            f"{other}: another containerd node runs on this machine (one at a time: they "
            "would share the pod bridge and kube-proxy's iptables chains). Stop it with "
            "`loopline cluster down --state-dir ...` first"
        )
    elif not missing and (left := leftover()):
        problems.append(
            f"{left}: left by a containerd node that stopped without `loopline cluster "
            "down`, and not removable (the log says why)"
        )
    if not Path("/sys/fs/cgroup").is_dir():
        problems.append("/sys/fs/cgroup is not mounted: the kubelet needs cgroups")
    if problems:
        raise NodePrerequisiteError("cannot start a containerd node:\n- " + "\n- ".join(problems))
