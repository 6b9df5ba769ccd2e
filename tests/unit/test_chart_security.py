"""Hardening of every pod the chart renders, and credentials only by Secret reference."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.helm_chart import (
    CI_VALUES_DIR,
    NAMESPACE,
    HelmError,
    ci_values_files,
    documents,
    render,
)

VALUES = ci_values_files()
VALUE_IDS = [path.name for path in VALUES]
DEFAULT_VALUES = CI_VALUES_DIR / "default-values.yaml"
CREDENTIAL_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|_KEY", re.IGNORECASE)


def _workloads(values_file: Path) -> list[dict[str, Any]]:
    docs = documents(render(values_file=values_file))
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]
    assert workloads, "the chart rendered no workload"
    return workloads


def _assert_hardened_container(container: dict[str, Any], where: str) -> None:
    ctx = container["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True, where
    assert ctx["allowPrivilegeEscalation"] is False, where
    assert ctx["capabilities"]["drop"] == ["ALL"], where
    assert ctx.get("privileged") is not True, where
    assert ctx["seccompProfile"]["type"] == "RuntimeDefault", where
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]), where
    assert "memory" in resources["limits"], where
    if container["name"] == "volume-permissions":
        # The one root container (volumePermissions.enabled): chown of one volume, with
        # CAP_CHOWN and nothing else.
        assert ctx["runAsUser"] == 0, where
        assert ctx["capabilities"]["add"] == ["CHOWN"], where
        assert container["command"][:2] == ["chown", "10001:10001"], where
        assert len(container["command"]) == 3, where
    else:
        assert not ctx["capabilities"].get("add"), where
        assert ctx.get("runAsUser", 10001) != 0, where


@pytest.mark.parametrize("values_file", VALUES, ids=VALUE_IDS)
def test_every_pod_is_hardened(values_file: Path) -> None:
    for workload in _workloads(values_file):
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod.get("hostNetwork") is not True, name
        assert pod.get("hostPID") is not True, name
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod.get("initContainers", []):
            where = f"{name}/{container['name']}"
            _assert_hardened_container(container, where)
        for container in pod["containers"]:
            where = f"{name}/{container['name']}"
            _assert_hardened_container(container, where)
            assert container["securityContext"]["runAsNonRoot"] is not False, where
            assert container["livenessProbe"], where
            assert container["readinessProbe"], where
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp must be an emptyDir"


def test_operator_liveness_probe_is_kopfs_endpoint() -> None:
    (operator,) = [
        w for w in _workloads(DEFAULT_VALUES) if w["metadata"]["name"].endswith("-operator")
    ]
    container = operator["spec"]["template"]["spec"]["containers"][0]
    port = container["ports"][0]
    assert f"--liveness=http://0.0.0.0:{port['containerPort']}/healthz" in container["args"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    # Two operators must never run at once: one replica, and no surge during upgrades.
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize("values_file", VALUES, ids=VALUE_IDS)
def test_credentials_only_from_secret_references(values_file: Path) -> None:
    """Every environment variable that looks like a credential is a secretKeyRef."""
    for workload in _workloads(values_file):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                if CREDENTIAL_NAME.search(env["name"]):
                    assert "value" not in env, f"{env['name']} has a literal value"
                    assert "secretKeyRef" in env["valueFrom"], env


INLINE_CREDENTIALS = [
    "backends.mlflow.password={}",
    "backends.mlflow.token.value={}",
    "extraSecretEnv[0].value={}",
    "operator.extraEnv[0].name=X,operator.extraEnv[0].valueFrom={}",
]


@pytest.mark.parametrize("template", INLINE_CREDENTIALS)
def test_inline_credentials_are_refused_without_echoing_them(template: str) -> None:
    """The only way in for a credential is a Secret reference; a literal is an error, and
    the error does not repeat the value (it may end up in CI logs)."""
    sentinel = "s3nt1nel-Pa55w0rd"
    with pytest.raises(HelmError) as info:
        render("--set", template.format(sentinel))
    assert "values don't meet the specifications of the schema" in info.value.stderr
    assert sentinel not in info.value.stderr


def test_service_account_tokens_mounted_only_where_used() -> None:
    docs = documents(render(values_file=DEFAULT_VALUES))
    for sa in (d for d in docs if d["kind"] == "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False
    for workload in _workloads(DEFAULT_VALUES):
        pod = workload["spec"]["template"]["spec"]
        # The operator talks to the Kubernetes API (the drift monitors are its own pods).
        assert pod["automountServiceAccountToken"] is True
        assert pod["enableServiceLinks"] is False


def _policies(*args: str) -> dict[str, dict[str, Any]]:
    docs = documents(render(*args))
    return {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d["spec"]
        for d in docs
        if d["kind"] == "NetworkPolicy"
    }


def test_network_policies_admit_only_what_each_component_serves() -> None:
    policies = _policies()
    assert policies["operator"]["policyTypes"] == ["Ingress"]
    assert policies["operator"]["ingress"] == []  # probes come from the node
    assert set(policies) == {"operator"}  # each drift monitor's is the operator's to create
    for spec in policies.values():
        assert "egress" not in spec


def test_restricted_egress_allows_dns_the_api_server_and_listed_peers() -> None:
    policies = _policies(
        "--set",
        "networkPolicy.egress.restrict=true",
        "--set",
        "networkPolicy.egress.apiServerCIDRs={10.96.0.1/32}",
        "--set",
        "networkPolicy.egress.to[0].ports[0].port=5000",
    )
    for spec in policies.values():
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        dns, api, mlflow, monitors = spec["egress"]
        assert {p["port"] for p in dns["ports"]} == {53}
        assert api["to"] == [{"ipBlock": {"cidr": "10.96.0.1/32"}}]
        assert mlflow == {"ports": [{"port": 5000}]}
        # the operator reads the drift monitors' status, in the namespace it serves
        assert monitors == {
            "to": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}
                    },
                    "podSelector": {
                        "matchLabels": {
                            "app.kubernetes.io/managed-by": "loopline",
                            "loopline.dev/component": "monitor",
                        }
                    },
                }
            ],
            "ports": [{"port": 8090, "protocol": "TCP"}],
        }


def test_network_policies_can_be_turned_off() -> None:
    assert _policies("--set", "networkPolicy.enabled=false") == {}


def _property_paths(schema: dict[str, Any], path: str = "") -> list[str]:
    """Every property path of an OpenAPI schema (objects, arrays, maps)."""
    paths: list[str] = []
    for name, sub in (schema.get("properties") or {}).items():
        paths.append(f"{path}.{name}")
        paths.extend(_property_paths(sub, f"{path}.{name}"))
    if isinstance(schema.get("items"), dict):
        paths.extend(_property_paths(schema["items"], f"{path}[]"))
    if isinstance(schema.get("additionalProperties"), dict):
        paths.extend(_property_paths(schema["additionalProperties"], f"{path}.*"))
    return paths


def test_no_credential_field_in_the_resources_the_chart_installs() -> None:
    """A Model or Pipeline spec has nowhere to put a password: credentials belong to the
    operator's Secrets, never to objects every reader of the namespace can see."""
    credential = re.compile(r"password|passwd|secret|token|credential|apikey|api_key", re.I)
    crds = [
        d for d in documents(render("--include-crds")) if d["kind"] == "CustomResourceDefinition"
    ]
    assert crds
    for crd in crds:
        for version in crd["spec"]["versions"]:
            paths = _property_paths(version["schema"]["openAPIV3Schema"])
            assert paths, crd["metadata"]["name"]
            leaked = [p for p in paths if credential.search(p.rsplit(".", 1)[-1])]
            assert not leaked, f"{crd['metadata']['name']} {version['name']}: {leaked}"
