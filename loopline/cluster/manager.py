"""The local cluster's lifecycle: `up`, `down`, `status`, restart of one component.

This module starts and stops processes; everything it starts them with (command lines,
kubeconfigs, certificates, node objects) comes from the pure modules beside it.

Size: the lifecycle of both runtimes (kwok, and the containerd node's start, failure cleanup
and teardown) in one place; moving the node's half into `cluster/node/` is the next split.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from loopline.cluster import (
    commands,
    crds,
    dns,
    identities,
    readiness,
    recovery,
    registry,
    storage,
)
from loopline.cluster import process as proc
from loopline.cluster import state as st
from loopline.cluster.binaries import Binaries, ensure
from loopline.cluster.errors import (
    ClusterError,
    CrdInstallError,
    PortInUseError,
    RecoveryError,
)
from loopline.cluster.kubectl import Kubectl, KubectlError
from loopline.cluster.layout import Layout
from loopline.cluster.node import config as node_config
from loopline.cluster.node import oci, prerequisites, teardown
from loopline.cluster.node import runner as node
from loopline.cluster.node.layout import NodeLayout
from loopline.cluster.settings import ClusterSettings
from loopline.wait import WaitTimeout, wait_for

log = logging.getLogger(__name__)

# What a state directory may contain; `down` refuses to delete a directory holding anything
# else, in case LOOPLINE_CLUSTER_STATE_DIR points somewhere precious.
_OWN_ENTRIES = {
    "pki",
    "etcd",
    "logs",
    "kubeconfig",
    "kubeconfigs",
    "kwok.yaml",
    "node",
    "state.json",
    "state.tmp",
    "coredns",  # loopline.cluster.dns: Corefile, CoreDNS's kubeconfig
    "registry",  # loopline.cluster.registry: config.yml (the images live in the cache)
}


RUNTIMES = ("kwok", "containerd")

_PORT_RELEASE_GRACE = 5.0  # seconds a dead process's port may take to be released


@dataclass(frozen=True)
class UpResult:
    state: st.ClusterState
    started: bool  # False: the cluster was already running and `up` did nothing
    crds: list[str] = field(default_factory=list)  # names of the CRDs installed
    restarted: list[str] = field(default_factory=list)  # dead processes recovery restarted
    adopted: list[str] = field(default_factory=list)  # live processes recovery left alone
    deleted: list[str] = field(default_factory=list)  # what `--reset` deleted


@dataclass(frozen=True)
class Status:
    health: st.Health
    state: st.ClusterState | None
    dead: list[str]  # recorded components that are no longer running
    plan: recovery.Plan  # what `up` would do

    @property
    def advice(self) -> str:
        """What `up` would do about a cluster that is not fully running ('' otherwise)."""
        return recovery.describe(self.state, self.plan)


class LocalCluster:
    """One local cluster, identified by its state directory."""

    def __init__(
        self, settings: ClusterSettings | None = None, *, binaries: Binaries | None = None
    ) -> None:
        self.settings = settings or ClusterSettings()
        self.layout = Layout(self.settings.resolved_state_dir())
        self.node_layout = NodeLayout(self.layout)
        self._binaries = binaries

    # -- queries ---------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self.layout.root

    @property
    def kubeconfig_path(self) -> Path:
        return self.layout.kubeconfig

    def state(self) -> st.ClusterState | None:
        return st.load(self.layout.state_file)

    def status(self) -> Status:
        state = self.state()
        alive = self._liveness(state)
        dead = [name for name, running in alive.items() if not running]
        return Status(st.health(state), state, dead, self._plan(state, alive))

    def admin_token(self) -> str:
        """The admin bearer token, read back from the kubeconfig `up` wrote."""
        config = yaml.safe_load(self.layout.kubeconfig.read_text())
        return str(config["users"][0]["user"]["token"])

    def kubectl(self) -> Kubectl:
        state = self._require_running()
        return Kubectl(state.bin_dir / "kubectl", self.layout.kubeconfig)

    # -- lifecycle -------------------------------------------------------------------------

    def up(
        self,
        nodes: int = 0,
        crd_dirs: Sequence[Path] = (),
        *,
        build: bool = True,
        reset: bool = False,
        runtime: str = "kwok",
        registry_port: int | None = None,
        cluster_dns: str = node_config.DEFAULT_CLUSTER_DNS,
    ) -> UpResult:
        """Start the cluster, bring back the dead processes of one, or do nothing when it
        already runs.

        Recovery keeps everything (etcd data, PKI, ports, tokens) and adopts the processes
        still running; see `recovery`. `reset` first stops and deletes the cluster that is
        there. If a fresh start fails, everything already started is stopped again and the
        logs are kept; if a recovery fails, nothing is deleted.

        `runtime="containerd"` adds a real node (containerd, kubelet, kube-proxy; see
        cluster.node) instead of fake ones, CoreDNS as the `kube-dns` Service at
        `cluster_dns` (see cluster.dns), and the local image registry the node pulls from,
        on 127.0.0.1:`registry_port` (a free port when None; see cluster.registry).
        """
        if nodes < 0:
            raise ValueError("nodes must be >= 0")
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
        if runtime == "containerd" and nodes:
            raise ValueError("a containerd cluster has one real node; --nodes is for kwok")
        with st.locked(self.layout.lock_file):
            deleted = self._reset() if reset else []
            current = self.state()
            decision = self._plan(current, self._liveness(current))
            if decision.action is recovery.Action.REFUSE:
                raise ClusterError(f"{self.state_dir} {decision.reason}")
            if current is not None:
                if current.nodes != nodes:
                    log.warning(
                        "cluster in %s runs with %d node(s); `down` first to change it",
                        self.state_dir,
                        current.nodes,
                    )
                if decision.action is recovery.Action.NOTHING:
                    return UpResult(current, started=False)
                started = time.monotonic()
                state = self._recover(current, decision)
                log.info(
                    "cluster recovered in %.1fs at %s", time.monotonic() - started, state.server
                )
                installed = self._install_crds(state, crd_dirs)
                return UpResult(
                    state,
                    started=True,
                    crds=installed,
                    restarted=list(decision.restart),
                    adopted=list(decision.adopt),
                )
            self._remove_state_dir()  # at most the logs of a failed start are left
            binaries = self._binaries or ensure(self.settings, build_if_needed=build)
            if runtime == "containerd":
                if build and self._binaries is None:
                    node.build_binaries(self.settings)
                    dns.ensure_binary(self.settings, binaries.bin_dir)
                if (left := prerequisites.leftover()) is not None:
                    log.warning(
                        "%s: left by a containerd node that stopped without `down`; removing it",
                        left,
                    )
                    teardown.reclaim(binaries.bin_dir / "kube-proxy")
                prerequisites.check(binaries.bin_dir)
            started = time.monotonic()
            try:
                state = self._start(
                    binaries,
                    nodes,
                    runtime=runtime,
                    registry_port=registry_port,
                    cluster_dns=cluster_dns,
                )
            except BaseException:
                failed = self.state()
                if failed is not None:
                    self._stop_all(failed)
                elif runtime == "containerd":
                    node.stop(self.node_layout, binaries.bin_dir)
                # Keep the logs for the error message. The rest of a cluster that never
                # came up holds nothing of anyone's, and the next `up` must see no cluster.
                self._remove_state_dir(keep={"logs"})
                raise
            log.info("cluster ready in %.1fs at %s", time.monotonic() - started, state.server)
            project = crds.default_dirs() if self.settings.project_crds else []
            installed = self._install_crds(state, [*project, *crd_dirs])
            return UpResult(state, started=True, crds=installed, deleted=deleted)

    def _reset(self) -> list[str]:
        """Stop whatever runs and delete the state directory; say what was deleted."""
        root = self.layout.root
        current = self.state()
        if current is not None:
            self._stop_all(current)
        deleted = []
        if self.layout.etcd_data_dir.exists():
            deleted.append(f"etcd data ({self.layout.etcd_data_dir}): every namespace and object")
        if self.layout.pki_dir.exists():
            deleted.append(
                f"PKI and tokens ({self.layout.pki_dir}): kubeconfigs of this cluster stop "
                "working, service-account tokens become invalid"
            )
        if root.exists():
            deleted.append(f"the rest of {root} (state, kubeconfigs, logs)")
        self._remove_state_dir()
        for line in deleted:
            log.warning("--reset deleted %s", line)
        return deleted

    def _liveness(self, state: st.ClusterState | None) -> dict[str, bool]:
        if state is None:
            return {}
        return {p.name: st.is_alive(p) for p in state.processes}

    def _plan(self, state: st.ClusterState | None, alive: dict[str, bool]) -> recovery.Plan:
        layout = self.layout
        has_data = any(
            path.exists() for path in (layout.etcd_data_dir, layout.pki_dir, layout.kubeconfig)
        )
        return recovery.plan(
            state, alive, has_data=has_data, missing=self._missing_for_restart(state, alive)
        )

    def _missing_for_restart(
        self, state: st.ClusterState | None, alive: dict[str, bool]
    ) -> list[str]:
        """Files a restart of the dead processes needs that are gone (none to check when
        nothing is dead): whatever their recorded command lines name, and the admin
        kubeconfig the readiness checks authenticate with."""
        if state is None or all(alive.values()):
            return []
        dead = [p.argv for p in state.processes if not alive.get(p.name, False)]
        needed = [*recovery.files_needed(dead, self.layout.root), self.layout.kubeconfig]
        return [str(path) for path in needed if not path.exists()]

    def _recover(self, state: st.ClusterState, decision: recovery.Plan) -> st.ClusterState:
        """Start the dead processes again with their recorded command lines, in start
        order, each once the ones before it are ready (live ones are only waited for)."""
        dead = ", ".join(decision.restart)
        log.warning(
            "recovering the cluster in %s: restarting %s with %s%s",
            self.state_dir,
            dead,
            recovery.KEEPS,
            f"; leaving {', '.join(decision.adopt)} running" if decision.adopt else "",
        )
        for port, name in recovery.ports_to_free(state, decision.restart).items():
            try:
                # A process killed a moment ago shows as a zombie before its last thread
                # has exited and closed its sockets: give it a few seconds to let go.
                wait_for(
                    lambda: proc.port_is_free(port),  # noqa: B023
                    timeout=_PORT_RELEASE_GRACE,
                    what=f"127.0.0.1:{port} to be free",
                    interval=0.1,
                )
            except WaitTimeout as exc:
                raise PortInUseError(
                    f"cannot restart {name}: its port 127.0.0.1:{port} is now taken by another "
                    "process, and clients of this cluster know only that port. Stop that "
                    "process and run `loopline cluster up` again (nothing was deleted), or "
                    "`loopline cluster up --reset` to start a new cluster on new ports."
                ) from exc
        token = self.admin_token()
        started: list[st.ProcessRecord] = []
        try:
            for old in list(state.processes):
                record = old
                if old.name in decision.restart:
                    proc.stop(old)  # a no-op unless it is still ours; reaps our zombie
                    log.info("restarting %s", old.name)
                    env = node.environment() if old.name in node.COMPONENTS else None
                    record = proc.start(old.name, old.argv, old.log, env=env)
                    started.append(record)
                    state.processes = [record if p.name == old.name else p for p in state.processes]
                    st.save(self.layout.state_file, state)
                self._wait_ready(record, state, token)
        except BaseException as exc:
            for record in started:
                proc.stop(record)
            if isinstance(exc, ClusterError):
                raise RecoveryError(
                    f"{exc}\nNothing was deleted: fix the cause and run `loopline cluster up` "
                    "again, or `loopline cluster up --reset` to start a new, empty cluster."
                ) from exc
            raise
        return state

    def _install_crds(self, state: st.ClusterState, directories: Sequence[Path]) -> list[str]:
        """Install CRDs into the running cluster. A broken CRD is an error, but the
        cluster stays up: the person fixing the manifest can re-apply without a restart."""
        if not directories:
            return []
        log.info("installing CRDs from %s", ", ".join(map(str, directories)))
        kubectl = Kubectl(state.bin_dir / "kubectl", self.layout.kubeconfig)
        try:
            names = crds.install(kubectl, directories, timeout=self.settings.start_timeout)
        except KubectlError as exc:
            raise CrdInstallError(
                f"the cluster is running at {state.server}, but installing CRDs from "
                f"{', '.join(map(str, directories))} failed:\n{exc.stderr.strip()}\n"
                "Fix the manifests and apply them again (kubectl apply --server-side -f DIR), "
                "or `loopline cluster down`."
            ) from exc
        log.info("installed %d CRD(s)", len(names))
        return names

    def down(self) -> list[st.ProcessRecord]:
        """Stop every recorded process (and its process group) and delete the state."""
        with st.locked(self.layout.lock_file):
            current = self.state()
            volumes = self._volume_dirs(current) if current is not None else []
            stopped = self._stop_all(current) if current is not None else []
            storage.remove(volumes)
            if current is None and self.node_layout.root.exists():
                # A node whose `up` died before it wrote the state file: its containers,
                # mounts and rules may still be there.
                node.stop(self.node_layout, None)
            self._remove_state_dir()
            return stopped

    def restart(self, component: str) -> st.ProcessRecord:
        """Stop one component and start it again with the same command line and ports
        (tests use it to see clients survive an apiserver restart)."""
        with st.locked(self.layout.lock_file):
            state = self._require_running()
            old = state.process(component)
            proc.stop(old)
            env = node.environment() if component in node.COMPONENTS else None
            new = proc.start(component, old.argv, old.log, env=env)
            state.processes = [new if p.name == component else p for p in state.processes]
            st.save(self.layout.state_file, state)
            self._wait_ready(new, state, self.admin_token())
            return new

    # -- internals -------------------------------------------------------------------------

    def _require_running(self) -> st.ClusterState:
        status = self.status()
        if status.health is not st.Health.RUNNING or status.state is None:
            raise ClusterError(
                f"no running cluster in {self.state_dir} ({status.health.value}); "
                "run `loopline cluster up`"
            )
        return status.state

    def _volume_dirs(self, state: st.ClusterState) -> list[Path]:
        """The hostPath directories of the cluster's volumes (see cluster.storage), read
        while the API server still answers; none when it does not."""
        kubectl = Kubectl(state.bin_dir / "kubectl", self.layout.kubeconfig)
        try:
            listed = kubectl(
                "get", "persistentvolumes", "-o", "json", "--request-timeout=10s", timeout=20
            )
        except (KubectlError, OSError, subprocess.TimeoutExpired) as exc:
            log.info("volumes not listed (%s): their directories stay", str(exc)[:200])
            return []
        return storage.volume_dirs(listed.stdout)

    def _stop_all(self, state: st.ClusterState) -> list[st.ProcessRecord]:
        for record in reversed(state.processes):
            log.info("stopping %s (pid %d)", record.name, record.pid)
            proc.stop(record)
        if state.runtime == "containerd":
            # The containers, their mounts, the bridge and the iptables rules outlive the
            # processes that made them.
            node.stop(self.node_layout, state.bin_dir)
        return list(state.processes)

    def _remove_state_dir(self, keep: frozenset[str] | set[str] = frozenset()) -> None:
        """Delete the state directory (all but the entries in `keep`)."""
        root = self.layout.root
        if not root.exists():
            return
        foreign = {p.name for p in root.iterdir()} - _OWN_ENTRIES
        if foreign:
            raise ClusterError(
                f"{root} holds files a Loopline cluster does not create "
                f"({', '.join(sorted(foreign))}); refusing to delete it. Point "
                "LOOPLINE_CLUSTER_STATE_DIR at a directory of its own."
            )
        if mounted := teardown.mounts_under(root):
            # rmtree would walk into a bind mount and delete what it shows.
            raise ClusterError(
                f"refusing to delete {root}: {len(mounted)} mount(s) remain below it "
                f"(e.g. {mounted[0]}); unmount them (umount -l) and run `loopline cluster "
                "down` again."
            )
        if not keep:
            shutil.rmtree(root)
            return
        for entry in root.iterdir():
            if entry.name in keep:
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def _pick_ports(self) -> commands.Ports:
        fixed = self.settings.apiserver_port
        if fixed:
            proc.ensure_port_free(fixed, "kube-apiserver")
        picked = [p for p in proc.free_ports(7) if p != fixed]
        return commands.Ports(
            etcd_client=picked[0],
            etcd_peer=picked[1],
            controller_manager=picked[2],
            scheduler=picked[3],
            kwok=picked[4],
            apiserver=fixed or picked[5],
        )

    def _command(self, name: str, binaries: Binaries, ports: commands.Ports) -> list[str]:
        layout = self.layout
        binary = binaries[name]
        if name == "etcd":
            return commands.etcd_command(
                binary, layout, ports, unsafe_no_fsync=self.settings.etcd_unsafe_no_fsync
            )
        if name == "kube-apiserver":
            return commands.apiserver_command(
                binary, layout, ports, extra_args=self.settings.apiserver_extra_args
            )
        if name == "kube-controller-manager":
            return commands.controller_manager_command(binary, layout, ports)
        if name == "kube-scheduler":
            return commands.scheduler_command(binary, layout, ports)
        if name == "kwok":
            return commands.kwok_command(binary, layout, ports)
        raise ValueError(name)

    def _start(
        self,
        binaries: Binaries,
        nodes: int,
        *,
        runtime: str = "kwok",
        registry_port: int | None = None,
        cluster_dns: str = node_config.DEFAULT_CLUSTER_DNS,
    ) -> st.ClusterState:
        ports = self._pick_ports()
        real_node = runtime == "containerd"
        node_ip = node.primary_ipv4() if real_node else None
        if node_ip is not None:
            teardown.record(self.node_layout)
        tokens = identities.write(self.layout, ports, extra_ips=(node_ip,) if node_ip else ())
        spec: node_config.NodeSpec | None = None
        if node_ip is not None:
            # The registry starts first (see commands.CONTAINERD_COMPONENTS) on this port;
            # the node's containerd config names it, so it is chosen now.
            spec = node_config.NodeSpec(
                self.node_layout,
                node_ip,
                node.free_node_ports(),
                cluster_dns=cluster_dns,
                registry_port=registry_port or proc.free_ports(1)[0],
            )
            node.write_config(spec, ports.server)
        state = st.ClusterState(
            kubernetes_version=binaries.kubernetes_version,
            server=ports.server,
            ports={
                "etcd-client": ports.etcd_client,
                "etcd-peer": ports.etcd_peer,
                "kube-apiserver": ports.apiserver,
                "kube-controller-manager": ports.controller_manager,
                "kube-scheduler": ports.scheduler,
                "kwok": ports.kwok,
            },
            nodes=nodes,
            bin_dir=binaries.bin_dir,
            kubeconfig=self.layout.kubeconfig,
            runtime=runtime,
            node_ip=node_ip,
        )
        names = commands.components(nodes, runtime)
        if spec is not None:
            state.ports.update(
                {
                    "kubelet": spec.ports.kubelet,
                    "kubelet-healthz": spec.ports.kubelet_healthz,
                    "kube-proxy-healthz": spec.ports.proxy_healthz,
                    "kube-proxy-metrics": spec.ports.proxy_metrics,
                }
            )
        kubectl = Kubectl(binaries.kubectl, self.layout.kubeconfig)
        for name in names:
            if name == "kwok":
                # The nodes exist before kwok starts, so it adopts them on its first list.
                log.info("creating %d fake node(s)", nodes)
                items = [commands.fake_node(n) for n in commands.fake_node_names(nodes)]
                kubectl(
                    "apply",
                    "-f",
                    "-",
                    input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
                )
            log.info("starting %s", name)
            if name in (registry.PROCESS_NAME, dns.PROCESS_NAME) and spec is not None:
                # Both start and wait for themselves, and stop again if they never get ready.
                self._start_service(name, state, spec, binaries, kubectl)
                continue
            if name in node.COMPONENTS and spec is not None:
                argv = self._node_command(name, binaries, spec)
                record = proc.start(name, argv, self.layout.log(name), env=node.environment())
            else:
                argv = self._command(name, binaries, ports)
                if name == "kube-apiserver" and spec is not None:
                    argv = node_config.apiserver_for_real_node(argv, spec.node_ip, spec.layout)
                record = proc.start(name, argv, self.layout.log(name))
            state.processes.append(record)
            st.save(self.layout.state_file, state)
            self._wait_ready(record, state, tokens["admin"])
            if name == "containerd":
                # The sandbox image cannot be pulled from anywhere: import our own.
                pause = oci.pause_image(binaries.bin_dir / "pause", node_config.PAUSE_IMAGE)
                node.import_image(self.node_layout, pause)
        if nodes or real_node:
            self._wait_default_service_account(state, tokens["admin"])
        kubectl("apply", "-f", "-", input=json.dumps(storage.storage_class()))
        return state

    def _start_service(
        self,
        name: str,
        state: st.ClusterState,
        spec: node_config.NodeSpec,
        binaries: Binaries,
        kubectl: Kubectl,
    ) -> None:
        """Start the registry or CoreDNS of a containerd cluster and record it (process and
        ports) in the state, so `down` and a failed `up` stop it like the others."""
        if name == registry.PROCESS_NAME:
            storage = registry.default_storage_dir(self.settings.resolved_cache_dir())
            started_registry = registry.start(
                self.layout, storage, port=spec.registry_port or 0, binary=registry.BINARY
            )
            record, ports = started_registry.record, started_registry.ports
        else:
            started_dns = dns.start(
                self.layout,
                binaries.bin_dir,
                kubectl,
                state.server,
                listen_address=spec.node_ip,
                service_ip=spec.cluster_dns,
                timeout=self.settings.start_timeout,
            )
            record, ports = started_dns.record, started_dns.ports
        state.processes.append(record)
        state.ports.update(ports)
        st.save(self.layout.state_file, state)
        log.info("%s ready (pid %d)", name, record.pid)

    def _node_command(self, name: str, binaries: Binaries, spec: node_config.NodeSpec) -> list[str]:
        binary = binaries.bin_dir / name
        if name == "containerd":
            found = shutil.which("containerd", path=prerequisites.search_path())
            return node_config.containerd_command(Path(found or "/usr/bin/containerd"), spec)
        if name == "kubelet":
            return node_config.kubelet_command(binary, spec)
        if name == "kube-proxy":
            return node_config.kube_proxy_command(binary, spec)
        raise ValueError(name)

    def _probe(self, name: str, state: st.ClusterState, token: str) -> Callable[[], bool]:
        if name == "containerd":
            return node.containerd_ready(self.node_layout)
        if name == "kubelet":
            return node.node_ready(state.server, self.layout.ca_cert, token)
        if name == "kube-proxy":
            return node.proxy_ready(state.ports["kube-proxy-healthz"])
        return readiness.probe(name, state, self.layout, token)

    def _wait_ready(self, record: st.ProcessRecord, state: st.ClusterState, token: str) -> None:
        ready = self._probe(record.name, state, token)
        proc.wait_until(
            record, ready, timeout=self.settings.start_timeout, what="ready", interval=0.2
        )
        log.info("%s ready (pid %d)", record.name, record.pid)

    def _wait_default_service_account(self, state: st.ClusterState, token: str) -> None:
        readiness.wait_default_service_account(
            state, self.layout, token, timeout=self.settings.start_timeout
        )
