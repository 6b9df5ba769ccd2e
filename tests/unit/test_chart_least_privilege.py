"""The rendered chart grants the least it can: network peers, volumes, RBAC, MLflow access.

NetworkPolicy peers are checked exactly (which namespace, which pods), never "some rule
exists", the drift monitors' too (the operator creates their policies with the peers the chart
hands it); every emptyDir has a size limit; Seldon's RBAC is off by default; MLflow credentials
come from Secret references and the chart refuses to run without them unless told `none`; the
monitors' admission policy is the one in manifests/policies, and their ClusterRole grants one
verb.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import helm_chart
from tests.helm_chart import HelmError, documents, expand_rules, render

VALUES = helm_chart.ci_values_files()
VALUE_IDS = [path.name for path in VALUES]
POLICY_FILE = helm_chart.REPO_ROOT / "manifests" / "policies" / "monitor-retrain-only.yaml"
NS = helm_chart.NAMESPACE
OPERATOR_PODS = {
    "app.kubernetes.io/name": "loopline",
    "app.kubernetes.io/instance": helm_chart.RELEASE,
    "app.kubernetes.io/component": "operator",
}


def _policies(*args: str, values_file: Path | None = None) -> dict[str, dict[str, Any]]:
    docs = documents(render(*args, values_file=values_file))
    return {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d["spec"]
        for d in docs
        if d["kind"] == "NetworkPolicy"
    }


def _monitor_peers(*args: str, values_file: Path | None = None) -> list[dict[str, Any]]:
    """The peers the operator admits to every drift monitor besides the Model's servers."""
    docs = documents(render(*args, values_file=values_file))
    (config,) = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")
    ]
    peers = json.loads(config["data"]["LOOPLINE_OPERATOR_MONITOR_INGRESS_PEERS"])
    assert isinstance(peers, list)
    return peers


def _peer(namespace: str, pods: dict[str, str]) -> dict[str, Any]:
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "podSelector": {"matchLabels": pods},
    }


# ---- NetworkPolicies -------------------------------------------------------------------


def test_by_default_only_the_operator_reaches_the_monitors() -> None:
    """Besides each Model's own model servers (which the operator adds itself), the operator
    and no Prometheus while none is configured."""
    assert _monitor_peers() == [_peer(NS, OPERATOR_PODS)]


def test_prometheus_reaches_the_monitors_once_configured() -> None:
    peers = _monitor_peers("--set", "networkPolicy.prometheus.namespace=monitoring")
    assert peers == [
        _peer(NS, OPERATOR_PODS),
        _peer("monitoring", {"app.kubernetes.io/name": "prometheus"}),
    ]


def test_without_the_operator_no_peer_is_handed_over() -> None:
    assert _monitor_peers("--set", "operator.enabled=false") == []


def _all_peers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [peer for rule in spec.get("ingress") or [] for peer in rule.get("from", [])]


NETWORK_VARIANTS = [
    [],
    ["--set", "backends.seldon.enabled=true"],
    ["--set", "networkPolicy.prometheus.namespace=monitoring"],
    ["--set", "operator.enabled=false"],
]


@pytest.mark.parametrize("args", NETWORK_VARIANTS, ids=lambda a: " ".join(a) or "defaults")
def test_no_peer_selects_every_namespace_or_every_pod(args: list[str]) -> None:
    monitors = {"monitor": {"ingress": [{"from": _monitor_peers(*args)}]}}
    for component, spec in {**_policies(*args), **monitors}.items():
        for rule in spec.get("ingress") or []:
            assert rule.get("from") or component == "monitor", (
                f"{component}: a rule without `from` admits every source"
            )
        for peer in _all_peers(spec):
            names = peer["namespaceSelector"]["matchLabels"]
            assert list(names) == ["kubernetes.io/metadata.name"], (component, peer)
            assert names["kubernetes.io/metadata.name"], (component, peer)
            assert peer["podSelector"]["matchLabels"], (component, peer)
            assert "ipBlock" not in peer


