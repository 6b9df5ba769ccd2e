"""Token file and kubeconfig contents."""

from __future__ import annotations

import base64
import csv
import io

from loopline.cluster.kubeconfig import (
    ADMIN_USER,
    TokenUser,
    component_users,
    kubeconfig,
    new_token,
    token_file,
)


def test_token_file_quotes_the_group_list() -> None:
    text = token_file(
        [TokenUser("t1", "alice", "u1", ("system:masters", "devs")), TokenUser("t2", "bob", "u2")]
    )
    assert text.splitlines() == ['t1,alice,u1,"system:masters,devs"', "t2,bob,u2"]
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][3].split(",") == ["system:masters", "devs"]


def test_component_identities() -> None:
    users = component_users()
    assert "system:masters" in users["admin"].groups
    assert users["admin"].name == ADMIN_USER
    # Upstream's bootstrap RBAC binds these exact user names.
    assert users["kube-controller-manager"].name == "system:kube-controller-manager"
    assert users["kube-scheduler"].name == "system:kube-scheduler"
    assert len({u.token for u in users.values()}) == len(users)


def test_tokens_are_random_and_long() -> None:
    assert new_token() != new_token()
    assert len(new_token()) >= 64


def test_kubeconfig_embeds_ca_and_token() -> None:
    config = kubeconfig("https://127.0.0.1:1", b"PEM", "tok", namespace="ns")
    clusters = config["clusters"]
    assert isinstance(clusters, list)
    assert base64.b64decode(clusters[0]["cluster"]["certificate-authority-data"]) == b"PEM"
    assert clusters[0]["cluster"]["server"] == "https://127.0.0.1:1"
    assert config["users"] == [{"name": ADMIN_USER, "user": {"token": "tok"}}]
    contexts = config["contexts"]
    assert isinstance(contexts, list)
    assert contexts[0]["context"]["namespace"] == "ns"
    assert config["current-context"] == contexts[0]["name"]
