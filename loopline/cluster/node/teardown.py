"""Undo everything a containerd node did to this machine, even after a crash.

The kubelet and containerd leave state behind when they stop: container processes keep
running under their shims (shims are not in containerd's process group), the kubelet's
root and the pods' volumes stay mounted, the CNI bridge and its masquerade rules stay, and
kube-proxy's and the kubelet's iptables chains stay. `down` (and a failed `up`) run
`teardown` to remove all of it; every step finds its targets by what only this node
creates (its socket path, its state directory, its bridge and CNI network name, the
KUBE-* chains), so other containers on the machine (podman's) are left alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from loopline.cluster.layout import Layout
from loopline.cluster.node.config import BRIDGE, CNI_NETWORK
from loopline.cluster.node.layout import NODE_DIR, NodeLayout

log = logging.getLogger(__name__)

_MNT_DETACH = 2
IPTABLES_TABLES = ("filter", "nat", "mangle")


@dataclass
class Report:
    """What teardown removed, for the log and the tests."""

    killed: list[int] = field(default_factory=list)
    unmounted: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    iptables: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


# -- processes ------------------------------------------------------------------------------


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def command_lines() -> Iterator[tuple[int, list[str]]]:
    """(pid, argv) of every process of this machine that has a command line (not the
    kernel's threads)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (argv := _cmdline(int(entry.name))):
            yield int(entry.name), argv


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def shim_pids(socket: Path) -> list[int]:
    """containerd shims serving our containerd: started with `-address <our socket>`."""
    return [
        pid
        for pid, argv in command_lines()
        if "containerd-shim" in Path(argv[0]).name and str(socket) in argv
    ]


def node_processes(socket: Path) -> list[int]:
    """Our shims and everything below them (pause, the containers' processes)."""
    children = _children_map()
    found: list[int] = []
    todo = shim_pids(socket)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def kill_node_processes(socket: Path, report: Report, timeout: float = 10.0) -> None:
    """SIGKILL the containers' processes, then the shims (which reap them)."""
    pids = node_processes(socket)
    shims = set(shim_pids(socket))
    for pid in [p for p in pids if p not in shims] + list(shims):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            report.killed.append(pid)
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left := [p for p in pids if _alive(p)]:
        report.errors.append(f"processes still alive after SIGKILL: {left}")


# -- mounts ---------------------------------------------------------------------------------


def _unescape(path: str) -> str:
    """/proc/self/mountinfo escapes space, tab, newline and backslash as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(code, char)
    return path


def mount_points() -> list[str]:
    """Every mount point of this mount namespace."""
    with open("/proc/self/mountinfo") as handle:
        return [_unescape(line.split()[4]) for line in handle]


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root` (deepest first), from this mount namespace."""
    prefix = str(root).rstrip("/")
    points = [p for p in mount_points() if p == prefix or p.startswith(prefix + "/")]
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


def unmount_all(root: Path, report: Report) -> None:
    """Lazily unmount everything below `root`, repeating for stacked mounts."""
    libc = ctypes.CDLL(None, use_errno=True)
    for _ in range(10):
        points = mounts_under(root)
        if not points:
            return
        for point in points:
            if libc.umount2(point.encode(), _MNT_DETACH) == 0:
                report.unmounted.append(point)
            else:
                errno = ctypes.get_errno()
                if errno not in (22,):  # EINVAL: already gone (a parent took it along)
                    report.errors.append(f"umount {point}: {os.strerror(errno)}")
    if left := mounts_under(root):
        report.errors.append(f"still mounted: {left}")


# -- network --------------------------------------------------------------------------------


def _run(argv: list[str], *, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, input=input, check=False)


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def remove_bridge(report: Report) -> None:
    """Delete the pod bridge and any veth still enslaved to it."""
    if not link_exists(BRIDGE):
        return
    for entry in Path("/sys/class/net").iterdir():
        master = entry / "master"
        enslaved = master.exists() and os.path.basename(os.readlink(master)) == BRIDGE
        if enslaved and _run(["ip", "link", "delete", entry.name]).returncode == 0:
            report.links.append(entry.name)
    result = _run(["ip", "link", "delete", BRIDGE])
    if result.returncode == 0:
        report.links.append(BRIDGE)
    else:
        report.errors.append(f"ip link delete {BRIDGE}: {result.stderr.strip()}")


@dataclass(frozen=True)
class IptablesPlan:
    """Rules to delete (as `-D` argument lists) and chains to flush and delete, per table."""

    rules: dict[str, list[list[str]]]
    chains: dict[str, list[str]]


def _is_ours_chain(name: str) -> bool:
    return name.startswith("KUBE-")


def plan_iptables(saved: dict[str, str], keep_chains: set[str] = frozenset()) -> IptablesPlan:  # type: ignore[assignment]
    """From `iptables-save -t <table>` outputs, what belongs to this node (pure).

    Ours: every KUBE-* chain (kube-proxy's and the kubelet's; no one else makes them),
    every rule that jumps to one or lives in one, every rule whose comment names our CNI
    network (`name: "loopline"`, written by the bridge and portmap plugins), and the
    per-container CNI-* chains those rules jump to. Shared CNI-HOSTPORT-* chains are
    deleted only when they were not there before `up` (`keep_chains`) and end up empty.
    """
    marker = f'\\"{CNI_NETWORK}\\"'
    rules: dict[str, list[list[str]]] = {}
    chains: dict[str, list[str]] = {}
    for table, text in saved.items():
        declared = [line[1:].split()[0] for line in text.splitlines() if line.startswith(":")]
        appended = [line for line in text.splitlines() if line.startswith("-A ")]
        ours_rules: list[list[str]] = []
        ours_chains = {c for c in declared if _is_ours_chain(c)}
        for line in appended:
            args = shlex.split(line)
            chain = args[1]
            target = args[args.index("-j") + 1] if "-j" in args else ""
            if marker in line or _is_ours_chain(chain) or _is_ours_chain(target):
                ours_rules.append(["-D", *args[1:]])
                if target.startswith("CNI-") and not target.startswith("CNI-HOSTPORT-"):
                    ours_chains.add(target)
        remaining = [line for line in appended if ["-D", *shlex.split(line)[1:]] not in ours_rules]
        for shared in ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"):
            if shared not in declared or shared in keep_chains:
                continue
            if not any(shlex.split(line)[1] == shared for line in remaining):
                ours_chains.add(shared)
                for line in remaining:
                    args = shlex.split(line)
                    if "-j" in args and args[args.index("-j") + 1] == shared:
                        ours_rules.append(["-D", *args[1:]])
        # Rules inside our chains go with the chain (flush), not one by one.
        rules[table] = [r for r in ours_rules if r[1] not in ours_chains]
        chains[table] = sorted(ours_chains)
    return IptablesPlan(rules, chains)


def iptables_save() -> dict[str, str]:
    saved = {}
    for table in IPTABLES_TABLES:
        result = _run(["iptables-save", "-t", table])
        saved[table] = result.stdout if result.returncode == 0 else ""
    return saved


def chains_now() -> set[str]:
    """Every chain declared in the tables we touch (recorded at `up`)."""
    found: set[str] = set()
    for text in iptables_save().values():
        found.update(line[1:].split()[0] for line in text.splitlines() if line.startswith(":"))
    return found


def clean_iptables(report: Report, keep_chains: set[str]) -> None:
    plan = plan_iptables(iptables_save(), keep_chains)
    for table, rules in plan.rules.items():
        for rule in rules:
            result = _run(["iptables", "-w", "-t", table, *rule])
            if result.returncode == 0:
                report.iptables.append(f"{table}: {' '.join(rule)}")
    for table, chains in plan.chains.items():
        for chain in chains:
            _run(["iptables", "-w", "-t", table, "-F", chain])
        for chain in chains:
            result = _run(["iptables", "-w", "-t", table, "-X", chain])
            if result.returncode == 0:
                report.iptables.append(f"{table}: -X {chain}")
            else:
                report.errors.append(f"iptables -t {table} -X {chain}: {result.stderr.strip()}")


# -- cgroups --------------------------------------------------------------------------------


def remove_cgroups(report: Report) -> None:
    """The kubelet's `kubepods` hierarchy (cgroupfs driver) in every v1 controller."""
    for controller in Path("/sys/fs/cgroup").iterdir():
        top = controller / "kubepods"
        if not top.is_dir():
            continue
        for directory in sorted(
            (p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
        ):
            with contextlib.suppress(OSError):
                directory.rmdir()
        try:
            top.rmdir()
        except OSError as exc:
            report.errors.append(f"rmdir {top}: {exc}")


# -- the whole ------------------------------------------------------------------------------


@dataclass
class Record:
    """What `up` noted before changing the machine, so `down` restores exactly that."""

    ip_forward: str | None = None
    chains_before: list[str] = field(default_factory=list)


def record(layout: NodeLayout) -> Record:
    try:
        forward = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    except OSError:
        forward = None
    noted = Record(ip_forward=forward, chains_before=sorted(chains_now()))
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.teardown_file.write_text(json.dumps(noted.__dict__))
    return noted


def load_record(layout: NodeLayout) -> Record:
    try:
        return Record(**json.loads(layout.teardown_file.read_text()))
    except (OSError, ValueError, TypeError):
        return Record()


def teardown(layout: NodeLayout, kube_proxy: Path | None) -> Report:
    """Remove the node's processes, mounts, interfaces, iptables rules and cgroups. Safe
    to run more than once, and on a node that never fully started."""
    report = Report()
    noted = load_record(layout)
    kill_node_processes(layout.containerd_socket, report)
    _remove_machine_state(report, kube_proxy, set(noted.chains_before), layout.root)
    if noted.ip_forward == "0":
        with contextlib.suppress(OSError):
            Path("/proc/sys/net/ipv4/ip_forward").write_text("0\n")
    for line in report.errors:
        log.warning("node teardown: %s", line)
    return report


def _remove_machine_state(
    report: Report, kube_proxy: Path | None, keep_chains: set[str], root: Path | None
) -> None:
    if kube_proxy is not None and kube_proxy.exists():
        result = _run([str(kube_proxy), "--cleanup", "--v=0"])
        if result.returncode != 0:
            report.errors.append(f"kube-proxy --cleanup: {result.stderr.strip()[-500:]}")
    clean_iptables(report, keep_chains)
    if root is not None:
        unmount_all(root, report)
    remove_bridge(report)
    remove_cgroups(report)


# -- what a crashed node left -----------------------------------------------------------------


def node_roots(paths: list[str]) -> list[Path]:
    """Cluster state directories that mount points or shim sockets (`paths`) lie in: a
    node's mounts are all below `<state dir>/node/kubelet/root` or `<state dir>/node/
    containerd/`, its shims listen beside its containerd socket (pure)."""
    roots: set[Path] = set()
    for path in paths:
        for below in (f"/{NODE_DIR}/kubelet/root", f"/{NODE_DIR}/containerd"):
            head, found, tail = path.partition(below)
            if found and head and (not tail or tail.startswith("/")):
                roots.add(Path(head))
    return sorted(roots)


def _shim_sockets() -> list[str]:
    return [
        argv[argv.index("-address") + 1]
        for _, argv in command_lines()
        if "containerd-shim" in Path(argv[0]).name and "-address" in argv[:-1]
    ]


def crashed_node_roots() -> list[Path]:
    """State directories of nodes whose mounts or shims outlived them. Only directories
    that hold a node's own record (written by `up` before anything else) count, so no
    one else's mounts are ever taken for ours."""
    found = node_roots([*mount_points(), *_shim_sockets()])
    return [root for root in found if NodeLayout(Layout(root)).teardown_file.is_file()]


def reclaim(kube_proxy: Path | None) -> Report:
    """Remove what a containerd node that stopped without `down` (its processes killed,
    the machine's containers restarted) left: its shims and pods, mounts, bridge, iptables
    chains and cgroups. Only for when none of a node's components runs (see
    prerequisites.leftover): the pieces are found by what only a node makes."""
    report = Report()
    for root in crashed_node_roots():
        log.warning("removing what the containerd node of %s left behind", root)
        done = teardown(NodeLayout(Layout(root)), kube_proxy)
        for name in ("killed", "unmounted", "links", "iptables", "errors"):
            getattr(report, name).extend(getattr(done, name))
    # With no record of what was there before, every shared CNI-HOSTPORT chain is kept.
    shared = {chain for chain in chains_now() if chain.startswith("CNI-HOSTPORT-")}
    _remove_machine_state(report, kube_proxy, shared, None)
    for line in report.errors:
        log.warning("node reclaim: %s", line)
    return report
