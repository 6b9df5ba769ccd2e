"""The model servers' token-review identity the chart makes: a ServiceAccount per served
namespace, a ClusterRole with `create` on tokenreviews only, one ClusterRoleBinding naming
exactly those ServiceAccounts (never a group), and the operator told where they are. The
operator itself gains nothing (test_chart_sources checks its rules are the manifests')."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests import helm_chart
from tests.helm_chart import HelmError, documents, render

NS = helm_chart.NAMESPACE
ACCOUNT = f"{helm_chart.RELEASE}-model-server"
KUBERNETES = ("--set", "backends.serving=kubernetes")
RULES = [
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}
]


def _objects(*args: str) -> dict[str, Any]:
    rendered = documents(render(*args))
    docs = [
        d
        for d in rendered
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "model-server"
    ]
    (config,) = [
        d
        for d in rendered
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")
    ]
    return {
        "accounts": sorted(
            (d["metadata"]["namespace"], d["metadata"]["name"])
            for d in docs
            if d["kind"] == "ServiceAccount"
        ),
        "roles": [d for d in docs if d["kind"] == "ClusterRole"],
        "bindings": [d for d in docs if d["kind"] == "ClusterRoleBinding"],
        "other": sorted(
            {d["kind"] for d in docs} - {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
        ),
        "env": {k: v for k, v in config["data"].items() if "SERVER_SERVICE_ACCOUNT" in k},
    }


def _subjects(binding: dict[str, Any]) -> list[tuple[str, str, str]]:
    return sorted((s["kind"], s["namespace"], s["name"]) for s in binding["subjects"])


def test_kubernetes_serving_gets_the_grant_in_the_release_namespace_by_default() -> None:
    got = _objects(*KUBERNETES)
    assert got["accounts"] == [(NS, ACCOUNT)]
    (role,) = got["roles"]
    assert role["metadata"]["name"] == ACCOUNT
    assert role["rules"] == RULES
    assert "aggregationRule" not in role
    (binding,) = got["bindings"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": ACCOUNT,
    }
    assert _subjects(binding) == [("ServiceAccount", NS, ACCOUNT)]
    assert got["other"] == []
    assert got["env"] == {
        "LOOPLINE_OPERATOR_SERVER_SERVICE_ACCOUNT": ACCOUNT,
        "LOOPLINE_OPERATOR_SERVER_SERVICE_ACCOUNT_NAMESPACES": json.dumps([NS]),
    }


def test_the_account_mounts_no_token_by_itself() -> None:
    """Only the pods the operator builds for model servers ask for its token."""
    (account,) = [
        d
        for d in documents(render(*KUBERNETES))
        if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == ACCOUNT
    ]
    assert account["automountServiceAccountToken"] is False


def test_namespaced_installs_make_one_account_per_watched_namespace() -> None:
    got = _objects(*KUBERNETES, "--set", "rbac.watchNamespaces={plant,lab}")
    assert got["accounts"] == [("lab", ACCOUNT), ("plant", ACCOUNT)]
    (binding,) = got["bindings"]
    assert _subjects(binding) == [
        ("ServiceAccount", "lab", ACCOUNT),
        ("ServiceAccount", "plant", ACCOUNT),
    ]
    namespaces = json.loads(got["env"]["LOOPLINE_OPERATOR_SERVER_SERVICE_ACCOUNT_NAMESPACES"])
    assert sorted(namespaces) == ["lab", "plant"]


def test_cluster_wide_installs_make_accounts_where_listed() -> None:
    wide = ("--set", "rbac.clusterWide=true")
    assert _objects(*KUBERNETES, *wide)["accounts"] == [(NS, ACCOUNT)]
    got = _objects(*KUBERNETES, *wide, "--set", "modelServer.tokenReview.namespaces={plant}")
    assert got["accounts"] == [("plant", ACCOUNT)]
    (binding,) = got["bindings"]
    assert _subjects(binding) == [("ServiceAccount", "plant", ACCOUNT)]
    assert got["env"]["LOOPLINE_OPERATOR_SERVER_SERVICE_ACCOUNT_NAMESPACES"] == '["plant"]'


@pytest.mark.parametrize(
    "args",
    [
        ["--set", "modelServer.tokenReview.enabled=false"],
        ["--set", "rbac.create=false"],
        ["--set", "operator.enabled=false"],
        ["--set", "backends.serving=local"],
        ["--set", "backends.seldon.enabled=true", "--set", "backends.serving=seldon"],
    ],
    ids=lambda a: " ".join(a),
)
def test_no_grant_without_the_switch_rbac_an_operator_or_kubernetes_serving(
    args: list[str],
) -> None:
    got = _objects(*KUBERNETES, *args)
    assert got == {"accounts": [], "roles": [], "bindings": [], "other": [], "env": {}}


def test_extra_accounts_such_as_seldons_are_bound_to_the_same_role() -> None:
    seldon = (
        "--set",
        "backends.seldon.enabled=true",
        "--set",
        "modelServer.tokenReview.extraServiceAccounts[0].namespace=seldon-mesh",
        "--set",
        "modelServer.tokenReview.extraServiceAccounts[0].name=seldon-server",
    )
    got = _objects(*seldon)
    assert got["accounts"] == []  # Seldon's own account: the chart only binds it
    (role,) = got["roles"]
    assert role["rules"] == RULES
    (binding,) = got["bindings"]
    assert _subjects(binding) == [("ServiceAccount", "seldon-mesh", "seldon-server")]
    assert got["env"] == {}


def test_a_bad_extra_account_is_refused_by_the_schema() -> None:
    with pytest.raises(HelmError) as info:
        render("--set", "modelServer.tokenReview.extraServiceAccounts[0].name=seldon-server")
    assert "/modelServer/tokenReview/extraServiceAccounts/0" in info.value.stderr


@pytest.mark.parametrize("values_file", helm_chart.ci_values_files(), ids=lambda p: p.name)
def test_no_binding_of_the_chart_names_a_group(values_file: Any) -> None:
    for doc in documents(render(values_file=values_file)):
        if doc["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            assert {s["kind"] for s in doc["subjects"]} == {"ServiceAccount"}, doc["metadata"]
