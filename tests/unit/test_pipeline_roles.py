"""The first pipeline step reads the run's column roles from the registered repository and
refuses, before any training, a task the data set has no label for or an entity the Model
names differently. No Feast store is opened: only the repository's `repo.json` is read."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from loopline.components.steps import roles_of, run_roles
from loopline.data import features
from loopline.data.register import declare_schema
from loopline.data.schema import SchemaError
from loopline.types.common import Task, Trigger
from loopline.types.dataset import LabelKind
from loopline.types.runs import TrainingRunSpec


def _repo(tmp_path: Path) -> Path:
    frame = pd.DataFrame(
        {
            "unit": ["u1", "u1", "u2", "u2"],
            "recorded_at": pd.date_range("2026-01-01", periods=4, freq="min", tz="UTC"),
            "ax": [0.1, 0.2, 0.3, 0.4],
            "ay": [1.0, 1.1, 1.2, 1.3],
            "is_anomaly": [0, 0, 1, 0],
        }
    )
    schema = declare_schema(
        frame, entity="unit", timestamp="recorded_at", label="is_anomaly", core=["ax"]
    )
    features.create_repo(tmp_path / "repo", frame, schema, rolling=False)
    return tmp_path / "repo"


def _spec(repo: Path, task: Task, **extra: object) -> TrainingRunSpec:
    doc = {
        "runId": "r1",
        "namespace": "ns",
        "modelName": "m",
        "task": task,
        "trigger": Trigger.MANUAL,
        "featureService": "all_sensors",
        "registeredModelName": "ns.m",
        "mlflowTrackingUri": "sqlite:///unused.db",
        "featureRepo": str(repo),
        "validation": {"metric": "f1"},
    }
    return TrainingRunSpec.model_validate(doc | extra)


def test_roles_come_from_the_registered_data_set(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    roles = run_roles(_spec(repo, Task.ANOMALY_DETECTION), repo, ["ax", "ay"], ["ax"])
    assert (roles.entity, roles.timestamp, roles.label) == ("unit", "recorded_at", "is_anomaly")
    assert roles.label_kind == LabelKind.ANOMALY_FLAG
    assert (roles.features, roles.core_features) == (["ax", "ay"], ["ax"])
    assert roles_of({"roles": roles.model_dump(mode="json")}) == roles
    assert features.RepoSpec.load(repo).entity_name == "unit"


def test_a_task_without_its_label_kind_fails_at_the_first_step(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    with pytest.raises(SchemaError, match=r"--label-kind class"):
        run_roles(_spec(repo, Task.CLASSIFICATION), repo, ["ax", "ay"], ["ax"])


def test_an_entity_key_other_than_the_data_sets_is_refused(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    spec = _spec(repo, Task.ANOMALY_DETECTION, entityKey="machine_id")
    with pytest.raises(ValueError, match=r"entityKey 'machine_id' is not the entity .*'unit'"):
        run_roles(spec, repo, ["ax", "ay"], ["ax"])
    same = _spec(repo, Task.ANOMALY_DETECTION, entityKey="unit")
    assert run_roles(same, repo, ["ax", "ay"], ["ax"]).entity == "unit"


def test_evaluate_model_refuses_to_judge_without_every_class(
    tmp_path: Path, training_mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step, with a real (SQLite) MLflow: a class with a single row in the window cannot be
    in the evaluation set, so the run fails at evaluate-model naming it, and the MLflow run is
    marked FAILED with that message; no metric reaches the gate."""
    import json

    from loopline.components import model_steps
    from loopline.components.progress import FAILED, read_events
    from loopline.components.steps import FRAME_FILE, META_FILE
    from loopline.models.evaluation_split import EvaluationSetError
    from loopline.models.training import train_bundle
    from loopline.tracking.experiments import client_for, ensure_experiment, find_run
    from loopline.types.policy import TrainingParams

    times = pd.date_range("2026-01-01", periods=120, freq="min", tz="UTC")
    frame = pd.DataFrame(
        {
            "unit": "u1",
            "recorded_at": times,
            "ax": [float(i % 3) for i in range(120)],
            "ay": [float(i % 5) for i in range(120)],
            "activity": ["walking", "standing", "running"] * 39
            + ["walking", "standing", "jumping"],
        }
    )
    schema = declare_schema(
        frame, entity="unit", timestamp="recorded_at", label="activity", core=["ax"]
    )
    roles = schema.roles(Task.CLASSIFICATION)
    features_dir = tmp_path / "features"
    features_dir.mkdir()
    frame.to_parquet(features_dir / FRAME_FILE)
    (features_dir / META_FILE).write_text(json.dumps({"roles": roles.model_dump(mode="json")}))
    model_dir = tmp_path / "model"
    train_bundle(frame, Task.CLASSIFICATION, TrainingParams(epochs=1), roles).bundle.save(model_dir)
    events = tmp_path / "events.jsonl"
    monkeypatch.setenv("LOOPLINE_PIPELINE_PROGRESS_FILE", str(events))
    spec = _spec(tmp_path, Task.CLASSIFICATION, mlflowTrackingUri=training_mlflow_uri)
    with pytest.raises(EvaluationSetError, match=r"lacks label value\(s\) 'jumping' \(1 row"):
        model_steps.evaluate_model(
            spec.model_dump_json(by_alias=True),
            str(features_dir),
            str(model_dir),
            str(tmp_path / "report.md"),
        )
    failed = [e for e in read_events(events) if e["event"] == FAILED]
    assert failed[0]["step"] == "evaluate-model"
    assert "'jumping'" in failed[0]["message"]
    client = client_for(training_mlflow_uri)
    experiment = ensure_experiment(client, spec.namespace, spec.model_name)
    run = find_run(client, experiment, spec.run_id)
    assert run is not None
    assert run.info.status == "FAILED"
    assert "macro_f1" not in run.data.metrics
