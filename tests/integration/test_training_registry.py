"""Training into a real (SQLite) MLflow: aliases, lineage, reference data, loading by alias."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.artifacts import download_artifacts

from loopline.data.schema import SENSORS
from loopline.models.bundle import load_bundle
from loopline.models.pyfunc import MODEL_COLUMN
from loopline.tracking.experiments import client_for
from loopline.tracking.lineage import GATE_DECISION, GATE_REASON, missing_lineage
from loopline.tracking.publish import MAX_REFERENCE_ROWS, REFERENCE_ARTIFACT
from loopline.tracking.registry import CHALLENGER, CHAMPION, version_by_alias
from loopline.types.common import Task
from loopline.types.policy import ValidationPolicy
from tests.fixtures.training import TrainAndRegister, TrainedModel


def test_champion_loads_by_alias_and_scores_like_the_trained_bundle(
    trained_model: TrainedModel,
) -> None:
    bundle = load_bundle(trained_model.champion_uri, tracking_uri=trained_model.tracking_uri)
    x = trained_model.reference.to_numpy(np.float32)[:100]
    np.testing.assert_array_equal(
        bundle.score(x)["anomaly_score"], trained_model.bundle.score(x)["anomaly_score"]
    )
    assert bundle.feature_names == list(SENSORS)


def test_version_carries_lineage_and_gate_tags(trained_model: TrainedModel) -> None:
    client = client_for(trained_model.tracking_uri)
    champion = version_by_alias(client, trained_model.name, CHAMPION)
    challenger = version_by_alias(client, trained_model.name, CHALLENGER)
    assert champion is not None
    assert challenger is not None
    assert str(champion.version) == str(challenger.version) == trained_model.version
    assert missing_lineage(champion.tags) == []
    assert champion.tags[GATE_DECISION] == "passed"
    run = client.get_run(trained_model.mlflow_run_id)
    assert missing_lineage(run.data.tags) == []
    assert run.data.metrics["roc_auc"] == pytest.approx(trained_model.metrics["roc_auc"])


def test_reference_artifact_has_normal_rows_of_feature_columns(
    trained_model: TrainedModel,
) -> None:
    path = download_artifacts(
        run_id=trained_model.mlflow_run_id,
        artifact_path=REFERENCE_ARTIFACT,
        tracking_uri=trained_model.tracking_uri,
    )
    ref = pd.read_parquet(path)
    assert list(ref.columns) == list(SENSORS)
    assert 0 < len(ref) <= MAX_REFERENCE_ROWS
    assert not ref.isna().any().any()


def test_pyfunc_serves_primary_and_fallback_by_alias(trained_model: TrainedModel) -> None:
    import mlflow.pyfunc
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    rows = trained_model.reference.head(4).astype("float64").copy()
    rows.loc[2, "acoustic_level"] = np.nan
    with _use_tracking_uri(trained_model.tracking_uri):
        model = mlflow.pyfunc.load_model(trained_model.champion_uri)
        out = model.predict(rows)
    assert list(out[MODEL_COLUMN]) == ["primary", "primary", "fallback", "primary"]


def test_worse_challenger_is_rejected_and_champion_stays(
    train_and_register: TrainAndRegister,
) -> None:
    first = train_and_register(policy=ValidationPolicy(metric="roc_auc"))
    assert first.gate_passed
    # Same data, but the policy now demands more than any model can give over the champion.
    second = train_and_register(policy=ValidationPolicy(metric="roc_auc", champion_margin=0.5))
    client = client_for(first.tracking_uri)
    assert not second.gate_passed
    champion = version_by_alias(client, first.name, CHAMPION)
    challenger = version_by_alias(client, first.name, CHALLENGER)
    assert champion is not None
    assert challenger is not None
    assert str(champion.version) == first.version
    assert str(challenger.version) == second.version
    reason = client.get_model_version(first.name, second.version).tags[GATE_REASON]
    assert "< champion v1" in reason
    assert "margin 0.5000" in reason


def test_classification_model_registers_with_class_names(
    train_and_register: TrainAndRegister,
) -> None:
    reg = train_and_register(task=Task.CLASSIFICATION, model="drill-clf", days=3.0)
    bundle = load_bundle(reg.version_uri, tracking_uri=reg.tracking_uri)
    out = bundle.score(reg.reference.to_numpy(np.float32)[:5])
    assert out["probabilities"].shape == (5, len(bundle.class_names))
    assert "macro_f1" in reg.metrics


def test_run_outcome_reads_version_and_decision_back(trained_model: TrainedModel) -> None:
    from loopline.tracking.outcome import run_outcome

    outcome = run_outcome(
        trained_model.tracking_uri,
        "default",
        "drill-ae",
        trained_model.name,
        "fixture-drill-ae-0-anomaly-detection",
    )
    assert outcome.mlflow_run_id == trained_model.mlflow_run_id
    assert outcome.model_version == trained_model.version
    assert outcome.gate_passed
    assert outcome.rejection_reason is None
    assert outcome.metrics["roc_auc"] == pytest.approx(trained_model.metrics["roc_auc"])
    missing = run_outcome(trained_model.tracking_uri, "default", "drill-ae", "x", "no-such-run")
    assert missing.mlflow_run_id is None
