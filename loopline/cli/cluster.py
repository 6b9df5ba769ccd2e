"""`loopline cluster`: a real Kubernetes control plane on loopback, for trying Loopline
and for the integration tests, without Docker or a remote cluster."""

from __future__ import annotations

import json
from pathlib import Path

import click

from loopline.cli.errors import friendly_errors
from loopline.cluster import recovery
from loopline.cluster.binaries import build as build_binaries
from loopline.cluster.dns import DNS_SERVICE_IP
from loopline.cluster.errors import ClusterError
from loopline.cluster.manager import LocalCluster
from loopline.cluster.settings import ClusterSettings
from loopline.cluster.state import Health

_friendly_errors = friendly_errors(ClusterError)


def _cluster(state_dir: Path | None) -> LocalCluster:
    settings = ClusterSettings()
    if state_dir is not None:
        settings = settings.model_copy(update={"state_dir": state_dir})
    return LocalCluster(settings)


state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="State directory (default: $LOOPLINE_CLUSTER_STATE_DIR or $LOOPLINE_STATE_DIR/cluster).",
)


@click.group()
def cluster() -> None:
    """Run a local Kubernetes control plane (etcd + kube-apiserver, optional fake nodes)."""


@cluster.command()
@click.option(
    "--nodes",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Fake (kwok) nodes; > 0 also starts kube-controller-manager and kube-scheduler so "
    "Deployments' pods get scheduled and go Running.",
)
@click.option(
    "--crds",
    "crd_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Extra folder of CRD manifests to install (repeatable); manifests/crds is always "
    "installed.",
)
@click.option(
    "--runtime",
    type=click.Choice(["kwok", "containerd"]),
    default="kwok",
    show_default=True,
    help="kwok: fake nodes, nothing runs (fast). containerd: one real node (containerd, "
    "kubelet, kube-proxy) that runs pods; needs root and `make system-deps`.",
)
@click.option(
    "--registry-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="containerd runtime: the port of the local image registry `up` starts on 127.0.0.1 "
    "(the node pulls 127.0.0.1:PORT/... from it); default: a free port.",
)
@click.option("--no-build", is_flag=True, help="Use the cached binaries without calling build.sh.")
@click.option(
    "--reset",
    is_flag=True,
    help="Stop the cluster in the state directory and DELETE it (etcd data with every "
    "namespace and object, CA, certificates, tokens) before starting a new, empty one.",
)
@state_dir_option
@_friendly_errors
def up(
    nodes: int,
    crd_dirs: tuple[Path, ...],
    runtime: str,
    registry_port: int | None,
    no_build: bool,
    reset: bool,
    state_dir: Path | None,
) -> None:
    """Start the cluster and print how to use it.

    A no-op when it already runs. When some of its processes died, restarts just those,
    keeping the etcd data, CA, certificates, ports and tokens (kubeconfigs stay valid).
    """
    local = _cluster(state_dir)
    result = local.up(
        nodes=nodes,
        crd_dirs=list(crd_dirs),
        build=not no_build,
        reset=reset,
        runtime=runtime,
        registry_port=registry_port,
    )
    state = result.state
    for line in result.deleted:
        click.echo(f"--reset deleted {line}")
    if result.restarted:
        verb = "recovered"
        kept = f"restarted {', '.join(result.restarted)} with {recovery.KEEPS}"
        if result.adopted:
            kept += f"; left {', '.join(result.adopted)} running"
        click.echo(f"Recovered the cluster in {local.state_dir}: {kept}. Nothing was deleted.")
    else:
        verb = "started" if result.started else "already running"
    nodes_text = (
        f"a containerd node at {state.node_ip} (registry 127.0.0.1:"
        f"{state.ports.get('registry')}, kube-dns {DNS_SERVICE_IP})"
        if state.runtime == "containerd"
        else f"{state.nodes} fake node(s)"
    )
    click.echo(
        f"Cluster {verb}: Kubernetes {state.kubernetes_version} at {state.server} "
        f"with {nodes_text}.\n\n"
        f"  export KUBECONFIG={local.kubeconfig_path}\n"
        f'  export PATH="{state.bin_dir}:$PATH"   # the matching kubectl and helm\n'
        "  kubectl get ns\n\n"
        "Stop it with `loopline cluster down`."
    )


@cluster.command()
@state_dir_option
@_friendly_errors
def down(state_dir: Path | None) -> None:
    """Stop every process of the cluster and delete its state directory."""
    local = _cluster(state_dir)
    stopped = local.down()
    if stopped:
        names = ", ".join(f"{p.name} ({p.pid})" for p in stopped)
        click.echo(f"Stopped {names}; removed {local.state_dir}.")
    else:
        click.echo(f"No cluster was running in {local.state_dir}.")


@cluster.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@state_dir_option
@_friendly_errors
def status(as_json: bool, state_dir: Path | None) -> None:
    """Say whether the cluster runs; exit code 0 when it does, 1 otherwise."""
    local = _cluster(state_dir)
    current = local.status()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "health": current.health.value,
                    "state_dir": str(local.state_dir),
                    "dead": current.dead,
                    "up_would": current.plan.action.value,
                    "advice": current.advice,
                    "state": current.state.model_dump(mode="json") if current.state else None,
                },
                indent=2,
            )
        )
    elif current.state is None:
        click.echo(f"stopped (no cluster in {local.state_dir})")
        if current.advice:
            click.echo(current.advice)
    else:
        state = current.state
        click.echo(
            f"{current.health.value}: {state.server} (Kubernetes {state.kubernetes_version})"
        )
        click.echo(f"  state dir:  {local.state_dir}")
        runtime = f"{state.runtime} (node IP {state.node_ip})" if state.node_ip else state.runtime
        click.echo(f"  runtime:    {runtime}")
        click.echo(f"  kubeconfig: {local.kubeconfig_path}")
        for record in state.processes:
            alive = "dead" if record.name in current.dead else "running"
            click.echo(f"  {record.name:<24} pid {record.pid:<8} {alive:<8} {record.log}")
        if current.advice:
            click.echo(current.advice)
    raise SystemExit(0 if current.health is Health.RUNNING else 1)


@cluster.command()
@state_dir_option
@_friendly_errors
def kubeconfig(state_dir: Path | None) -> None:
    """Print the kubeconfig path: `export KUBECONFIG=$(loopline cluster kubeconfig)`."""
    local = _cluster(state_dir)
    if local.status().health is not Health.RUNNING:
        raise ClusterError(f"no running cluster in {local.state_dir}; run `loopline cluster up`")
    click.echo(str(local.kubeconfig_path))


@cluster.command()
@click.option("--force", is_flag=True, help="Rebuild even when the stamp says up to date.")
@_friendly_errors
def build(force: bool) -> None:
    """Build (or reuse) the pinned etcd, Kubernetes, kwok and helm binaries."""
    build_binaries(ClusterSettings(), force=force)
