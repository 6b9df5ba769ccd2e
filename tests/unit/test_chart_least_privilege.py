"""The rendered chart grants the least it can: network peers, volumes, RBAC, MLflow access.

NetworkPolicy peers are checked exactly (which namespace, which pods), never "some rule
exists"; every emptyDir has a size limit; Seldon's RBAC is off by default; MLflow credentials
come from Secret references and the chart refuses to run without them unless told `none`; the
monitor's admission policy is the one in manifests/policies, bound to the monitor and its
Model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from loopline.operators.backends.seldon import server_name
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


def _monitor_peers(*args: str) -> list[dict[str, Any]]:
    (rule,) = _policies(*args)["monitor"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    peers = rule["from"]
    assert isinstance(peers, list)
    return peers


def _peer(namespace: str, pods: dict[str, str]) -> dict[str, Any]:
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "podSelector": {"matchLabels": pods},
    }


# ---- NetworkPolicies -------------------------------------------------------------------


def test_by_default_only_the_operator_reaches_the_monitor() -> None:
    """Defaults: local serving (model servers are processes of the operator pod) and no
    Prometheus namespace configured, so the one peer is the operator."""
    assert _monitor_peers() == [_peer(NS, OPERATOR_PODS)]


def test_with_seldon_the_models_server_pods_and_prometheus_reach_the_monitor() -> None:
    peers = _monitor_peers(
        "--set",
        "backends.seldon.enabled=true",
        "--set",
        "backends.seldon.namespace=seldon-mesh",
        "--set",
        "monitor.model.name=drill-ae",
        "--set",
        "networkPolicy.prometheus.namespace=monitoring",
    )
    assert peers == [
        _peer(NS, OPERATOR_PODS),
        # the label Seldon puts on a Server's pods, for the Server the operator creates
        _peer("seldon-mesh", {"seldon-server-name": server_name("drill-ae")}),
        _peer("monitoring", {"app.kubernetes.io/name": "prometheus"}),
    ]


def test_model_servers_default_to_the_models_namespace_and_can_be_named() -> None:
    peers = _monitor_peers(
        "--set", "backends.seldon.enabled=true", "--set", "monitor.model.namespace=plant-a"
    )
    assert peers[1] == _peer("plant-a", {"seldon-server-name": server_name("drill-ae")})
    peers = _monitor_peers(
        "--set",
        "networkPolicy.modelServers.namespace=serving",
        "--set",
        "networkPolicy.modelServers.podLabels.app=my-server",
    )
    assert peers[1] == _peer("serving", {"app": "my-server"})


def test_no_peer_means_no_ingress_not_every_source() -> None:
    """Without the operator, Seldon or Prometheus there is nobody to admit: `ingress: []`
    (an empty `from` would admit everything)."""
    policies = _policies("--set", "operator.enabled=false")
    assert policies["monitor"]["ingress"] == []


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
    for component, spec in _policies(*args).items():
        for rule in spec.get("ingress") or []:
            assert rule.get("from"), f"{component}: a rule without `from` admits every source"
        for peer in _all_peers(spec):
            names = peer["namespaceSelector"]["matchLabels"]
            assert list(names) == ["kubernetes.io/metadata.name"], (component, peer)
            assert names["kubernetes.io/metadata.name"], (component, peer)
            assert peer["podSelector"]["matchLabels"], (component, peer)
            assert "ipBlock" not in peer


@pytest.mark.parametrize("values_file", VALUES, ids=VALUE_IDS)
def test_ci_values_render_exact_peers(values_file: Path) -> None:
    for component, spec in _policies(values_file=values_file).items():
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
    assert seen >= 3  # operator tmp + state, monitor tmp (+ state without persistence)


def test_state_size_limits_are_values() -> None:
    docs = documents(
        render("--set", "operator.stateSizeLimit=3Gi", "--set", "monitor.stateSizeLimit=512Mi")
    )
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
    assert limits["monitor"]["state"] == "512Mi"
    with pytest.raises(HelmError) as info:
        render("--set", "monitor.stateSizeLimit=lots")
    assert "at '/monitor/stateSizeLimit'" in info.value.stderr


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
    for component in ("operator", "monitor"):
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
    env = _env(documents(render("--set", "backends.mlflow.auth=none")), "monitor")
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


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_monitor_policy_is_the_manifest_with_the_monitor_and_its_model_filled_in() -> None:
    """The chart's policy is manifests/policies' with its three parameters written into the
    expressions, and no parameter object: a binding whose parameter is missing would deny
    every write to Models."""
    docs = documents(
        render("--set", "monitor.model.name=fault-cls", "--set", "monitor.model.namespace=plant-a")
    )
    (policy,) = _by_kind(docs, "ValidatingAdmissionPolicy")
    (binding,) = _by_kind(docs, "ValidatingAdmissionPolicyBinding")
    (monitor_sa,) = [
        d for d in _by_kind(docs, "ServiceAccount") if d["metadata"]["name"].endswith("-monitor")
    ]
    source = yaml.safe_load(POLICY_FILE.read_text())["spec"]
    params = {
        "params.data.serviceAccount": f"'system:serviceaccount:{NS}:{monitor_sa['metadata']['name']}'",
        "params.data.namespace": "'plant-a'",
        "params.data.model": "'fault-cls'",
    }
    want = dict(source)
    del want["paramKind"]
    for field in ("matchConditions", "variables", "validations"):
        items = []
        for item in source[field]:
            expression = item["expression"]
            for param, value in params.items():
                expression = expression.replace(param, value)
            items.append({**item, "expression": expression})
        want[field] = items
    assert policy["spec"] == want
    assert "params." not in yaml.safe_dump(policy)
    assert policy["metadata"]["name"] == "loopline-monitor-retrain-only"
    assert "namespace" not in policy["metadata"]
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }


def test_plain_manifest_binding_names_the_policy_and_its_parameter() -> None:
    docs = helm_chart.manifest_documents(POLICY_FILE.parent)
    (policy,) = _by_kind(docs, "ValidatingAdmissionPolicy")
    (binding,) = _by_kind(docs, "ValidatingAdmissionPolicyBinding")
    (params,) = _by_kind(docs, "ConfigMap")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    ref = binding["spec"]["paramRef"]
    assert (ref["name"], ref["namespace"]) == (
        params["metadata"]["name"],
        params["metadata"]["namespace"],
    )
    assert set(params["data"]) == {"serviceAccount", "namespace", "model"}


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
    assert not _by_kind(docs, "ValidatingAdmissionPolicy")
    assert not _by_kind(docs, "ValidatingAdmissionPolicyBinding")


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