@pytest.mark.parametrize("values_file", VALUES, ids=VALUE_IDS)
def test_ci_values_render_exact_peers(values_file: Path) -> None:
    monitors = {"monitor": {"ingress": [{"from": _monitor_peers(values_file=values_file)}]}}
    for component, spec in {**_policies(values_file=values_file), **monitors}.items():
        for peer in _all_peers(spec):
            assert peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            assert peer["podSelector"]["matchLabels"], component


def test_prometheus_needs_pod_labels() -> None:
    with pytest.raises(HelmError) as info:
        render(
            "--set",
            "networkPolicy.prometheus.namespace=monitoring",
            "--set",
            "networkPolicy.prometheus.podLabels=null",
        )
    assert "/networkPolicy/prometheus" in info.value.stderr


def test_prometheus_pod_labels_may_not_be_empty() -> None:
    """Removing the default label leaves an empty selector, which would admit every pod of
    the namespace: the schema refuses it."""
    with pytest.raises(HelmError) as info:
        render(
            "--set",
            "networkPolicy.prometheus.namespace=monitoring",
            "--set",
            "networkPolicy.prometheus.podLabels.app\\.kubernetes\\.io/name=null",
        )
    assert "at '/networkPolicy/prometheus/podLabels': minProperties" in info.value.stderr


# ---- volumes ---------------------------------------------------------------------------


@pytest.mark.parametrize("values_file", VALUES, ids=VALUE_IDS)
def test_every_empty_dir_has_a_size_limit(values_file: Path) -> None:
    docs = documents(render(values_file=values_file))
    seen = 0
    for workload in (d for d in docs if d["kind"] == "Deployment"):
        for volume in workload["spec"]["template"]["spec"]["volumes"]:
            if "emptyDir" in volume:
                seen += 1
                assert volume["emptyDir"].get("sizeLimit"), (workload["metadata"]["name"], volume)
    assert seen >= 2  # operator tmp + state


def test_state_size_limits_are_values() -> None:
    docs = documents(render("--set", "operator.stateSizeLimit=3Gi"))
    limits = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: {
            v["name"]: v["emptyDir"]["sizeLimit"]
            for v in d["spec"]["template"]["spec"]["volumes"]
            if "emptyDir" in v
        }
        for d in docs
        if d["kind"] == "Deployment"
    }
    assert limits["operator"]["state"] == "3Gi"
    with pytest.raises(HelmError) as info:
        render("--set", "monitor.persistence.size=lots")
    assert "at '/monitor/persistence/size'" in info.value.stderr


# ---- RBAC for optional integrations ----------------------------------------------------


def test_seldon_rbac_is_off_unless_enabled() -> None:
    def seldon_rules(*args: str) -> set[tuple[str, str, str, str]]:
        return {
            p
            for d in documents(render(*args))
            if d["kind"] in ("Role", "ClusterRole")
            for p in expand_rules(d["rules"])
            if p[0] == "mlops.seldon.io"
        }

    assert seldon_rules() == set()
    assert seldon_rules("--set", "backends.seldon.enabled=true")


# ---- MLflow ----------------------------------------------------------------------------


def _env(docs: list[dict[str, Any]], component: str) -> dict[str, dict[str, Any]]:
    (workload,) = [
        d
        for d in docs
        if d["kind"] == "Deployment"
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    container = workload["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container["env"]}


def test_mlflow_credentials_by_default_come_from_a_secret() -> None:
    docs = documents(render())
    for component in ("operator",):
        env = _env(docs, component)
        for name, key in (
            ("MLFLOW_TRACKING_USERNAME", "username"),
            ("MLFLOW_TRACKING_PASSWORD", "password"),
        ):
            assert env[name] == {
                "name": name,
                "valueFrom": {"secretKeyRef": {"name": "loopline-mlflow", "key": key}},
            }
        assert "MLFLOW_TRACKING_TOKEN" not in env


def test_mlflow_token_auth_uses_only_the_token() -> None:
    env = _env(
        documents(
            render(
                "--set",
                "backends.mlflow.auth=token",
                "--set",
                "backends.mlflow.token.secretName=mlflow-token",
            )
        ),
        "operator",
    )
    assert env["MLFLOW_TRACKING_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlflow-token",
        "key": "token",
    }
    assert "MLFLOW_TRACKING_PASSWORD" not in env


def test_mlflow_without_auth_only_when_said() -> None:
    env = _env(documents(render("--set", "backends.mlflow.auth=none")), "operator")
    assert not {
        name
        for name in env
        if name.startswith("MLFLOW_TRACKING_") and name != "MLFLOW_TRACKING_URI"
    }


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            ["backends.mlflow.username.secretName="],
            "backends.mlflow.auth is basic: set backends.mlflow.username.secretName",
        ),
        (
            ["backends.mlflow.auth=token"],
            "backends.mlflow.auth is token: set backends.mlflow.token.secretName",
        ),
        (["backends.mlflow.auth=ldap"], "at '/backends/mlflow/auth': value must be one of"),
    ],
)
def test_mlflow_auth_without_its_secret_is_refused(settings: list[str], message: str) -> None:
    with pytest.raises(HelmError) as info:
        render(*[arg for s in settings for arg in ("--set", s)])
    assert message in info.value.stderr


