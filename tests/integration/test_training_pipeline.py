"""The whole training pipeline under kfp.local, as the operator's `local` backend runs it.

Real everything: a Feast repository over generated data, the Great Expectations gate, torch,
a SQLite MLflow with local artifacts, and `python -m loopline.pipelines.run` as a subprocess
(the steps warm in its process; once, each step a subprocess of kfp.local's SubprocessRunner,
which must write the same artifacts). Runs in order in one MLflow
store: a first model becomes champion, a deliberately crippled one is rejected, a run whose
policy the data cannot meet stops at the quality gate, and a run is cancelled mid-way.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.artifacts import download_artifacts

from loopline.components.progress import read_events
from loopline.components.steps import QUALITY_REPORT_ARTIFACT, TRAIN_MODEL, VALIDATE_DATA
from loopline.data.generator import GeneratorConfig, generate, write_dataset
from loopline.data.schema import SENSORS, factory_schema
from loopline.models.bundle import load_bundle
from loopline.tracking.experiments import client_for, ensure_experiment, find_run
from loopline.tracking.lineage import GATE_DECISION, GATE_REASON, missing_lineage
from loopline.tracking.publish import REFERENCE_ARTIFACT
from loopline.tracking.registry import CHALLENGER, CHAMPION, alias_uri, version_by_alias
from loopline.types.common import Task, Trigger
from loopline.types.runs import RunPhase, TrainingRunResult, TrainingRunSpec
from tests.fixtures.training import fresh_tracking_uri

pytestmark = pytest.mark.slow

# 3 machines x 8 days at 5 minutes: 6912 rows with faults in the newest fifth too.
DATA = GeneratorConfig(machines=3, days=8, interval_seconds=300, seed=2, fault_fraction=0.08)
PARAMS = {"epochs": 10, "seed": 0, "trainingWindowDays": 30}


@dataclass
class Store:
    repo: Path
    tracking_uri: str
    root: Path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, _empty_mlflow_db: Path) -> Store:
    from loopline.data import features

    root = tmp_path_factory.mktemp("pipeline")
    frame, manifest = generate(DATA)
    write_dataset(frame, manifest, root / "data")
    features.create_repo(root / "repo", root / "data" / "sensors.parquet", factory_schema())
    features.apply(root / "repo")
    return Store(root / "repo", fresh_tracking_uri(_empty_mlflow_db, root / "mlflow"), root)


def make_spec(store: Store, run_id: str, **overrides: object) -> TrainingRunSpec:
    doc: dict[str, object] = {
        "runId": run_id,
        "namespace": "plant",
        "modelName": "drill-ae",
        "task": Task.ANOMALY_DETECTION,
        "trigger": Trigger.MANUAL,
        "featureService": "all_sensors",
        "registeredModelName": "plant.drill-ae",
        "mlflowTrackingUri": store.tracking_uri,
        "featureRepo": str(store.repo),
        "params": PARAMS,
        "validation": {"metric": "roc_auc"},
    }
    return TrainingRunSpec.model_validate(doc | overrides)


def start(store: Store, spec: TrainingRunSpec, *flags: str) -> tuple[subprocess.Popen[bytes], Path]:
    folder = store.root / spec.run_id
    folder.mkdir()
    (folder / "spec.json").write_text(spec.model_dump_json(by_alias=True))
    result = folder / "result.json"
    cmd = [sys.executable, "-m", "loopline.pipelines.run", *flags]
    cmd += ["--spec", str(folder / "spec.json"), "--result", str(result)]
    with (folder / "log.txt").open("wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    return proc, result


def watch(
    proc: subprocess.Popen[bytes], result: Path, timeout: float = 600
) -> Iterator[TrainingRunResult]:
    """Every distinct result the runner wrote while it ran, then the final one."""
    deadline = time.monotonic() + timeout
    last = None
    try:
        while proc.poll() is None:
            if time.monotonic() > deadline:
                pytest.fail(f"pipeline run did not finish in {timeout} s")
            if result.is_file():
                text = result.read_text()
                if text != last:
                    last = text
                    yield TrainingRunResult.model_validate_json(text)
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    yield TrainingRunResult.model_validate_json(result.read_text())


def run(
    store: Store, spec: TrainingRunSpec, *flags: str, timeout: float = 600
) -> tuple[TrainingRunResult, list[TrainingRunResult]]:
    proc, result = start(store, spec, *flags)
    seen = list(watch(proc, result, timeout))
    return seen[-1], seen


@pytest.fixture(scope="module")
def first(store: Store) -> tuple[TrainingRunResult, list[TrainingRunResult]]:
    return run(store, make_spec(store, "run-1"))


def test_first_run_registers_a_champion_that_loads_by_alias(
    store: Store, first: tuple[TrainingRunResult, list[TrainingRunResult]]
) -> None:
    result, seen = first
    assert result.phase == RunPhase.SUCCEEDED, result.message
    assert result.gate_passed
    assert result.model_version == "1"
    assert result.rejection_reason is None
    # The runner kept the result current while it ran: step by step, then the outcome.
    running_steps = [r.step for r in seen if r.phase == RunPhase.RUNNING and r.step]
    assert TRAIN_MODEL in running_steps
    bundle = load_bundle(alias_uri("plant.drill-ae", CHAMPION), tracking_uri=store.tracking_uri)
    frame = pd.read_parquet(store.root / "data" / "sensors.parquet")
    x = frame[list(SENSORS)].dropna().to_numpy(np.float32)[:64]
    out = bundle.score(x)
    assert out["anomaly_score"].shape == (64,)
    assert bundle.score_fallback(x[:, :4])["is_anomaly"].dtype == np.bool_


def _outputs(store: Store, run_id: str) -> Path:
    (run_dir,) = (store.root / run_id / "result.json.d" / "outputs").iterdir()
    return run_dir


@pytest.mark.timeout(2400)
def test_steps_in_their_own_processes_write_the_same_artifacts_as_warm_steps(
    store: Store, first: tuple[TrainingRunResult, list[TrainingRunResult]]
) -> None:
    """The same data and parameters through kfp.local's one process per step (another model
    name, so that it has no champion either): every task writes the same files, the same
    features and quality report, and a model that scores the same."""
    assert first[0].phase == RunPhase.SUCCEEDED
    spec = make_spec(store, "run-sub", modelName="drill-sub", registeredModelName="plant.drill-sub")
    # A process per step imports everything six times: minutes more on a loaded machine.
    result, _ = run(store, spec, "--subprocess-steps", timeout=1800)
    assert result.phase == RunPhase.SUCCEEDED, result.message
    warm, sub = _outputs(store, "run-1"), _outputs(store, "run-sub")
    files = {str(p.relative_to(warm)) for p in warm.rglob("*") if p.is_file()}
    assert files == {str(p.relative_to(sub)) for p in sub.rglob("*") if p.is_file()}
    features = "load-features/features"
    pd.testing.assert_frame_equal(
        pd.read_parquet(warm / features / "frame.parquet"),
        pd.read_parquet(sub / features / "frame.parquet"),
    )
    meta_warm, meta_sub = (
        json.loads((d / features / "meta.json").read_text()) for d in (warm, sub)
    )
    assert meta_warm.pop("mlflow_run_id") != meta_sub.pop("mlflow_run_id")
    assert meta_warm == meta_sub
    report = "validate-data/quality_report"
    took = re.compile(r"\d+(\.\d+)? s\)")  # the gate's own duration, measured each time
    assert took.sub("_ s)", (warm / report).read_text()) == took.sub(
        "_ s)", (sub / report).read_text()
    )
    x = pd.read_parquet(store.root / "data" / "sensors.parquet")[list(SENSORS)]
    x = x.dropna().to_numpy(np.float32)[:64]
    scores = [load_bundle(d / "train-model" / "model").score(x) for d in (warm, sub)]
    np.testing.assert_allclose(scores[0]["anomaly_score"], scores[1]["anomaly_score"], rtol=1e-5)

    def scored(metrics: dict[str, float]) -> dict[str, float]:  # without measured durations
        return {k: v for k, v in metrics.items() if not k.endswith("_seconds")}

    assert "train_seconds" in result.metrics
    assert scored(result.metrics) == pytest.approx(scored(first[0].metrics), rel=1e-6)


def test_metrics_are_logged_and_the_autoencoder_beats_the_baseline(
    store: Store, first: tuple[TrainingRunResult, list[TrainingRunResult]]
) -> None:
    result, _ = first
    client = client_for(store.tracking_uri)
    run_ = client.get_run(str(result.mlflow_run_id))
    metrics = run_.data.metrics
    for key in ("roc_auc", "f1", "precision", "recall", "baseline_roc_auc", "fallback_roc_auc"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["roc_auc"] > 0.9
    assert metrics["roc_auc"] > metrics["baseline_roc_auc"]
    assert metrics["dq_completeness"] >= 0.95
    assert result.metrics["roc_auc"] == pytest.approx(metrics["roc_auc"])
    assert run_.info.status == "FINISHED"


def test_lineage_tags_and_artifacts_are_all_there(
    store: Store, first: tuple[TrainingRunResult, list[TrainingRunResult]]
) -> None:
    result, _ = first
    client = client_for(store.tracking_uri)
    run_ = client.get_run(str(result.mlflow_run_id))
    assert missing_lineage(run_.data.tags) == []
    assert run_.data.tags["loopline.run_id"] == "run-1"
    assert run_.data.tags["loopline.trigger"] == "manual"
    assert run_.data.tags["loopline.feature_views"].startswith("sensor_readings@")
    assert run_.data.tags["loopline.parent_version"] == "none"
    version = client.get_model_version("plant.drill-ae", "1")
    assert missing_lineage(version.tags) == []
    assert version.tags[GATE_DECISION] == "passed"
    ref = pd.read_parquet(
        download_artifacts(
            run_id=run_.info.run_id,
            artifact_path=REFERENCE_ARTIFACT,
            tracking_uri=store.tracking_uri,
        )
    )
    assert list(ref.columns) == list(SENSORS)
    names = {a.path for a in client.list_artifacts(run_.info.run_id, "reports")}
    assert {"reports/data_quality.md", "reports/evaluation.md", "reports/comparison.md"} <= names
    assert client.list_artifacts(run_.info.run_id, "quality")


def test_worse_challenger_is_rejected_and_the_champion_stays(
    store: Store, first: tuple[TrainingRunResult, list[TrainingRunResult]]
) -> None:
    assert first[0].gate_passed
    crippled = {"epochs": 1, "hiddenUnits": [2], "latentDim": 1, "learningRate": 1e-4}
    spec = make_spec(store, "run-2", params=PARAMS | crippled, trigger=Trigger.DRIFT)
    result, _ = run(store, spec)
    assert result.phase == RunPhase.SUCCEEDED, result.message
    assert not result.gate_passed
    assert result.model_version == "2"
    assert result.rejection_reason is not None
    assert "< champion v1" in result.rejection_reason
    client = client_for(store.tracking_uri)
    champion = version_by_alias(client, "plant.drill-ae", CHAMPION)
    challenger = version_by_alias(client, "plant.drill-ae", CHALLENGER)
    assert champion is not None
    assert challenger is not None
    assert (str(champion.version), str(challenger.version)) == ("1", "2")
    version = client.get_model_version("plant.drill-ae", "2")
    assert version.tags[GATE_DECISION] == "rejected"
    assert version.tags[GATE_REASON] == result.rejection_reason
    assert version.tags["loopline.parent_version"] == "1"
    assert version.tags["loopline.trigger"] == "drift"


def test_failing_quality_gate_stops_the_run_before_training(
    store: Store, first: tuple[TrainingRunResult, list[TrainingRunResult]]
) -> None:
    assert first[0].phase == RunPhase.SUCCEEDED
    # The generator drops sensor readings (NaN runs): no window is 100% complete.
    strict = {"metric": "roc_auc", "dataQuality": {"completeness": 1.0}}
    spec = make_spec(store, "run-3", validation=strict)
    result, _ = run(store, spec)
    assert result.phase == RunPhase.FAILED
    assert result.step == VALIDATE_DATA
    assert "completeness" in result.message
    assert result.model_version is None
    events = read_events(store.root / "run-3" / "result.json.d" / "events.jsonl")
    assert TRAIN_MODEL not in {e["step"] for e in events}
    client = client_for(store.tracking_uri)
    experiment = ensure_experiment(client, "plant", "drill-ae")
    mlflow_run = find_run(client, experiment, "run-3")
    assert mlflow_run is not None
    assert mlflow_run.info.status == "FAILED"
    assert client.list_artifacts(mlflow_run.info.run_id, QUALITY_REPORT_ARTIFACT.split("/")[0])
    assert str(version_by_alias(client, "plant.drill-ae", CHAMPION).version) == "1"  # type: ignore[union-attr]


def test_sigterm_cancels_the_run_and_its_step_processes(store: Store) -> None:
    proc, result = start(store, make_spec(store, "run-4"))
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if result.is_file() and TrainingRunResult.model_validate_json(result.read_text()).step:
                break  # a step is running
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 128 + signal.SIGTERM
    final = TrainingRunResult.model_validate_json(result.read_text())
    assert final.phase == RunPhase.CANCELLED
    assert "SIGTERM" in final.message
    assert final.finished_at is not None
    # The runner led its own process group and took it down: nothing of it is left.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    pytest.fail(f"processes of group {proc.pid} survived the cancelled run")


def test_a_drift_run_loads_only_the_rows_since_the_drift_began(
    store: Store, tmp_path: Path
) -> None:
    """The load-features step on the real Feast repo (in process, no training): with a
    driftStart and enough rows after it, the frame, the recorded window and the MLflow run's
    tags all start there; with too few rows the whole window is kept and the tag says why."""
    from loopline.components.steps import (
        FRAME_FILE,
        SINCE_DRIFT,
        TRAINING_WINDOW,
        WINDOW_BASIS_TAG,
        load_features,
    )
    from loopline.data.schema import TIMESTAMP

    def load(run_id: str, **extra: object) -> dict[str, object]:
        spec = make_spec(store, run_id, trigger=Trigger.DRIFT, **extra)
        return load_features(spec.model_dump_json(by_alias=True), str(tmp_path / run_id))

    whole = load("load-whole")
    assert whole["window_basis"] == TRAINING_WINDOW
    end = datetime.fromisoformat(str(whole["window_end"]))
    began = end - timedelta(days=2)
    since = load("load-since", driftStart=began.isoformat())
    assert since["window_basis"] == SINCE_DRIFT
    assert datetime.fromisoformat(str(since["window_start"])) == began
    frame = pd.read_parquet(tmp_path / "load-since" / FRAME_FILE)
    assert frame[TIMESTAMP].min() >= pd.Timestamp(began)
    assert len(frame) == since["rows"]
    # 2 of the 8 generated days, 3 machines at 5 minutes.
    assert since["rows"] == pytest.approx(2 * 3 * 288, rel=0.02)
    assert int(str(since["rows"])) < int(str(whole["rows"]))
    client = client_for(store.tracking_uri)
    tags = client.get_run(str(since["mlflow_run_id"])).data.tags
    assert tags[WINDOW_BASIS_TAG] == SINCE_DRIFT
    assert tags["loopline.data_rows"] == str(since["rows"])
    assert datetime.fromisoformat(tags["loopline.window_start"]) == began

    recent = load("load-few", driftStart=(end - timedelta(hours=1)).isoformat())
    assert recent["rows"] == whole["rows"]
    assert str(recent["window_basis"]).startswith(f"{TRAINING_WINDOW} (")
    assert "fewer than driftMinRows 1000" in str(recent["window_basis"])
