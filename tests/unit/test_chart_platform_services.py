"""The chart's own MLflow and Feast volume (mlflow.enabled, feast.enabled) and the operator's
cluster-backend settings, rendered with the project-built helm (no cluster).

MLflow's own code judges what the chart hands it: its CLI parses the server's arguments and
its host check (against DNS rebinding) is asked whether the names the pods use pass.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helm_chart import CHART_DIR, NAMESPACE, REPO_ROOT, HelmError, documents, render

MLFLOW_ON = ("--set", "mlflow.enabled=true", "--set", "backends.mlflow.auth=none")
SERVICE_URI = f"http://loopline-mlflow.{NAMESPACE}.svc:5000"
LOCAL_VALUES = CHART_DIR / "values-local.yaml"


def _docs(*args: str, values_file: Path | None = None) -> list[dict[str, Any]]:
    return documents(render(*args, values_file=values_file))


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _config(docs: list[dict[str, Any]]) -> dict[str, str]:
    return dict(_one(docs, "ConfigMap", "loopline-config")["data"])


def _operator_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    pod = _one(docs, "Deployment", "loopline-operator")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = _config(docs)
    env.update({e["name"]: e["value"] for e in container["env"] if "value" in e})
    return env


def _component(docs: list[dict[str, Any]], component: str) -> list[dict[str, Any]]:
    return [
        d
        for d in docs
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]


def test_nothing_of_mlflow_or_feast_by_default() -> None:
    docs = _docs()
    assert _component(docs, "mlflow") == []
    assert _component(docs, "feast") == []
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    pod = _one(docs, "Deployment", "loopline-operator")["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    env = _operator_env(docs)
    assert env["LOOPLINE_MLFLOW_TRACKING_URI"] == "http://mlflow.mlflow.svc:5000"
    assert "LOOPLINE_OPERATOR_CLUSTER_TRACKING_URI" not in env
    assert env["LOOPLINE_OPERATOR_FEATURE_REPO"] == "/opt/loopline/feature_repo"


def test_chart_mlflow_needs_auth_none_said_out_loud() -> None:
    """The chart's MLflow checks no credentials, so the chart will not pretend it does."""
    with pytest.raises(HelmError) as info:
        render("--set", "mlflow.enabled=true")
    assert "set backends.mlflow.auth=none" in info.value.stderr
    assert "auth is basic" in info.value.stderr


def test_mlflow_server_objects() -> None:
    docs = _docs(*MLFLOW_ON)
    kinds = sorted(d["kind"] for d in _component(docs, "mlflow"))
    assert kinds == ["Deployment", "NetworkPolicy", "PersistentVolumeClaim", "Service"]
    deployment = _one(docs, "Deployment", "loopline-mlflow")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert "initContainers" not in pod  # volumePermissions is off by default
    (container,) = pod["containers"]
    assert container["image"] == "loopline/runtime:0.1.0"
    assert container["command"] == ["mlflow", "server"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    assert container["ports"] == [{"name": "http", "containerPort": 5000, "protocol": "TCP"}]

    claim = _one(docs, "PersistentVolumeClaim", "loopline-mlflow")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert "storageClassName" not in claim["spec"]  # the cluster's default
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    (data,) = [v for v in pod["volumes"] if v["name"] == "data"]
    assert data["persistentVolumeClaim"]["claimName"] == "loopline-mlflow"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    args = container["args"]
    assert f"--backend-store-uri=sqlite:///{mounts['data']}/mlflow.db" in args
    assert f"--artifacts-destination={mounts['data']}/artifacts" in args
    assert "--serve-artifacts" in args

    service = _one(docs, "Service", "loopline-mlflow")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 5000, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_mlflow_arguments_parse_with_mlflows_own_cli() -> None:
    from mlflow.cli import server

    (container,) = _one(_docs(*MLFLOW_ON), "Deployment", "loopline-mlflow")["spec"]["template"][
        "spec"
    ]["containers"]
    context = server.make_context("server", list(container["args"]))
    assert context.params["serve_artifacts"] is True
    assert context.params["workers"] == "1"
    assert context.params["host"] == "0.0.0.0"


def _allowed_hosts(docs: list[dict[str, Any]]) -> list[str]:
    (container,) = _one(docs, "Deployment", "loopline-mlflow")["spec"]["template"]["spec"][
        "containers"
    ]
    (arg,) = [a for a in container["args"] if a.startswith("--allowed-hosts=")]
    return arg.removeprefix("--allowed-hosts=").split(",")


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        (f"loopline-mlflow.{NAMESPACE}.svc:5000", True),  # the URI every pod is given
        (f"loopline-mlflow.{NAMESPACE}.svc.cluster.local:5000", True),
        ("loopline-mlflow:5000", True),
        ("127.0.0.1:41234", True),  # a port-forward
        ("localhost:41234", True),
        ("10.96.0.17:5000", True),  # the ClusterIP
        ("172.20.3.4:5000", True),
        ("mlflow.example.com", True),  # mlflow.allowedHosts below
        ("172.32.0.1:5000", False),
        ("evil.example.net", False),
        (f"other.{NAMESPACE}.svc:5000", False),
    ],
)
def test_mlflow_accepts_the_host_names_its_clients_use(host: str, allowed: bool) -> None:
    """MLflow refuses requests whose Host header it does not know; the chart's list must
    let the Service's names, port-forwards and the ClusterIP through, and nothing else."""
    from mlflow.server.security_utils import is_allowed_host_header

    hosts = _allowed_hosts(_docs(*MLFLOW_ON, "--set", "mlflow.allowedHosts={mlflow.example.com}"))
    assert is_allowed_host_header(hosts, host) is allowed