def test_credentials_in_the_tracking_uri_are_refused_without_echoing_them() -> None:
    sentinel = "s3nt1nel-Pa55w0rd"
    with pytest.raises(HelmError) as info:
        render("--set", f"backends.mlflow.trackingUri=http://admin:{sentinel}@mlflow:5000")
    assert "at '/backends/mlflow/trackingUri'" in info.value.stderr
    assert sentinel not in info.value.stderr


# ---- the monitor's admission policy ----------------------------------------------------


def _by_kind(
    docs: list[dict[str, Any]], kind: str, component: str | None = None
) -> list[dict[str, Any]]:
    """The documents of `kind` (of one component's, by its label, when given)."""
    return [
        d
        for d in docs
        if d["kind"] == kind
        and (
            component is None
            or d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
        )
    ]


def test_monitor_policy_is_the_manifest_under_the_releases_name() -> None:
    """The chart's policy is manifests/policies' as it is: it has no parameter (a binding whose
    parameter object is missing would deny every write to Models)."""
    docs = documents(render())
    (policy,) = _by_kind(docs, "ValidatingAdmissionPolicy", "monitor")
    (binding,) = _by_kind(docs, "ValidatingAdmissionPolicyBinding", "monitor")
    source = yaml.safe_load(POLICY_FILE.read_text())["spec"]
    assert policy["spec"] == source
    assert "paramKind" not in source
    assert "params." not in yaml.safe_dump(source)
    assert policy["metadata"]["name"] == "loopline-monitor-retrain-only"
    assert "namespace" not in policy["metadata"]
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }


def test_monitor_policy_matches_the_service_accounts_the_operator_creates() -> None:
    """The policy holds the ServiceAccounts named like the operator's monitor accounts, and
    compares the Model of the request with the one the account's name carries."""
    from loopline.operators.builders.kube_monitoring import ACCOUNT_SUFFIX, account_name

    source = yaml.safe_load(POLICY_FILE.read_text())["spec"]
    assert account_name("drill-ae") == "drill-ae" + ACCOUNT_SUFFIX
    (condition,) = source["matchConditions"]
    assert f"endsWith('{ACCOUNT_SUFFIX}')" in condition["expression"]
    assert any(
        f"request.name + '{ACCOUNT_SUFFIX}'" in " ".join(v["expression"].split())
        for v in source["validations"]
    )


def test_monitor_cluster_role_grants_patch_on_models_only_and_the_operator_is_told_its_name() -> (
    None
):
    docs = documents(render())
    (role,) = [
        d for d in _by_kind(docs, "ClusterRole") if d["metadata"]["name"].endswith("monitor")
    ]
    assert role["rules"] == [
        {"apiGroups": ["loopline.dev"], "resources": ["models"], "verbs": ["patch"]}
    ]
    (config,) = [d for d in _by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("config")]
    assert config["data"]["LOOPLINE_OPERATOR_MONITOR_CLUSTER_ROLE"] == role["metadata"]["name"]
    bindings = _by_kind(docs, "RoleBinding") + _by_kind(docs, "ClusterRoleBinding")
    assert not [b for b in bindings if b["roleRef"]["name"] == role["metadata"]["name"]]


