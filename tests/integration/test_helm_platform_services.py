"""`helm install` of the chart's MLflow and Feast claim into the local control plane (kwok's
fake node: no image is pulled and nothing runs, so what is checked is the API server's side).

The API server validates every object server-side (schema, Pod Security admission on the
namespace), the claims bind on the local cluster's default StorageClass (its hostPath
provisioner), and the Deployments become available. The real server is exercised on the real
node, where the closed loop runs on it (tests/realnode/test_demo_on_node.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import helm_chart
from tests.fixtures.cluster import ClusterHandle, wait_for
from tests.integration.test_helm_install import Release, _release

LOCAL_VALUES = helm_chart.CHART_DIR / "values-local.yaml"


@pytest.fixture
def release(cluster: ClusterHandle, namespace: str, tmp_path: Path) -> Iterator[Release]:
    with _release(cluster, namespace, tmp_path, "ll") as installed:
        yield installed


def _get(release: Release, kind: str, name: str) -> dict[str, Any]:
    out = release.cluster.kubectl(
        "get", kind, name, f"--namespace={release.namespace}", "-o", "json"
    ).stdout
    return dict(json.loads(out))


def _wait_bound(release: Release, claim: str) -> dict[str, Any]:
    return wait_for(
        lambda: (pvc := _get(release, "pvc", claim))["status"].get("phase") == "Bound" and pvc,
        timeout=60,
        what=f"claim {claim} Bound",
    )


def test_mlflow_and_feast_claim_install_under_restricted(release: Release) -> None:
    """Without volumePermissions (a CSI StorageClass honours fsGroup) every pod passes the
    `restricted` Pod Security Standard the namespace enforces."""
    release.install(
        "mlflow.enabled=true",
        "backends.mlflow.auth=none",
        "feast.enabled=true",
        "backends.kfp.enabled=false",
        "mlflow.persistence.size=1Gi",
        "feast.persistence.size=1Gi",
    )
    for claim in ("ll-loopline-mlflow", "ll-loopline-feast"):
        pvc = _wait_bound(release, claim)
        volume = _get(release, "pv", pvc["spec"]["volumeName"])
        assert volume["spec"]["storageClassName"] == "loopline-hostpath"
        assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    mlflow = _get(release, "deployment", "ll-loopline-mlflow")
    assert mlflow["status"]["availableReplicas"] == 1
    service = _get(release, "service", "ll-loopline-mlflow")
    assert service["spec"]["clusterIP"]
    config = _get(release, "configmap", "ll-loopline-config")["data"]
    uri = f"http://ll-loopline-mlflow.{release.namespace}.svc:5000"
    assert config["LOOPLINE_OPERATOR_CLUSTER_TRACKING_URI"] == uri
    policy = _get(release, "networkpolicy", "ll-loopline-mlflow")
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    # helm uninstall (the fixture's) leaves the claims: the runs and features outlive it.


def test_local_values_need_baseline_and_install_there(
    release: Release, cluster: ClusterHandle
) -> None:
    """values-local.yaml chowns the hostPath volumes with a root init container: `restricted`
    refuses it (as the docs say), `baseline` admits it."""
    ns = release.namespace
    files = ["--values", str(LOCAL_VALUES)]
    # Helm's server-side dry run creates no pods, so the pod template goes to the API
    # server's own dry run.
    rendered = helm_chart.documents(
        helm_chart.render("--values", str(LOCAL_VALUES), "--namespace", ns)
    )
    (deployment,) = [
        d
        for d in rendered
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-mlflow")
    ]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "mlflow-probe", "namespace": ns},
        "spec": deployment["spec"]["template"]["spec"],
    }
    dry = cluster.kubectl(
        "create",
        "--dry-run=server",
        "-f",
        "-",
        f"--namespace={ns}",
        input=json.dumps(pod),
        check=False,
    )
    assert dry.returncode != 0
    assert "violates PodSecurity" in dry.stderr
    assert "volume-permissions" in dry.stderr

    cluster.kubectl(
        "label", "namespace", ns, "--overwrite", "pod-security.kubernetes.io/enforce=baseline"
    )
    release.helm(
        "install",
        release.name,
        str(helm_chart.CHART_DIR),
        f"--namespace={ns}",
        "--wait",
        "--timeout=300s",
        *files,
    )
    for claim in ("ll-loopline-mlflow", "ll-loopline-feast"):
        pvc = _wait_bound(release, claim)
        assert "annotations" not in pvc["metadata"] or (
            "helm.sh/resource-policy" not in pvc["metadata"]["annotations"]
        )
    for name in ("ll-loopline-mlflow", "ll-loopline-operator"):
        deployment = _get(release, "deployment", name)
        assert deployment["status"]["availableReplicas"] == 1, name
        init = deployment["spec"]["template"]["spec"]["initContainers"]
        assert init[0]["name"] == "volume-permissions"
