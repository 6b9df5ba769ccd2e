"""Certificates and kubeconfigs of the node's components, signed by the cluster CA.

The kubelet authenticates as `system:node:<name>` in `system:nodes`, so the apiserver's
Node authorizer limits it to its own node and pods, as on a real cluster; kube-proxy is
`system:kube-proxy`, which upstream's bootstrap binding `system:node-proxier` serves. The
apiserver's client certificate for kubelets is in `system:masters`: the kubelet asks the
apiserver (webhook) whether a caller may read logs or exec, and the apiserver itself may.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from loopline.cluster import pki
from loopline.cluster.kubeconfig import cert_kubeconfig
from loopline.cluster.node.config import NODE_NAME
from loopline.cluster.node.layout import NodeLayout


def write(layout: NodeLayout, server: str, node_ip: str) -> None:
    """Certificates and kubeconfigs of the kubelet, kube-proxy and the apiserver's kubelet
    client, from the cluster CA already in the state directory."""
    cluster = layout.cluster
    ca_pem = cluster.ca_cert.read_bytes()
    ca_key_pem = cluster.ca_key.read_bytes()
    layout.kubelet_dir.mkdir(parents=True, exist_ok=True)
    layout.proxy_dir.mkdir(parents=True, exist_ok=True)

    def save(cert_path: Path, key_path: Path, pair: tuple[bytes, bytes]) -> None:
        cert_path.write_bytes(pair[0])
        pki.write_private(key_path, pair[1])

    node_user = f"system:node:{NODE_NAME}"
    kubelet = pki.issue(ca_pem, ca_key_pem, node_user, organizations=("system:nodes",))
    save(layout.kubelet_cert, layout.kubelet_key, kubelet)
    serving = pki.issue(
        ca_pem,
        ca_key_pem,
        NODE_NAME,
        server=True,
        ips=(node_ip, "127.0.0.1"),
        dns_names=(NODE_NAME, "localhost"),
    )
    save(layout.kubelet_serving_cert, layout.kubelet_serving_key, serving)
    proxy = pki.issue(ca_pem, ca_key_pem, "system:kube-proxy")
    save(layout.proxy_cert, layout.proxy_key, proxy)
    apiserver = pki.issue(
        ca_pem, ca_key_pem, "kube-apiserver-kubelet-client", organizations=("system:masters",)
    )
    save(layout.apiserver_kubelet_client_cert, layout.apiserver_kubelet_client_key, apiserver)
    for path, pair, user in (
        (layout.kubelet_kubeconfig, kubelet, node_user),
        (layout.proxy_kubeconfig, proxy, "system:kube-proxy"),
    ):
        config = cert_kubeconfig(server, ca_pem, pair[0], pair[1], user=user)
        pki.write_private(path, yaml.safe_dump(config, sort_keys=False).encode())
