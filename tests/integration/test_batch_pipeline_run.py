"""Batch scoring as a pipeline run on the local backend, without a cluster: `loopline score
--submit` hands a `BatchRunSpec` to `LocalPipelineBackend`, whose worker is the real runner
(`python -m loopline.pipelines.run`: the batch-scoring pipeline under kfp.local), with a real
trained version in a real MLflow and a real Feast repository. Submitting the same request again
adopts the run instead of scoring twice."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from loopline.batch.job import BATCH
from loopline.cli.main import cli
from loopline.data import features
from loopline.data.schema import factory_schema
from loopline.operators.backends.pipelines import LocalPipelineBackend
from loopline.tracking.experiments import client_for, experiment_name
from loopline.types.runs import RunPhase, TrainingRunResult
from tests.fixtures.data import GeneratedData
from tests.fixtures.training import TrainAndRegister

pytestmark = pytest.mark.integration


def test_score_submit_runs_the_batch_pipeline_on_the_local_backend_once(
    train_and_register: TrainAndRegister,
    training_mlflow_uri: str,
    sensor_data: GeneratedData,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trained = train_and_register(model="drill-ae", namespace="plant")
    repo = tmp_path / "repo"
    features.create_repo(repo, sensor_data.parquet, factory_schema())
    features.apply(repo)
    runs = tmp_path / "runs"
    monkeypatch.setenv("LOOPLINE_OPERATOR_PIPELINE_BACKEND", "local")
    monkeypatch.setenv("LOOPLINE_OPERATOR_RUNS_DIR", str(runs))
    monkeypatch.delenv("LOOPLINE_OPERATOR_WORKER_COMMAND", raising=False)
    ts = factory_schema().timestamp
    start = sensor_data.frame[ts].min() + pd.Timedelta("1D")
    end = start + pd.Timedelta("1D")
    args = [
        "score",
        "--submit",
        "--model",
        "plant.drill-ae",
        "--repo",
        str(repo),
        "--start",
        start.isoformat(),
        "--end",
        end.isoformat(),
        "--tracking-uri",
        training_mlflow_uri,
    ]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "Succeeded: scored" in first.output
    (run_dir,) = runs.iterdir()
    spec = json.loads((run_dir / "spec.json").read_text())
    assert spec["pipeline"] == "batch-scoring"
    result = TrainingRunResult.model_validate_json((run_dir / "result.json").read_text())
    assert result.phase == RunPhase.SUCCEEDED
    assert result.step == "score-window"
    assert result.model_version == trained.version
    window = sensor_data.frame[(sensor_data.frame[ts] >= start) & (sensor_data.frame[ts] < end)]
    assert result.metrics["batch_rows"] == len(window)
    scores = list((repo / "data" / "scores" / "scores_plant_drill_ae").glob("*.parquet"))
    assert len(scores) == 1
    assert len(pd.read_parquet(scores[0])) == len(window)

    # The same request again: the same run id, adopted; nothing is scored a second time.
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert [p.name for p in runs.iterdir()] == [run_dir.name]
    client = client_for(training_mlflow_uri)
    experiment = client.get_experiment_by_name(experiment_name("plant", "drill-ae"))
    assert experiment is not None
    batch_runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{BATCH}` = 'true'"
    )
    assert [r.info.run_id for r in batch_runs] == [result.mlflow_run_id]
    assert LocalPipelineBackend(runs).status(run_dir.name) == result


def test_score_submit_refuses_an_input_file(tmp_path: Path) -> None:
    out = CliRunner().invoke(
        cli, ["score", "--submit", "--model", "plant.drill-ae", "--input", str(tmp_path)]
    )
    assert out.exit_code != 0
    assert "--input" in out.output
