"""Kubeconfig and static-token-file contents (pure).

Bearer tokens in a static token file are the simplest authentication kube-apiserver offers
that still goes through the real authorizer: the admin user is in `system:masters`; the
controller-manager and scheduler get their standard user names, so the bootstrap RBAC
bindings upstream ships apply to them exactly as in a kubeadm cluster.
"""

from __future__ import annotations

import base64
import csv
import io
import secrets
from dataclasses import dataclass, field

CLUSTER_NAME = "loopline"
ADMIN_USER = "loopline-admin"


@dataclass(frozen=True)
class TokenUser:
    """One line of the apiserver's `--token-auth-file`."""

    token: str
    name: str
    uid: str
    groups: tuple[str, ...] = field(default=())


def new_token() -> str:
    """A random bearer token (256 bits)."""
    return secrets.token_hex(32)


def component_users() -> dict[str, TokenUser]:
    """Fresh tokens for every identity the local cluster uses, keyed by component."""
    return {
        "admin": TokenUser(new_token(), ADMIN_USER, "loopline-admin", ("system:masters",)),
        "kube-controller-manager": TokenUser(
            new_token(), "system:kube-controller-manager", "kube-controller-manager"
        ),
        "kube-scheduler": TokenUser(new_token(), "system:kube-scheduler", "kube-scheduler"),
        # kwok writes node and pod status for every fake node: it stands in for all kubelets
        # at once, which no single bootstrap role covers.
        "kwok": TokenUser(new_token(), "loopline-kwok", "loopline-kwok", ("system:masters",)),
    }


def token_file(users: list[TokenUser]) -> str:
    """The CSV the apiserver reads: `token,user,uid,"group1,group2"`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for user in users:
        row = [user.token, user.name, user.uid]
        if user.groups:
            row.append(",".join(user.groups))
        writer.writerow(row)
    return buffer.getvalue()


def kubeconfig(
    server: str,
    ca_pem: bytes,
    token: str,
    *,
    user: str = ADMIN_USER,
    cluster: str = CLUSTER_NAME,
    namespace: str | None = None,
) -> dict[str, object]:
    """A self-contained kubeconfig (CA embedded) for one user of the local cluster."""
    return _config(server, ca_pem, user, {"token": token}, cluster=cluster, namespace=namespace)


def cert_kubeconfig(
    server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, *, user: str
) -> dict[str, object]:
    """A self-contained kubeconfig authenticating by client certificate (the node's
    components and CoreDNS: what a kubeadm node gives them)."""
    credentials = {"client-certificate-data": _b64(cert_pem), "client-key-data": _b64(key_pem)}
    return _config(server, ca_pem, user, credentials)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _config(
    server: str,
    ca_pem: bytes,
    user: str,
    credentials: dict[str, str],
    *,
    cluster: str = CLUSTER_NAME,
    namespace: str | None = None,
) -> dict[str, object]:
    context: dict[str, str] = {"cluster": cluster, "user": user}
    if namespace:
        context["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": cluster, "context": context}],
        "current-context": cluster,
        "preferences": {},
    }
