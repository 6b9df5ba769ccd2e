"""Batch inference end to end: a trained model in a real MLflow scores a window of a real Feast
repository; the scores are checked row by row against the model, read back through Feast,
and the MLflow run carries the lineage."""

from __future__ import annotations

import runpy
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from loopline.batch.job import (
    BATCH,
    BATCH_OUTPUT,
    BATCH_VIEW,
    FALLBACK_ROWS,
    MODEL_VERSION,
    BatchRequest,
    run_batch,
)
from loopline.batch.plan import BatchError, ModelRef, batch_caller
from loopline.batch.reading import iter_chunks, store_source
from loopline.batch.scoring import UNSCORED
from loopline.cli.main import cli
from loopline.data import features
from loopline.data.schema import factory_schema
from loopline.models.pyfunc import FALLBACK, PRIMARY, predict_frame
from loopline.monitoring.batch_usage import collect_batch
from loopline.monitoring.usage import Scope
from loopline.tracking.experiments import client_for, experiment_name
from loopline.tracking.lineage import DATA_HASH, DATA_ROWS, WINDOW_END, WINDOW_START
from tests.fixtures.data import GeneratedData
from tests.fixtures.training import TrainAndRegister, TrainedModel

pytestmark = pytest.mark.integration
MODEL = ModelRef("default", "drill-ae")


@pytest.fixture
def trained(train_and_register: TrainAndRegister) -> TrainedModel:
    model = train_and_register(model=MODEL.name, namespace=MODEL.namespace)
    assert model.gate_passed, "the first version becomes the champion"
    return model


@pytest.fixture
def repo(sensor_data: GeneratedData, tmp_path: Path) -> Path:
    """A repository of its own: a batch run adds its view to it."""
    repo = tmp_path / "repo"
    features.create_repo(repo, sensor_data.parquet, factory_schema())
    features.apply(repo)
    return repo


