"""Where the containerd node keeps its files: all under `<state dir>/node`, so `down` can
find every mount and file it made by path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loopline.cluster.layout import Layout

NODE_DIR = "node"


@dataclass(frozen=True)
class NodeLayout:
    """Paths of the node's components under a cluster's state directory."""

    cluster: Layout

    @property
    def root(self) -> Path:
        return self.cluster.root / NODE_DIR

    # containerd
    @property
    def containerd_dir(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_root(self) -> Path:
        """Persistent data: content store, snapshots (overlay mounts live below)."""
        return self.containerd_dir / "root"

    @property
    def containerd_state(self) -> Path:
        """Runtime state: shim bundles, sandbox shm mounts."""
        return self.containerd_dir / "state"

    @property
    def containerd_config(self) -> Path:
        return self.containerd_dir / "config.toml"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd_dir / "containerd.sock"

    @property
    def registry_hosts_dir(self) -> Path:
        """containerd's `config_path`: one `<host:port>/hosts.toml` per registry."""
        return self.containerd_dir / "certs.d"

    # CNI
    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_conflist(self) -> Path:
        return self.cni_conf_dir / "10-loopline.conflist"

    @property
    def cni_ipam_dir(self) -> Path:
        """host-local's address leases (its default is /var/lib/cni, shared with others)."""
        return self.root / "cni" / "networks"

    # kubelet
    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_root(self) -> Path:
        """The kubelet's --root-dir: pods' volumes are mounted below it."""
        return self.kubelet_dir / "root"

    @property
    def kubelet_config(self) -> Path:
        return self.kubelet_dir / "config.yaml"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.kubelet_dir / "kubeconfig"

    @property
    def kubelet_cert(self) -> Path:
        """Client certificate: CN system:node:<name>, O system:nodes."""
        return self.kubelet_dir / "client.crt"

    @property
    def kubelet_key(self) -> Path:
        return self.kubelet_dir / "client.key"

    @property
    def kubelet_serving_cert(self) -> Path:
        return self.kubelet_dir / "serving.crt"

    @property
    def kubelet_serving_key(self) -> Path:
        return self.kubelet_dir / "serving.key"

    @property
    def apiserver_kubelet_client_cert(self) -> Path:
        """What kube-apiserver presents to the kubelet (logs, exec, port-forward)."""
        return self.kubelet_dir / "apiserver-client.crt"

    @property
    def apiserver_kubelet_client_key(self) -> Path:
        return self.kubelet_dir / "apiserver-client.key"

    # kube-proxy
    @property
    def proxy_dir(self) -> Path:
        return self.root / "kube-proxy"

    @property
    def proxy_config(self) -> Path:
        return self.proxy_dir / "config.yaml"

    @property
    def proxy_kubeconfig(self) -> Path:
        return self.proxy_dir / "kubeconfig"

    @property
    def proxy_cert(self) -> Path:
        return self.proxy_dir / "client.crt"

    @property
    def proxy_key(self) -> Path:
        return self.proxy_dir / "client.key"

    # images packed at `up`
    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def teardown_file(self) -> Path:
        """What `down` must undo that the kernel does not tie to our paths (see teardown)."""
        return self.root / "teardown.json"
