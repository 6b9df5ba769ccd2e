"""Bring the containerd node's pieces to life: write their configuration, build the
node binaries, import images into containerd, and say when each component is ready.

The manager starts and records the processes (containerd, kubelet, kube-proxy) like the
control plane's; this module gives it their command lines and readiness probes.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import tempfile
import urllib.error
from collections.abc import Callable
from pathlib import Path

import yaml

from loopline.cluster import probes
from loopline.cluster.errors import BuildError, ClusterError
from loopline.cluster.node import config, identities, oci, prerequisites, teardown
from loopline.cluster.node.layout import NodeLayout
from loopline.cluster.settings import ClusterSettings
from loopline.cluster.versions import BUILD_SCRIPT

log = logging.getLogger(__name__)

COMPONENTS = ("containerd", "kubelet", "kube-proxy")
BUILD_NODE_SCRIPT = BUILD_SCRIPT.with_name("build-node.sh")


def primary_ipv4() -> str:
    """The host's primary non-loopback IPv4: the source address of its default route.

    A UDP connect sends nothing; it only asks the kernel which address it would use.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("198.51.100.1", 9))  # TEST-NET-2: never answered
            address = str(sock.getsockname()[0])
        except OSError as exc:
            raise ClusterError(
                "a containerd node needs a non-loopback IPv4 address (pods reach the API "
                f"server through it), and this machine has no default route: {exc}"
            ) from exc
    if address.startswith("127."):
        raise ClusterError(
            "a containerd node needs a non-loopback IPv4 address; the default route's source "
            f"is {address}"
        )
    return address


def build_binaries(settings: ClusterSettings) -> None:
    """Run platform/build-node.sh (a no-op when its stamp matches)."""
    if not BUILD_NODE_SCRIPT.is_file():
        return
    env = dict(os.environ, LOOPLINE_CACHE_DIR=str(settings.resolved_cache_dir()))
    result = subprocess.run(
        ["bash", str(BUILD_NODE_SCRIPT)], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode == 3:
        return  # no Go: prerequisites.check names the binaries that are missing
    if result.returncode != 0:
        raise BuildError(f"platform/build-node.sh failed:\n{result.stderr[-4000:]}")


def free_node_ports() -> config.NodePorts:
    from loopline.cluster import process as proc

    kubelet, healthz, proxy_healthz, metrics = proc.free_ports(4)
    return config.NodePorts(kubelet, healthz, proxy_healthz, metrics)


def write_config(spec: config.NodeSpec, server: str) -> None:
    """Everything the node's processes read, under the state directory."""
    layout = spec.layout
    identities.write(layout, server, spec.node_ip)
    for directory in (
        layout.containerd_root,
        layout.containerd_state,
        layout.registry_hosts_dir,
        layout.cni_conf_dir,
        layout.cni_ipam_dir,
        layout.kubelet_root,
        # --cert-dir: recovery checks that it exists, and the kubelet never makes it
        layout.kubelet_dir / "pki",
        layout.images_dir,
    ):
        directory.mkdir(parents=True, exist_ok=True)
    layout.containerd_config.write_text(config.containerd_config(spec))
    layout.cni_conflist.write_text(json.dumps(config.cni_conflist(spec), indent=2) + "\n")
    if spec.registry_port:
        host, hosts_toml = config.registry_hosts(spec.registry_port)
        (layout.registry_hosts_dir / host).mkdir(parents=True, exist_ok=True)
        (layout.registry_hosts_dir / host / "hosts.toml").write_text(hosts_toml)
    layout.kubelet_config.write_text(yaml.safe_dump(config.kubelet_config(spec), sort_keys=False))
    layout.proxy_config.write_text(yaml.safe_dump(config.kube_proxy_config(spec), sort_keys=False))


def ctr(layout: NodeLayout, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ctr", "--address", str(layout.containerd_socket), "-n", config.CRI_NAMESPACE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def import_image(layout: NodeLayout, spec: oci.ImageSpec) -> None:
    """Pack `spec` and import it into containerd's CRI namespace under `spec.name`."""
    layout.images_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=layout.images_dir, suffix=".tar") as archive:
        archive.write(oci.archive(spec))
        archive.flush()
        result = ctr(layout, "images", "import", archive.name)
    if result.returncode != 0:
        raise ClusterError(f"importing image {spec.name} into containerd failed: {result.stderr}")


def containerd_ready(layout: NodeLayout) -> Callable[[], bool]:
    def ready() -> bool:
        if not layout.containerd_socket.exists():
            return False
        return ctr(layout, "version", timeout=10).returncode == 0

    return ready


def node_ready(server: str, ca_file: Path, token: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            node = probes.api_get_json(server, ca_file, token, f"/api/v1/nodes/{config.NODE_NAME}")
        except (urllib.error.URLError, ValueError, OSError):
            return False
        if not isinstance(node, dict):
            return False
        conditions = node.get("status", {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    return ready


def proxy_ready(port: int) -> Callable[[], bool]:
    def ready() -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    return ready


def environment() -> dict[str, str]:
    """The node's processes find runc, the shim, iptables and ip on this PATH."""
    return dict(os.environ, PATH=prerequisites.search_path())


def stop(layout: NodeLayout, bin_dir: Path | None) -> teardown.Report:
    """Teardown after the node's processes were stopped (see teardown); without a bin dir
    kube-proxy's own cleanup is skipped and only ours runs."""
    report = teardown.teardown(layout, bin_dir / "kube-proxy" if bin_dir else None)
    log.info(
        "node teardown: killed %d process(es), unmounted %d, removed links %s, %d iptables "
        "change(s)",
        len(report.killed),
        len(report.unmounted),
        report.links,
        len(report.iptables),
    )
    return report