def test_a_window_is_scored_registered_and_recorded(
    trained: TrainedModel, repo: Path, sensor_data: GeneratedData
) -> None:
    schema = factory_schema()
    ts, ent = schema.timestamp, schema.entity
    source = sensor_data.frame
    start, end = source[ts].min() + pd.Timedelta("1D"), source[ts].min() + pd.Timedelta("3D")
    result = run_batch(
        BatchRequest(
            model=MODEL,
            tracking_uri=trained.tracking_uri,
            repo=repo,
            start=start.to_pydatetime(),
            end=end.to_pydatetime(),
            memory_mib=2,  # ~1,500 rows per chunk: the window (1,728 rows) takes two
        )
    )
    assert result.version == trained.version
    scores = pd.read_parquet(result.output)
    window = source[(source[ts] >= start) & (source[ts] < end)]
    assert len(scores) == len(window) == result.tally.rows
    assert result.tally.chunks > 1
    # The same rows, each scored as the model scores it, flagged against its own threshold.
    merged = window.merge(scores, on=[ent, ts], validate="one_to_one")
    expected = predict_frame(trained.bundle, merged[trained.bundle.feature_names])
    np.testing.assert_allclose(merged["anomaly_score"], expected["anomaly_score"], rtol=1e-5)
    assert (merged["model"] == expected["model"]).all()
    for name, scorer in ((PRIMARY, trained.bundle.primary), (FALLBACK, trained.bundle.fallback)):
        rows = merged["model"] == name
        assert (merged.loc[rows, "threshold"] == np.float32(scorer.threshold)).all()
    assert (merged["is_anomaly"] == (merged["anomaly_score"] > merged["threshold"])).all()
    assert merged["is_anomaly"].sum() == result.tally.flagged_rows
    assert (scores["model_version"] == trained.version).all()

    # Readable through the feature repository, as of each row's timestamp.
    store = features.open_store(repo)
    view = result.feature_view
    assert view == "scores_default_drill_ae"
    spine = window[[ent, ts]].head(50).reset_index(drop=True)
    read = store.get_historical_features(
        entity_df=spine, features=[f"{view}:anomaly_score", f"{view}:is_anomaly"]
    ).to_df()
    back = spine.merge(read, on=[ent, ts]).merge(scores, on=[ent, ts], suffixes=("", "_file"))
    assert len(back) == 50
    np.testing.assert_allclose(back["anomaly_score"], back["anomaly_score_file"])
    # The repository's definitions.py (what `feast apply` there reads) defines it too.
    defined = runpy.run_path(str(repo / "definitions.py"))
    assert defined[f"featureview_{view}"].batch_source.path == str(result.output.parent)

    # On record in the Model's experiment, with its lineage.
    client = client_for(trained.tracking_uri)
    run = client.get_run(result.mlflow_run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == experiment_name(MODEL.namespace, MODEL.name)
    tags = run.data.tags
    assert tags[BATCH] == "true"
    assert tags[MODEL_VERSION] == trained.version
    assert tags[WINDOW_START] == start.isoformat()
    assert tags[WINDOW_END] == end.isoformat()
    assert tags[DATA_ROWS] == str(len(window))
    assert len(tags[DATA_HASH]) == 64
    assert tags[BATCH_OUTPUT] == str(result.output)
    assert tags[BATCH_VIEW] == view
    missing = window[trained.bundle.feature_names].isna().any(axis=1)
    assert tags[FALLBACK_ROWS] == str(int(missing.sum()))
    assert run.info.status == "FINISHED"
    assert run.data.metrics["batch_rows"] == len(window)


def test_a_file_with_missing_sensors_goes_to_the_fallback_or_is_left_unscored(
    trained: TrainedModel, tmp_path: Path
) -> None:
    bundle = trained.bundle
    frame = trained.data.head(400).copy()
    non_core = [f for f in bundle.feature_names if f not in bundle.core_feature_names]
    frame.loc[frame.index[:100], non_core[0]] = np.nan
    frame.loc[frame.index[100:110], bundle.core_feature_names[0]] = np.nan
    path = tmp_path / "rows.parquet"
    frame.to_parquet(path)
    result = run_batch(
        BatchRequest(
            model=MODEL,
            tracking_uri=trained.tracking_uri,
            input=path,
            version=trained.version,
            output=tmp_path / "out",
        )
    )
    scores = pd.read_parquet(result.output)
    assert scores["model"].tolist() == [FALLBACK] * 100 + [UNSCORED] * 10 + [PRIMARY] * 290
    assert result.tally.fallback_rows == 100
    assert result.tally.unscored_rows == 10
    unscored = scores[scores["model"] == UNSCORED]
    assert unscored["anomaly_score"].isna().all()
    assert unscored["is_anomaly"].isna().all()
    scored = scores[scores["model"] != UNSCORED]
    assert scored["is_anomaly"].sum() == result.tally.flagged_rows
    assert result.feature_view is None  # no repository given: nothing to register in


def test_the_cli_names_the_field_of_an_empty_window_and_an_unknown_version(
    trained: TrainedModel, repo: Path
) -> None:
    base = ["score", "--model", "default/drill-ae", "--repo", str(repo)]
    base += ["--tracking-uri", trained.tracking_uri]
    empty = CliRunner().invoke(cli, [*base, "--start", "2001-01-01", "--end", "2001-01-02"])
    assert empty.exit_code == 1
    assert "--start/--end: the window" in empty.output
    assert "holds no rows" in empty.output
    assert "its rows span" in empty.output
    unknown = CliRunner().invoke(cli, [*base, "--version", "9"])
    assert unknown.exit_code == 1
    assert "--version 9: 'default.drill-ae' has no such version" in unknown.output
    with pytest.raises(BatchError, match="--repo"):
        run_batch(BatchRequest(model=MODEL, tracking_uri=trained.tracking_uri))
    began = time.time()
    ok = CliRunner().invoke(cli, [*base, "--caller", "planning"])
    assert ok.exit_code == 0, ok.output
    assert "feature view scores_default_drill_ae" in ok.output

    # Counted in usage per caller: the run that failed as the OS user, the one that scored
    # as `planning`, with the rows it scored (what `loopline usage --tracking-uri` adds).
    client = client_for(trained.tracking_uri)
    rows = collect_batch(client, Scope("drill-ae", "default"), began - 3600, time.time() + 1)
    by_caller = {r.caller: r for r in rows}
    planning = by_caller.pop("planning")
    assert (planning.requests, planning.server_errors, planning.source) == (1, 0, "batch")
    assert planning.version == trained.version
    experiment = client.get_experiment_by_name(experiment_name("default", "drill-ae"))
    assert experiment is not None
    [scored] = client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`loopline.batch.caller` = 'planning'",
    )
    assert planning.rows == float(scored.data.tags[DATA_ROWS]) > 0
    [failed] = by_caller.values()  # the empty window, run as the OS user
    assert failed.caller == batch_caller(None)
    assert (failed.requests, failed.server_errors) == (1, 1)


def test_chunked_reads_equal_the_training_pipelines_point_in_time_features(repo: Path) -> None:
    """Raw and rolling features, read chunk by chunk, are what `get_historical_features`
    gives training for the same window."""
    schema = factory_schema()
    spec = features.RepoSpec.load(repo)
    wanted = [*schema.feature_names, *spec.rolling_feature_names()]
    source = store_source(repo, wanted, schema.core_feature_names)
    assert source.rolling_features == spec.rolling_feature_names()
    first, _ = features.source_window(repo)
    start, end = first + pd.Timedelta("6h"), first + pd.Timedelta("30h")
    chunked = pd.concat(list(iter_chunks(source, start, end, rows=100)), ignore_index=True)
    expected = features.get_training_frame(
        repo, f"{spec.all_service}_rolling", start=start, end=end
    )
    keys = [schema.entity, schema.timestamp]
    chunked = chunked.sort_values(keys).reset_index(drop=True)
    expected = expected.sort_values(keys).reset_index(drop=True)
    assert len(chunked) == len(expected) > 100
    pd.testing.assert_frame_equal(
        chunked[[*keys, *wanted]], expected[[*keys, *wanted]], check_dtype=False
    )
    with pytest.raises(BatchError, match=r"--model: the model's feature\(s\) \['nope'\]"):
        store_source(repo, ["nope"], [])
