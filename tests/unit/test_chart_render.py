"""helm lint, helm template against golden files, and the values schema's error messages.

These run the project-built helm (no cluster): `make controlplane` builds it.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import yaml

import loopline
from tests import helm_chart
from tests.helm_chart import CHART_DIR, HelmError, ci_values_files, helm, render

VALUES = ci_values_files()
VALUE_IDS = [path.name for path in VALUES]


def test_ci_values_files_cover_default_and_cluster_wide() -> None:
    names = {path.name for path in VALUES}
    assert {"default-values.yaml", "cluster-wide-values.yaml"} <= names
    wide = yaml.safe_load((CHART_DIR / "ci" / "cluster-wide-values.yaml").read_text())
    assert wide["rbac"]["clusterWide"] is True


def test_chart_version_follows_the_package() -> None:
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert chart["version"] == loopline.__version__
    assert chart["appVersion"] == loopline.__version__


@pytest.mark.parametrize("values_file", VALUES, ids=VALUE_IDS)
def test_helm_lint_strict(values_file: Path) -> None:
    result = helm("lint", "--strict", str(CHART_DIR), "--values", str(values_file))
    assert "0 chart(s) failed" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("values_file", VALUES, ids=VALUE_IDS)
def test_render_matches_golden_file(values_file: Path) -> None:
    diff = helm_chart.golden_diff(values_file)
    assert not diff, (
        "the rendered chart differs from its golden file; if the change is intended, run "
        "`.venv/bin/python -m tests.helm_chart` and commit tests/golden/helm/:\n" + diff
    )


def test_rendered_objects_are_unique_and_namespaced_to_the_release() -> None:
    for values_file in VALUES:
        docs = helm_chart.documents(render(values_file=values_file))
        keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
        assert len(keys) == len(set(keys)), f"duplicate objects in {values_file.name}"
        for doc in docs:
            if doc["kind"] in ("Deployment", "Service", "ServiceAccount", "ConfigMap"):
                if doc["kind"] == "ConfigMap" and "grafana_dashboard" in doc["metadata"]["labels"]:
                    continue  # dashboards go to Grafana's namespace
                assert doc["metadata"]["namespace"] == helm_chart.NAMESPACE, doc["metadata"]


# (--set argument, a fragment the error message must contain: the key's path and the rule)
BAD_VALUES = [
    ("backends.mlflow.password=hunter2", "at '/backends/mlflow/password': got string, want object"),
    ("operator.replicas=2", "at '/operator/replicas': maximum: got 2, want 1"),
    ("storageClass=Fast_SSD", "at '/storageClass'"),
    ("monitor.model.name=drill-ae", "additional properties 'model' not allowed"),
    ("operator.resources=null", "missing property 'resources'"),
    ("operator.resources.limits=null", "at '/operator/resources': missing property 'limits'"),
    ("rbac.clusterwide=true", "additional properties 'clusterwide' not allowed"),
    ("backends.kfp.endpoint=", "at '/backends/kfp/endpoint': minLength"),
    ("backends.mlflow.trackingUri=mlflow:5000", "at '/backends/mlflow/trackingUri'"),
    ("extraSecretEnv[0].name=TOKEN", "missing properties 'secretName', 'key'"),
    ("image.pullPolicy=Sometimes", "at '/image/pullPolicy': value must be one of"),
    ("asyncInference.redisUrl=redis.svc:6379", "at '/asyncInference/redisUrl'"),
]


@pytest.mark.parametrize(("setting", "message"), BAD_VALUES, ids=[s for s, _ in BAD_VALUES])
def test_schema_rejects_bad_values_naming_the_key(setting: str, message: str) -> None:
    with pytest.raises(HelmError) as info:
        render("--set", setting)
    assert "values don't meet the specifications of the schema" in info.value.stderr
    assert message in info.value.stderr


def test_schema_accepts_local_backends_without_kfp_endpoint() -> None:
    docs = helm_chart.documents(
        render(
            "--set",
            "backends.kfp.enabled=false",
            "--set",
            "backends.kfp.endpoint=",
            "--set",
            "backends.seldon.enabled=false",
        )
    )
    config = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")
    )
    assert config["data"]["LOOPLINE_OPERATOR_PIPELINE_BACKEND"] == "local"
    assert config["data"]["LOOPLINE_OPERATOR_SERVING_BACKEND"] == "local"
    assert "LOOPLINE_OPERATOR_KFP_HOST" not in config["data"]


def test_chart_packages_with_linked_sources(tmp_path: Path) -> None:
    """`helm package` resolves the links to manifests/ and monitoring/ into real files."""
    helm("package", str(CHART_DIR), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob("loopline-*.tgz")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        for crd in sorted(helm_chart.CRD_DIR.glob("*.yaml")):
            member = tar.extractfile(f"loopline/crds/{crd.name}")
            assert member is not None
            assert member.read() == crd.read_bytes()
    assert {f"loopline/files/rbac/{p.name}" for p in helm_chart.RBAC_DIR.glob("*.yaml")} <= names
    assert "loopline/files/policies/monitor-retrain-only.yaml" in names
    assert "loopline/values.schema.json" in names


def test_schema_reports_every_mistake_of_a_bad_values_file(tmp_path: Path) -> None:
    """A values file with several mistakes fails as a whole, each one named by its path."""
    bad = tmp_path / "bad-values.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "operator": {"replicas": 3, "logLevel": "chatty"},
                "monitor": {"persistence": {"size": "big"}},
                "backends": {"mlflow": {"trackingUri": "", "password": "plaintext"}},
                "networkPolicy": {"egress": {"restrict": "yes"}},
            }
        )
    )
    with pytest.raises(HelmError) as info:
        render(values_file=bad)
    message = info.value.stderr
    for path in (
        "/operator/replicas",
        "/operator/logLevel",
        "/monitor/persistence/size",
        "/backends/mlflow/trackingUri",
        "/backends/mlflow/password",
        "/networkPolicy/egress/restrict",
    ):
        assert f"at '{path}'" in message, f"{path} not reported:\n{message}"
    assert "plaintext" not in message


def test_async_inference_points_the_operator_at_an_existing_redis() -> None:
    def config(*args: str) -> dict[str, str]:
        docs = helm_chart.documents(render(*args))
        found = next(
            d
            for d in docs
            if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")
        )
        return dict(found["data"])

    assert "LOOPLINE_ASYNC_REDIS_URL" not in config()
    url = "redis://redis.loopline.svc:6379/0"
    data = config("--set", f"asyncInference.redisUrl={url}")
    assert data["LOOPLINE_ASYNC_REDIS_URL"] == url
    assert data["LOOPLINE_OPERATOR_ASYNC_REDIS_URL"] == url
