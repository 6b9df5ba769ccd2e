"""Column roles in training, evaluation and the bundle; the per-label evaluation split and the
refusal to judge on a split that lacks a class of the window.

The data here is small and made up so that the names differ from the generated data's
(`unit` / `recorded_at` / `is_anomaly` / `activity`) and the class episodes are placed where
a plain "newest fifth" split would miss some.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline.models.bundle import BundleError, ModelBundle, load_bundle
from loopline.models.evaluation import evaluate_bundle
from loopline.models.evaluation_split import (
    EvaluationSetError,
    check_covers,
    normal_rows,
    split_per_label,
    uncovered_classes,
)
from loopline.models.pyfunc import model_metadata, save_bundle_model
from loopline.models.training import TrainingDataError, train_bundle
from loopline.types.common import Task
from loopline.types.dataset import MLFLOW_METADATA_KEY, ROLES_KEY, DatasetRoles, LabelKind
from loopline.types.policy import TrainingParams

PARAMS = TrainingParams(epochs=2, batch_size=64, hidden_units=[8], latent_dim=2)
FEATURES = ["ax", "ay", "az", "gx"]


def _activities(rows_per_episode: int = 60, seed: int = 0) -> pd.DataFrame:
    """Two units, four activities in episodes; the newest fifth of the time holds only two."""
    rng = np.random.default_rng(seed)
    episodes = ["walking", "standing", "running", "walking", "cycling", "standing"]
    parts = []
    start = pd.Timestamp("2026-02-01", tz="UTC")
    for unit in ("u1", "u2"):
        t = start
        for i, activity in enumerate(episodes):
            centre = {"walking": 1.0, "standing": 0.0, "running": 3.0, "cycling": 2.0}[activity]
            x = rng.normal(centre, 0.3, size=(rows_per_episode, len(FEATURES)))
            frame = pd.DataFrame(x, columns=FEATURES)
            frame["unit"] = unit
            frame["recorded_at"] = t + pd.to_timedelta(np.arange(rows_per_episode), unit="s")
            frame["activity"] = activity
            frame["is_anomaly"] = (rng.random(rows_per_episode) < 0.1).astype(int)
            frame.loc[frame["is_anomaly"] == 1, FEATURES] += 4.0 + i % 2
            parts.append(frame)
            t += pd.Timedelta(seconds=rows_per_episode)
    return pd.concat(parts, ignore_index=True)


def _roles(kind: LabelKind) -> DatasetRoles:
    return DatasetRoles(
        entity="unit",
        timestamp="recorded_at",
        features=FEATURES,
        core_features=FEATURES[:2],
        label="activity" if kind == LabelKind.CLASS else "is_anomaly",
        label_kind=kind,
    )


def test_newest_fifth_of_the_window_would_lack_classes() -> None:
    """The situation the per-label split exists for, shown on the plain time cut."""
    df = _activities()
    cut = df["recorded_at"].quantile(0.8)
    assert uncovered_classes(df, df[df["recorded_at"] >= cut], "activity") == [
        "running",
        "walking",
    ]


def test_split_keeps_every_class_and_time_order_within_each() -> None:
    df = _activities()
    train, evaluation = split_per_label(df, _roles(LabelKind.CLASS), 0.2)
    assert len(train) + len(evaluation) == len(df)
    assert set(evaluation["activity"]) == set(df["activity"])
    for activity, rows in df.groupby("activity"):
        judged = evaluation[evaluation["activity"] == activity]
        trained = train[train["activity"] == activity]
        assert len(judged) == int(np.ceil(len(rows) * 0.2))
        # each class is judged on its own newest rows, never on rows older than its training
        assert judged["recorded_at"].min() >= trained["recorded_at"].max()
    assert evaluation["recorded_at"].is_monotonic_increasing
    assert train["recorded_at"].is_monotonic_increasing
    check_covers(df, evaluation, _roles(LabelKind.CLASS))


def test_split_of_an_anomaly_flag_keeps_anomalies_in_both_sets() -> None:
    df = _activities()
    train, evaluation = split_per_label(df, _roles(LabelKind.ANOMALY_FLAG))
    assert set(train["is_anomaly"]) == set(evaluation["is_anomaly"]) == {0, 1}


def test_unlabelled_rows_are_left_out_and_a_single_row_class_only_trains() -> None:
    df = _activities()
    df.loc[3, "activity"] = None
    df.loc[df.index[-1], "activity"] = "jumping"  # one row of a class
    train, evaluation = split_per_label(df, _roles(LabelKind.CLASS))
    assert len(train) + len(evaluation) == len(df) - 1
    assert "jumping" in set(train["activity"])
    assert "jumping" not in set(evaluation["activity"])


def test_the_gate_refuses_an_evaluation_set_that_lacks_a_class_naming_it() -> None:
    df = _activities()
    df.loc[df.index[-1], "activity"] = "jumping"
    _, evaluation = split_per_label(df, _roles(LabelKind.CLASS))
    with pytest.raises(EvaluationSetError, match=r"lacks label value\(s\) 'jumping' \(1 row"):
        check_covers(df, evaluation, _roles(LabelKind.CLASS))


def test_split_names_a_missing_label_column() -> None:
    with pytest.raises(EvaluationSetError, match="label column 'activity' is missing"):
        split_per_label(_activities().drop(columns="activity"), _roles(LabelKind.CLASS))


@pytest.mark.parametrize("kind", list(LabelKind))
def test_bundle_records_the_roles_and_mlflow_model_carries_them(
    kind: LabelKind, tmp_path: Path
) -> None:
    df = _activities()
    task = Task.CLASSIFICATION if kind == LabelKind.CLASS else Task.ANOMALY_DETECTION
    roles = _roles(kind)
    train, evaluation = split_per_label(df, roles)
    bundle = train_bundle(train, task, PARAMS, roles).bundle
    recorded = bundle.roles
    assert recorded is not None
    assert (recorded.entity, recorded.timestamp, recorded.label) == (
        "unit",
        "recorded_at",
        roles.label,
    )
    assert recorded.features == bundle.feature_names == FEATURES
    assert recorded.core_features == bundle.core_feature_names == FEATURES[:2]
    assert recorded.label_kind == kind
    if kind == LabelKind.CLASS:
        assert recorded.classes == bundle.class_names == sorted(set(df["activity"]))
    else:
        assert recorded.classes == []
    metrics = evaluate_bundle(bundle, evaluation).metrics  # the label comes from the bundle
    assert metrics["eval_rows"] == len(evaluation)
    if kind == LabelKind.ANOMALY_FLAG:
        assert metrics["roc_auc"] > 0.9  # anomalies are 4 standard deviations out
    # the same document in bundle.json and in the MLmodel file's metadata
    loaded = load_bundle(save_bundle_model(bundle, tmp_path / "model"))
    assert loaded.roles == recorded
    from mlflow.models import Model

    mlmodel = Model.load(str(tmp_path / "model" / "MLmodel"))
    assert DatasetRoles.model_validate(mlmodel.metadata[MLFLOW_METADATA_KEY]) == recorded
    assert DatasetRoles.from_mlflow_metadata(mlmodel.metadata) == recorded
    assert DatasetRoles.from_mlflow_metadata(None) is None
    assert model_metadata(bundle) == {MLFLOW_METADATA_KEY: recorded.model_dump(mode="json")}


def test_anomaly_detection_trains_on_the_rows_the_flag_calls_normal() -> None:
    df = _activities()
    roles = _roles(LabelKind.ANOMALY_FLAG)
    trained = train_bundle(df, Task.ANOMALY_DETECTION, PARAMS, roles)
    normal = int(normal_rows(df, roles).sum())
    # the calibration fifth of the normal rows is held out of the fit
    assert trained.rows["primary"] == normal - int(normal * 0.2)
    flags = df.assign(is_anomaly=df["is_anomaly"].astype(bool))
    as_bool = train_bundle(flags, Task.ANOMALY_DETECTION, PARAMS, roles)
    assert as_bool.rows == trained.rows


def test_a_label_of_the_wrong_kind_is_refused_naming_both() -> None:
    with pytest.raises(TrainingDataError, match=r"classification trains on a label of kind class"):
        train_bundle(_activities(), Task.CLASSIFICATION, PARAMS, _roles(LabelKind.ANOMALY_FLAG))


def test_a_missing_label_column_is_named_with_the_columns_there() -> None:
    roles = _roles(LabelKind.ANOMALY_FLAG).model_copy(update={"label": "is_fault"})
    with pytest.raises(TrainingDataError, match=r"lacks column\(s\) \['is_fault'\]; it has"):
        train_bundle(_activities(), Task.ANOMALY_DETECTION, PARAMS, roles)


def test_a_bundle_without_roles_reads_as_none_and_malformed_roles_are_named() -> None:
    df = _activities()
    bundle = train_bundle(df, Task.ANOMALY_DETECTION, PARAMS, _roles(LabelKind.ANOMALY_FLAG)).bundle
    older = ModelBundle(
        task=bundle.task,
        primary=bundle.primary,
        fallback=bundle.fallback,
        metadata={k: v for k, v in bundle.metadata.items() if k != ROLES_KEY},
    )
    assert older.roles is None
    with pytest.raises(ValueError, match="records no data set roles"):
        evaluate_bundle(older, df)
    assert evaluate_bundle(older, df, _roles(LabelKind.ANOMALY_FLAG)).metrics["eval_rows"] > 0
    broken = ModelBundle(
        task=bundle.task,
        primary=bundle.primary,
        fallback=bundle.fallback,
        metadata={ROLES_KEY: {"entity": "unit"}},
    )
    with pytest.raises(BundleError, match="'roles' is malformed"):
        _ = broken.roles