def test_operator_and_its_pods_use_the_chart_mlflow() -> None:
    docs = _docs(*MLFLOW_ON, "--set", "backends.mlflow.trackingUri=http://elsewhere:5000")
    env = _operator_env(docs)
    assert env["LOOPLINE_MLFLOW_TRACKING_URI"] == SERVICE_URI
    assert env["MLFLOW_TRACKING_URI"] == SERVICE_URI
    assert env["LOOPLINE_OPERATOR_CLUSTER_TRACKING_URI"] == SERVICE_URI
    # The drift monitors are the operator's per-Model pods: they get the cluster URI above.
    assert not [d for d in docs if d["kind"] == "Deployment" and "monitor" in d["metadata"]["name"]]


def test_external_mlflow_cluster_uri_is_passed_on() -> None:
    docs = _docs("--set", "backends.mlflow.clusterTrackingUri=http://mlflow.internal:5000")
    env = _operator_env(docs)
    assert env["LOOPLINE_MLFLOW_TRACKING_URI"] == "http://mlflow.mlflow.svc:5000"
    assert env["LOOPLINE_OPERATOR_CLUSTER_TRACKING_URI"] == "http://mlflow.internal:5000"


def test_mlflow_network_policy_admits_loopline_pods_only() -> None:
    docs = _docs(*MLFLOW_ON, "--set", "rbac.watchNamespaces={plant-a,plant-b}")
    spec = _one(docs, "NetworkPolicy", "loopline-mlflow")["spec"]
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    chart_pods, *operator_children = rule["from"]
    assert chart_pods["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}
    }
    assert chart_pods["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "loopline"
    assert [p["namespaceSelector"]["matchLabels"] for p in operator_children] == [
        {"kubernetes.io/metadata.name": "plant-a"},
        {"kubernetes.io/metadata.name": "plant-b"},
    ]
    for peer in operator_children:
        assert peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/managed-by": "loopline"}}
    for peer in rule["from"]:
        assert peer["podSelector"], "an empty pod selector admits every pod"

    wide = _one(
        _docs(*MLFLOW_ON, "--set", "rbac.clusterWide=true"), "NetworkPolicy", "loopline-mlflow"
    )
    everywhere = wide["spec"]["ingress"][0]["from"][1]
    assert everywhere["namespaceSelector"] == {
        "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "Exists"}]
    }
    assert everywhere["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/managed-by": "loopline"}
    }

    extra = _docs(
        *MLFLOW_ON, "--set", "mlflow.extraIngressFrom[0].podSelector.matchLabels.app=notebook"
    )
    peers = _one(extra, "NetworkPolicy", "loopline-mlflow")["spec"]["ingress"][0]["from"]
    assert peers[-1] == {"podSelector": {"matchLabels": {"app": "notebook"}}}
    with pytest.raises(HelmError):
        render(*MLFLOW_ON, "--set", "mlflow.extraIngressFrom[0]=null")
    without = _component(_docs(*MLFLOW_ON, "--set", "networkPolicy.enabled=false"), "mlflow")
    assert "NetworkPolicy" not in {d["kind"] for d in without}


