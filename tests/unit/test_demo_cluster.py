"""The cluster mode's objects and plumbing, without a cluster: the chart values rendered by the
project-built helm over values-local.yaml, the landing pod, the upload archive unpacked by the
same script the landing pod runs (in a real Python subprocess), the landed files uploaded, and
in-cluster endpoint names turned into the addresses the host reaches."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from loopline.data.features import RepoSpec, create_repo
from loopline.data.generator import GeneratorConfig, generate
from loopline.data.schema import factory_schema
from loopline.demo import cluster_objects as objects
from loopline.demo.cluster_stack import ClusterLanding
from loopline.demo.record import DemoRecord
from loopline.demo.settings import DemoSettings
from loopline.demo.traffic import PlantStream
from loopline.demo.watch import StatusTracker
from loopline.operators.builders.kube_jobs import FEATURE_REPO_MOUNT
from loopline.operators.settings import OperatorSettings
from tests.helm_chart import CHART_DIR, documents, render

ADDRESSES = {("loopline-demo", "drill-ae-server"): "10.0.0.42"}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://drill-ae-server.loopline-demo.svc:8080", "http://10.0.0.42:8080"),
        ("drill-ae-server.loopline-demo.svc:9000", "10.0.0.42:9000"),
        (
            "http://drill-ae-server.loopline-demo.svc.cluster.local:8080/v2",
            "http://10.0.0.42:8080/v2",
        ),
        ("http://other.loopline-demo.svc:8080", "http://other.loopline-demo.svc:8080"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("drill-ae-server.loopline-demo.example:1", "drill-ae-server.loopline-demo.example:1"),
    ],
)
def test_in_cluster_names_become_cluster_ips(url: str, expected: str) -> None:
    assert objects.reachable_url(url, ADDRESSES) == expected


def test_the_watcher_records_endpoints_as_the_host_reaches_them() -> None:
    rec = DemoRecord()
    tracker = StatusTracker(rec, lambda url: objects.reachable_url(url, ADDRESSES))
    status = {
        "endpoints": {
            "rest": "http://drill-ae-server.loopline-demo.svc:8080",
            "grpc": "drill-ae-server.loopline-demo.svc:9000",
        }
    }
    tracker.update({"metadata": {"name": "drill-ae"}, "status": status})
    assert rec.endpoints == {"REST": "http://10.0.0.42:8080", "GRPC": "10.0.0.42:9000"}


def _rendered(tmp_path: Path) -> list[dict[str, Any]]:
    values = tmp_path / "values.json"
    values.write_text(json.dumps(objects.chart_values("127.0.0.1:5123", "1.0-rt", "1.0-tr")))
    return documents(render("--values", str(CHART_DIR / "values-local.yaml"), values_file=values))


def test_the_chart_runs_every_piece_from_the_pushed_images(tmp_path: Path) -> None:
    docs = _rendered(tmp_path)
    images = {
        c["image"]
        for d in docs
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"127.0.0.1:5123/loopline/runtime:1.0-rt"}
    (config,) = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")
    ]
    data = config["data"]
    assert data["LOOPLINE_OPERATOR_PIPELINE_BACKEND"] == "kubernetes"
    assert data["LOOPLINE_OPERATOR_SERVING_BACKEND"] == "kubernetes"
    assert data["LOOPLINE_OPERATOR_TRAINING_IMAGE"] == "127.0.0.1:5123/loopline/training:1.0-tr"
    assert data["LOOPLINE_OPERATOR_RUNTIME_IMAGE"] == "127.0.0.1:5123/loopline/runtime:1.0-rt"
    # The Service the demo reads MLflow through is the chart's.
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    assert objects.MLFLOW_SERVICE in services
    operator = next(
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "loopline-operator"
    )
    env = operator["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "LOOPLINE_OPERATOR_RECONCILE_INTERVAL", "value": "2"} in env


def test_chart_values_refuse_what_would_pull_nothing() -> None:
    with pytest.raises(ValueError, match="registry"):
        objects.chart_values("127.0.0.1:5123/loopline", "a", "b")
    with pytest.raises(ValueError, match="training_tag"):
        objects.chart_values("127.0.0.1:5123", "a", "")


def test_the_landing_pod_mounts_the_claim_training_jobs_mount() -> None:
    # The operator's Jobs mount the claim of its setting at FEATURE_REPO_MOUNT.
    assert OperatorSettings.model_fields["feature_repo_claim"].default == objects.FEATURE_REPO_CLAIM
    claim = objects.feature_repo_claim("ns")
    assert claim["metadata"] == {
        "name": objects.FEATURE_REPO_CLAIM,
        "namespace": "ns",
        "labels": {"app.kubernetes.io/part-of": "loopline-demo"},
    }
    pod = objects.landing_pod("ns", "reg/loopline/runtime:t")
    spec = pod["spec"]
    (init,) = spec["initContainers"]
    (main,) = spec["containers"]
    assert init["command"] == ["chown", "10001:10001", FEATURE_REPO_MOUNT]
    assert main["securityContext"]["runAsUser"] == 10001
    assert main["volumeMounts"] == [{"name": objects.REPO_VOLUME, "mountPath": FEATURE_REPO_MOUNT}]
    (volume,) = spec["volumes"]
    assert volume["persistentVolumeClaim"] == {"claimName": objects.FEATURE_REPO_CLAIM}


def _unpack(archive: bytes, root: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", objects.UNPACK_SCRIPT, str(root)],
        input=archive,
        capture_output=True,
        check=True,
        timeout=60,
    )
    return result.stdout.decode()


def test_the_upload_replaces_files_whole(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "data").mkdir(parents=True)
    (src / "repo.json").write_text("{}")
    (src / "data" / "a.parquet").write_bytes(b"first")
    printed = _unpack(objects.pack(src, objects.repo_files(src)), dst)
    assert printed.split() == ["data/a.parquet", "5", "repo.json", "2"]
    (src / "data" / "a.parquet").write_bytes(b"second version")
    _unpack(objects.pack(src, ["data/a.parquet"]), dst)
    assert (dst / "data" / "a.parquet").read_bytes() == b"second version"
    assert (dst / "repo.json").read_text() == "{}"
    assert sorted(p.name for p in (dst / "data").iterdir()) == ["a.parquet"]  # no temp left


def test_landed_rows_are_uploaded_with_their_rolling_features(tmp_path: Path) -> None:
    frame, manifest = generate(GeneratorConfig(machines=2, days=0.25, interval_seconds=600))
    repo = tmp_path / "repo"
    create_repo(repo, frame, factory_schema())
    uploads: list[list[str]] = []
    landing = ClusterLanding(repo, frame, uploads.append)
    assert landing.land() == 0
    assert uploads == []  # nothing new: nothing sent
    clock = iter(pd.date_range(datetime(2030, 1, 1, tzinfo=UTC), periods=4, freq="1s"))
    stream = PlantStream(manifest, clock=lambda: next(clock).to_pydatetime())
    landing.add(stream.next_batch())
    assert landing.land() == 2
    spec = RepoSpec.load(repo)
    assert uploads == [[spec.source, spec.rolling_source]]
    dst = tmp_path / "claim"
    _unpack(objects.pack(repo, uploads[0]), dst)
    assert len(pd.read_parquet(dst / spec.source)) == len(frame) + 2


def test_cluster_settings_wait_for_pulls_and_leave_the_historian_out() -> None:
    quick = DemoSettings().quick()
    adjusted = objects.cluster_settings(quick)
    assert adjusted.historian_burst == 0
    assert adjusted.serving_timeout >= objects.SERVING_TIMEOUT > quick.serving_timeout
    assert adjusted.machines == quick.machines
    assert adjusted.epochs == quick.epochs


def _pod(name: str, component: str, ip: str = "10.42.0.7", **extra: Any) -> dict[str, Any]:
    meta = {
        "name": name,
        "namespace": "loopline-demo",
        "labels": {"loopline.dev/component": component},
    }
    meta.update(extra)
    return {"metadata": meta, "status": {"phase": "Running", "podIP": ip}}


def test_prometheus_scrapes_the_running_pods_by_the_local_jobs_names(tmp_path: Path) -> None:
    """promtool (Prometheus' own checker) accepts the config; the targets are the running,
    not terminating pods of each component, with the namespace `loopline usage` scopes by."""
    import yaml

    from loopline.demo.usage import JOBS

    pods = [
        _pod("server-b", "server", "10.42.0.9"),
        _pod("server-a", "server", "10.42.0.8"),
        _pod("server-old", "server", deletionTimestamp="2026-12-06T00:00:00Z"),
        {
            "metadata": {"name": "server-new", "labels": {"loopline.dev/component": "server"}},
            "status": {"phase": "Pending"},
        },
        _pod("monitor-x", "monitor", "10.42.0.3"),
    ]
    assert objects.scrape_targets(pods, "server", 8082) == [
        {
            "targets": ["10.42.0.8:8082"],
            "labels": {"namespace": "loopline-demo", "pod": "server-a"},
        },
        {
            "targets": ["10.42.0.9:8082"],
            "labels": {"namespace": "loopline-demo", "pod": "server-b"},
        },
    ]
    assert [t["targets"] for t in objects.scrape_targets(pods, "monitor", 8090)] == [
        ["10.42.0.3:8090"]
    ]
    config = objects.prometheus_files_config(tmp_path)
    assert {j["job_name"] for j in config["scrape_configs"]} == set(JOBS.values())
    for key in objects.SCRAPED:
        target_file = tmp_path / f"targets-{JOBS[key]}.json"
        target_file.write_text(json.dumps(objects.scrape_targets(pods, *objects.SCRAPED[key])))
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (scripts/install-system-deps.sh installs it)")
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    checked = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_operator_restarts_once_mid_run_and_once_mid_canary() -> None:
    done: set[str] = set()
    first_run = {"currentRun": {"trigger": "initial", "phase": "Running"}}
    assert objects.restart_due(first_run, done) is None
    drift_run = {"currentRun": {"runId": "r2", "trigger": "drift", "phase": "Running"}}
    assert objects.restart_due(drift_run, done) == "run"
    assert objects.restart_due(drift_run, {"run"}) is None
    first_step = {"rollout": {"version": "2", "stepIndex": 0, "weight": 10}}
    assert objects.restart_due(first_step, {"run"}) is None
    middle = {"rollout": {"version": "2", "stepIndex": 1, "weight": 50}}
    assert objects.restart_due(middle, {"run"}) == "canary"
    assert objects.restart_due(middle, {"run", "canary"}) is None
    last = {"rollout": {"version": "2", "stepIndex": 2, "weight": 100}}
    assert objects.restart_due(last, {"run"}) is None
