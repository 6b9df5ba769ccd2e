"""Who the control plane's components are: the cluster's PKI, the static token file, one
kubeconfig per component (the admin's is the user's), and kwok's explicit configuration."""

from __future__ import annotations

import yaml

from loopline.cluster import commands, pki
from loopline.cluster.kubeconfig import component_users, kubeconfig, token_file
from loopline.cluster.layout import Layout


def write(
    layout: Layout, ports: commands.Ports, *, extra_ips: tuple[str, ...] = ()
) -> dict[str, str]:
    """PKI, token file and kubeconfigs under `layout`; returns each identity's token.
    `extra_ips` go into the apiserver's serving certificate (see pki.generate)."""
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.root.chmod(0o700)
    keys = pki.generate(extra_ips=extra_ips)
    pki.write(keys, layout)
    users = component_users()
    pki.write_private(layout.token_file, token_file(list(users.values())).encode())
    for component, user in users.items():
        path = layout.kubeconfig if component == "admin" else layout.component_kubeconfig(component)
        config = kubeconfig(ports.server, keys.ca_cert, user.token, user=user.name)
        pki.write_private(path, yaml.safe_dump(config, sort_keys=False).encode())
    # kwok reads --config; an explicit empty configuration keeps ~/.kwok out of it.
    layout.kwok_config.write_text(
        "apiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\noptions: {}\n"
    )
    return {name: user.token for name, user in users.items()}