def test_plain_manifest_binding_names_the_policy_and_no_parameter() -> None:
    docs = helm_chart.manifest_documents(POLICY_FILE.parent)
    (policy,) = _by_kind(docs, "ValidatingAdmissionPolicy")
    (binding,) = _by_kind(docs, "ValidatingAdmissionPolicyBinding")
    (role,) = _by_kind(docs, "ClusterRole")
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    assert role["metadata"]["name"] == "loopline-monitor"  # the operator's default
    assert role["rules"] == [
        {"apiGroups": ["loopline.dev"], "resources": ["models"], "verbs": ["patch"]}
    ]


def test_monitor_policy_covers_models_and_their_subresources_for_every_operation() -> None:
    source = yaml.safe_load(POLICY_FILE.read_text())
    (rule,) = source["spec"]["matchConstraints"]["resourceRules"]
    assert rule["apiGroups"] == ["loopline.dev"]
    assert rule["operations"] == ["*"]
    assert set(rule["resources"]) == {"models", "models/*"}
    assert source["spec"]["failurePolicy"] == "Fail"
    for validation in source["spec"]["validations"]:
        assert validation["reason"] == "Forbidden"


def test_monitor_policy_can_be_turned_off() -> None:
    docs = documents(render("--set", "monitor.admissionPolicy.enabled=false"))
    assert not _by_kind(docs, "ValidatingAdmissionPolicy", "monitor")
    assert not _by_kind(docs, "ValidatingAdmissionPolicyBinding", "monitor")
    assert _by_kind(docs, "ValidatingAdmissionPolicy", "operator")  # approvals keep theirs


def test_approval_policy_and_approver_role_are_the_manifests_under_the_releases_name() -> None:
    """What people who approve may do, and the check of their name, as manifests/ has them."""
    root = POLICY_FILE.parents[1]
    docs = documents(render())
    (policy,) = _by_kind(docs, "ValidatingAdmissionPolicy", "operator")
    (binding,) = _by_kind(docs, "ValidatingAdmissionPolicyBinding", "operator")
    source = yaml.safe_load((root / "policies" / "approval" / "model-approval.yaml").read_text())
    assert policy["spec"] == source["spec"]
    # Not the plain manifest's name, which the local cluster applies: a release would collide.
    assert policy["metadata"]["name"] == "loopline-approval-identity"
    assert binding["spec"] == {
        "policyName": "loopline-approval-identity",
        "validationActions": ["Deny"],
    }
    (role,) = _by_kind(docs, "ClusterRole", "approver")
    approver = yaml.safe_load((root / "rbac" / "approver.yaml").read_text())
    assert role["rules"] == approver["rules"]
    verbs = {v for rule in role["rules"] for v in rule["verbs"]}
    assert not verbs & {"patch", "update", "delete", "deletecollection"}  # decides, edits nothing
    off = documents(
        render(
            "--set",
            "approval.admissionPolicy.enabled=false",
            "--set",
            "approval.approverRole.create=false",
        )
    )
    assert not _by_kind(off, "ValidatingAdmissionPolicy", "operator")
    assert not _by_kind(off, "ClusterRole", "approver")


def test_monitor_policy_allows_exactly_the_annotations_the_monitor_writes() -> None:
    """The policy's list is the annotations of the monitor's retraining patch."""
    from loopline.monitoring.decision import RetrainRequest
    from loopline.monitoring.retrain import build_retrain_patch

    source = yaml.safe_load(POLICY_FILE.read_text())
    (keys,) = [v["expression"] for v in source["spec"]["variables"] if v["name"] == "retrainKeys"]
    allowed = set(yaml.safe_load(keys.replace("'", '"')))
    request = RetrainRequest(
        request_id="r1",
        model="drill-ae",
        namespace="default",
        features=["f"],
        p_values={"f": 0.0},
        window_end="2026-01-01T00:00:00+00:00",
    )
    patch = build_retrain_patch(request)
    assert list(patch) == ["metadata"]
    assert list(patch["metadata"]) == ["annotations"]
    assert set(patch["metadata"]["annotations"]) == allowed