def test_storage_class_and_volume_permissions() -> None:
    docs = _docs(
        *MLFLOW_ON,
        "--set",
        "feast.enabled=true",
        "--set",
        "storageClass=fast-ssd",
        "--set",
        "volumePermissions.enabled=true",
        "--set",
        "mlflow.persistence.keepOnUninstall=false",
    )
    claims = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert set(claims) == {"loopline-mlflow", "loopline-feast"}
    for claim in claims.values():
        assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert "annotations" not in claims["loopline-mlflow"]["metadata"]
    env = _config(docs)
    assert env["LOOPLINE_OPERATOR_STORAGE_CLASS"] == "fast-ssd"
    assert env["LOOPLINE_OPERATOR_VOLUME_PERMISSIONS_INIT"] == "true"
    for name, volume in (("loopline-mlflow", "data"), ("loopline-operator", "feast-repo")):
        pod = _one(docs, "Deployment", name)["spec"]["template"]["spec"]
        first = pod["initContainers"][0]
        assert first["name"] == "volume-permissions", name
        (mount,) = first["volumeMounts"]
        assert mount["name"] == volume
        assert first["command"] == ["chown", "10001:10001", mount["mountPath"]]
        main_mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert main_mounts[volume] == mount["mountPath"], name


def test_feast_repository_on_a_claim_the_operator_mounts() -> None:
    docs = _docs("--set", "feast.enabled=true")
    claim = _one(docs, "PersistentVolumeClaim", "loopline-feast")
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    pod = _one(docs, "Deployment", "loopline-operator")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "feast-repo"]
    assert volume["persistentVolumeClaim"]["claimName"] == "loopline-feast"
    (seed,) = pod["initContainers"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert {m["name"]: m["mountPath"] for m in seed["volumeMounts"]} == {
        "feast-repo": mounts["feast-repo"]
    }
    repo = _operator_env(docs)["LOOPLINE_OPERATOR_FEATURE_REPO"]
    assert repo.startswith(mounts["feast-repo"] + "/")
    assert f"repo={repo}" in seed["command"][-1]


def test_feast_needs_the_operator() -> None:
    with pytest.raises(HelmError) as info:
        render("--set", "feast.enabled=true", "--set", "operator.enabled=false")
    assert "needs operator.enabled" in info.value.stderr


def _seed_script(*args: str) -> str:
    pod = _one(_docs("--set", "feast.enabled=true", *args), "Deployment", "loopline-operator")
    (seed,) = [
        c for c in pod["spec"]["template"]["spec"]["initContainers"] if c["name"] == "feast-repo"
    ]
    assert seed["command"][:2] == ["sh", "-ec"]
    return str(seed["command"][2])


def test_feast_seed_script_makes_a_repository_and_keeps_your_data(tmp_path: Path) -> None:
    """The init container's script, run by sh on a copy of the image's paths: a fresh volume
    gets the repository; a second start refreshes the definitions and the store config but
    keeps repo.json, which `loopline data register` rewrites for your own data."""
    image_repo = tmp_path / "image" / "feature_repo"
    shutil.copytree(REPO_ROOT / "feature_repo", image_repo)
    volume = tmp_path / "volume"
    volume.mkdir()
    script = (
        _seed_script()
        .replace("/opt/loopline/feature_repo", str(image_repo))
        .replace("/var/lib/loopline-feast", str(volume))
    )
    subprocess.run(["sh", "-ec", script], check=True, timeout=30)
    repo = volume / "feature_repo"
    assert sorted(p.name for p in repo.iterdir()) == [
        "data",
        "definitions.py",
        "feature_store.yaml",
        "repo.json",
    ]
    assert (repo / "repo.json").read_bytes() == (image_repo / "repo.json").read_bytes()
    (repo / "repo.json").write_text(json.dumps({"yours": True}))
    (image_repo / "feature_store.yaml").write_text("project: newer\n")
    subprocess.run(["sh", "-ec", script], check=True, timeout=30)
    assert json.loads((repo / "repo.json").read_text()) == {"yours": True}
    assert (repo / "feature_store.yaml").read_text() == "project: newer\n"


def test_feast_store_config_override_reaches_the_seed() -> None:
    docs = _docs("--set", "feast.enabled=true", "--set", "backends.feast.featureStoreYaml=x: 1")
    pod = _one(docs, "Deployment", "loopline-operator")["spec"]["template"]["spec"]
    (seed,) = [c for c in pod["initContainers"] if c["name"] == "feast-repo"]
    overlay = {m["mountPath"]: m for m in seed["volumeMounts"]}
    assert overlay["/opt/loopline/feature_repo/feature_store.yaml"]["name"] == "feast"


def test_operator_cluster_backend_settings() -> None:
    docs = _docs(
        "--set",
        "backends.pipelines=kubernetes",
        "--set",
        "backends.serving=kubernetes",
        "--set",
        "backends.monitoring=kubernetes",
        "--set",
        "image.registry=reg.example:5000",
        "--set",
        "image.pullPolicy=Always",
        "--set",
        "training.image.tag=t1",
    )
    env = _config(docs)
    assert env["LOOPLINE_OPERATOR_PIPELINE_BACKEND"] == "kubernetes"
    assert env["LOOPLINE_OPERATOR_SERVING_BACKEND"] == "kubernetes"
    assert env["LOOPLINE_OPERATOR_MONITORING_BACKEND"] == "kubernetes"
    assert "LOOPLINE_OPERATOR_KFP_HOST" not in env  # kfp.enabled is on, but not chosen
    assert env["LOOPLINE_OPERATOR_RUNTIME_IMAGE"] == "reg.example:5000/loopline/runtime:0.1.0"
    assert env["LOOPLINE_OPERATOR_TRAINING_IMAGE"] == "reg.example:5000/loopline/training:t1"
    assert env["LOOPLINE_OPERATOR_IMAGE_PULL_POLICY"] == "Always"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("backends.pipelines=kfp,backends.kfp.enabled=false", "set backends.kfp.enabled=true"),
        ("backends.serving=seldon", "set backends.seldon.enabled=true"),
        ("backends.serving=knative", "at '/backends/serving': value must be one of"),
        ("storageClass=Fast_SSD", "at '/storageClass'"),
        ("mlflow.workers=0", "at '/mlflow/workers'"),
        ("mlflow.persistence.size=lots", "at '/mlflow/persistence/size'"),
        ("backends.mlflow.clusterTrackingUri=http://u:p@mlflow:5000", "clusterTrackingUri"),
    ],
)
def test_bad_platform_values_are_refused_naming_the_key(setting: str, message: str) -> None:
    with pytest.raises(HelmError) as info:
        render("--set", setting)
    assert message in info.value.stderr
    assert "u:p@" not in info.value.stderr


def test_local_values_run_everything_in_the_cluster() -> None:
    docs = _docs(values_file=LOCAL_VALUES)
    env = _operator_env(docs)
    assert env["LOOPLINE_OPERATOR_PIPELINE_BACKEND"] == "kubernetes"
    assert env["LOOPLINE_OPERATOR_SERVING_BACKEND"] == "kubernetes"
    assert env["LOOPLINE_MLFLOW_TRACKING_URI"] == SERVICE_URI
    assert env["LOOPLINE_OPERATOR_CLUSTER_TRACKING_URI"] == SERVICE_URI
    assert env["LOOPLINE_OPERATOR_VOLUME_PERMISSIONS_INIT"] == "true"
    assert env["LOOPLINE_OPERATOR_STORAGE_CLASS"] == ""  # the local cluster's default class
    assert env["LOOPLINE_OPERATOR_FEATURE_REPO"] == "/var/lib/loopline-feast/feature_repo"
    claims = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert len(claims) == 2
    assert all("annotations" not in c["metadata"] for c in claims)  # a demo starts over
    # The golden file of ci/local-values.yaml is this file.
    assert (CHART_DIR / "ci" / "local-values.yaml").resolve() == LOCAL_VALUES.resolve()
