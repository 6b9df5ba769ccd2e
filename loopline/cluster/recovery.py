"""What `up` does with a state directory it finds, and what `status` says about it (pure).

A cluster whose processes died (kill -9, OOM, a machine that slept or rebooted) still has
everything that makes it that cluster: etcd's data, the CA every kubeconfig trusts, the
service-account key every issued token is signed with, the ports clients were told. So
`up` restarts only the dead processes, with their recorded command lines, and adopts the
live ones. It never deletes anything: deleting is `down`'s job, or `up --reset`'s when
asked for. When it cannot tell what a directory holds, it refuses rather than guesses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from loopline.cluster import commands
from loopline.cluster.state import ClusterState

# The ports each component listens on, by their keys in ClusterState.ports.
PORT_KEYS: dict[str, tuple[str, ...]] = {
    "etcd": ("etcd-client", "etcd-peer"),
    "kube-apiserver": ("kube-apiserver",),
    "kube-controller-manager": ("kube-controller-manager",),
    "kube-scheduler": ("kube-scheduler",),
    "kwok": ("kwok",),
    "registry": ("registry",),
    # CoreDNS's DNS port is UDP and TCP on the node IP too; its loopback HTTP ports are
    # the ones a lingering predecessor would hold.
    "coredns": ("coredns-ready", "coredns-health"),
    "kube-proxy": ("kube-proxy-healthz", "kube-proxy-metrics"),
    "kubelet": ("kubelet-healthz",),
}

KEEPS = "the same etcd data, CA, certificates, ports, service-account key and tokens"


class Action(StrEnum):
    START = "start"  # no cluster here: create one
    NOTHING = "nothing"  # every process runs
    RECOVER = "recover"  # restart the dead processes, adopt the live ones, keep all state
    REFUSE = "refuse"  # cluster data `up` cannot safely use: say why, delete nothing


@dataclass(frozen=True)
class Plan:
    action: Action
    adopt: tuple[str, ...] = ()  # running processes left alone, in start order
    restart: tuple[str, ...] = ()  # dead processes to start again, in start order
    reason: str = ""  # for REFUSE: what is wrong and what the person can do


def plan(
    state: ClusterState | None,
    alive: Mapping[str, bool],
    *,
    has_data: bool,
    missing: Sequence[str] = (),
) -> Plan:
    """Decide what `up` does.

    `alive` maps each recorded process to whether it still runs (pid, command line and
    start time match); `has_data` says whether the directory holds etcd data or PKI;
    `missing` names files a restart needs that are gone.
    """
    if state is None:
        if not has_data:
            return Plan(Action.START)
        return Plan(
            Action.REFUSE,
            reason="holds a cluster's etcd data or certificates but no readable state.json, "
            "so `up` cannot tell how to restart it. `loopline cluster up --reset` deletes it "
            "(every namespace and object, the CA and tokens) and starts a new cluster.",
        )
    recorded = [p.name for p in state.processes]
    expected = list(commands.components(state.nodes, state.runtime))
    if recorded != expected:
        return Plan(
            Action.REFUSE,
            reason=f"records processes {', '.join(recorded) or 'none'} where a cluster with "
            f"{state.nodes} node(s) runs {', '.join(expected)}: its first `up` was interrupted. "
            "`loopline cluster up --reset` deletes it and starts a new cluster.",
        )
    if missing:
        return Plan(
            Action.REFUSE,
            reason=f"cannot restart the cluster: {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} gone. Restore "
            f"{'it' if len(missing) == 1 else 'them'}, or `loopline cluster up --reset` to "
            "delete the rest and start a new cluster.",
        )
    adopt = tuple(name for name in recorded if alive.get(name, False))
    restart = tuple(name for name in recorded if not alive.get(name, False))
    if not restart:
        return Plan(Action.NOTHING, adopt=adopt)
    return Plan(Action.RECOVER, adopt=adopt, restart=restart)


def files_needed(argvs: Sequence[Sequence[str]], root: Path) -> list[Path]:
    """The files and directories under the state directory that these recorded command
    lines name (`--flag=/path`), plus their binaries: a restart needs each unchanged."""
    needed: list[Path] = []
    for argv in argvs:
        candidates = [argv[0]] if argv else []
        candidates += [arg.partition("=")[2] for arg in argv[1:] if arg.startswith("--")]
        for value in candidates:
            path = Path(value)
            ours = path == Path(argv[0]) or path.is_relative_to(root)
            if path.is_absolute() and ours and path not in needed:
                needed.append(path)
    return needed


def etcd_scheme(state: ClusterState) -> str:
    """ "https", or "http" for a cluster recorded before etcd required client certificates
    (recovery restarts it as it was; `up --reset` replaces it with a secured one)."""
    for arg in state.process("etcd").argv:
        if arg.startswith("--listen-client-urls=http://"):
            return "http"
    return "https"


def ports_to_free(state: ClusterState, names: Sequence[str]) -> dict[int, str]:
    """The ports the processes about to be restarted must find free, with their owners."""
    return {
        state.ports[key]: name
        for name in names
        for key in PORT_KEYS.get(name, ())
        if key in state.ports
    }


def describe(state: ClusterState | None, decision: Plan) -> str:
    """What `status` tells a person about a cluster that is not fully running ('' when
    there is nothing to say)."""
    if decision.action is Action.REFUSE:
        return f"The state directory {decision.reason}"
    if decision.action is not Action.RECOVER or state is None:
        return ""
    dead = ", ".join(f"{name} (pid {state.process(name).pid})" for name in decision.restart)
    verb = "is" if len(decision.restart) == 1 else "are"
    them = "it" if len(decision.restart) == 1 else "them"
    message = f"{dead} {verb} dead. `loopline cluster up` restarts {them} with {KEEPS}"
    if decision.adopt:
        message += f", and leaves {', '.join(decision.adopt)} running"
    return (
        message + ". Nothing is deleted: existing kubeconfigs keep working. "
        "(Only `loopline cluster down` or `loopline cluster up --reset` delete the cluster.)"
    )
