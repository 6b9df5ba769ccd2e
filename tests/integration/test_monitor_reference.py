"""The champion's reference sample from a real MLflow (SQLite + local artifacts): alias ->
model version -> run -> reference/reference.parquet; promoting a new champion re-arms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline import quiet
from loopline.monitoring.reference import (
    REFERENCE_ARTIFACT,
    MlflowReferenceSource,
    reference_source_from_uri,
)
from loopline.monitoring.retrain import LogRetrainRequester
from loopline.monitoring.service import DriftMonitor
from loopline.monitoring.settings import MonitorSettings

NAME = "plant.drill-ae"
FEATURES = ["spindle_current", "feed_rate"]


def log_version(tracking_uri: str, tmp: Path, shift: float) -> str:
    import mlflow
    from mlflow import MlflowClient

    quiet.apply()
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    rng = np.random.default_rng(int(shift * 10))
    frame = pd.DataFrame(rng.normal(size=(600, 2)) + shift, columns=FEATURES)
    frame.insert(0, "machine_id", "drill-01")
    path = tmp / f"shift-{shift}" / "reference.parquet"
    path.parent.mkdir(parents=True)
    frame.to_parquet(path)
    experiment = client.get_experiment_by_name("monitor-test") or None
    exp_id = experiment.experiment_id if experiment else client.create_experiment("monitor-test")
    run = client.create_run(exp_id)
    client.log_artifact(run.info.run_id, str(path), artifact_path="reference")
    listed = [f.path for f in client.list_artifacts(run.info.run_id, "reference")]
    assert listed == [REFERENCE_ARTIFACT]
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(f"name='{NAME}'"):
        client.create_registered_model(NAME)
    mv = client.create_model_version(NAME, f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias(NAME, "champion", mv.version)
    return str(mv.version)


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_champion_reference_loads_and_promotion_rearms(tracking_uri: str, tmp_path: Path) -> None:
    v1 = log_version(tracking_uri, tmp_path, shift=0.0)
    source = reference_source_from_uri(f"models:/{NAME}@champion", tracking_uri=tracking_uri)
    assert isinstance(source, MlflowReferenceSource)
    ref = source.load()
    assert ref.version == v1
    assert ref.feature_names == FEATURES  # the entity column is not a feature
    assert ref.values.shape == (600, 2)

    monitor = DriftMonitor(
        MonitorSettings(
            model="drill-ae",
            namespace="plant",
            window_size=100,
            state_dir=tmp_path / "state",
            tracking_uri=tracking_uri,
            reference_poll_seconds=0,
        ),
        reference_source=source,
        requester=LogRetrainRequester(),
    )
    assert monitor.state.reference_version == v1
    assert not monitor.reload_reference(), "same champion: nothing to do"

    v2 = log_version(tracking_uri, tmp_path, shift=1.0)
    assert monitor.reload_reference()
    assert monitor.state.reference_version == v2
    assert monitor.state.decision == "rearmed"
    assert monitor.reference is not None
    assert monitor.reference.values.mean() == pytest.approx(1.0, abs=0.15)


def test_bad_reference_uri_is_a_clear_error(tracking_uri: str) -> None:
    with pytest.raises(ValueError, match="expected models:/<registered model>@<alias>"):
        reference_source_from_uri("models:/only-a-name", tracking_uri=tracking_uri)
    with pytest.raises(ValueError, match=r"or a \.parquet"):
        reference_source_from_uri("/tmp/ref.csv", tracking_uri=tracking_uri)
