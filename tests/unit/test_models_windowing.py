"""The window detector: window assembly, a server's per-entity history, training and the
bundle round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline.data.generator import GeneratorConfig, generate
from loopline.data.schema import SENSORS, factory_schema
from loopline.models.bundle import BundleError, ModelBundle, load_bundle
from loopline.models.training import TrainingDataError, train_bundle
from loopline.models.windowing import (
    WindowHistory,
    score_sequence,
    window_feature_names,
    window_features,
    windows_of,
)
from loopline.types.common import Task
from loopline.types.policy import TrainingParams

SIZE = 3
PARAMS = TrainingParams(
    epochs=2, batch_size=128, hidden_units=[8], latent_dim=3, detector="window", window_size=SIZE
)


def _rows(n: int, f: int = 2, start: float = 0.0) -> np.ndarray:
    return (start + np.arange(n * f, dtype=np.float32)).reshape(n, f)


def test_window_holds_the_entity_readings_oldest_first_and_skips_other_entities() -> None:
    x = _rows(5)
    wins, full = windows_of(["a", "b", "a", "a", "b"], x, SIZE)
    assert full.tolist() == [False, False, False, True, False]
    np.testing.assert_array_equal(wins[3], np.concatenate([x[0], x[2], x[3]]))
    # a partial window keeps the readings it has, NaN before them
    assert np.isnan(wins[2][:2]).all()
    np.testing.assert_array_equal(wins[2][2:], np.concatenate([x[0], x[2]]))


def test_a_missing_value_makes_a_window_not_full() -> None:
    x = _rows(5)
    x[1, 0] = np.nan
    _, full = windows_of(["a"] * 5, x, SIZE)
    assert full.tolist() == [False, False, False, False, True]  # until the gap has left


def test_history_gives_the_same_windows_across_requests_as_in_one_batch() -> None:
    entities = ["a", "b", "a", "b", "a", "a", "b", "c", "a"]
    x = _rows(len(entities))
    expected, expected_full = windows_of(entities, x, SIZE)
    history = WindowHistory(SIZE, 2, max_entities=10)
    got, got_full = [], []
    for chunk in ([0], [1, 2], [3, 4, 5], [6, 7, 8]):  # interleaved, several rows per entity
        w, f = history.step([entities[i] for i in chunk], x[chunk])
        got.append(w)
        got_full.append(f)
    np.testing.assert_array_equal(np.concatenate(got), expected)
    assert np.concatenate(got_full).tolist() == expected_full.tolist()
    assert len(history) == 3


def test_history_forgets_the_least_recently_seen_entity() -> None:
    history = WindowHistory(2, 2, max_entities=2)
    history.step(["a", "b"], _rows(2))
    history.step(["c"], _rows(1))  # forgets a, the least recently seen
    _, full = history.step(["b", "a"], _rows(2))  # a comes back afresh and c is forgotten
    assert full.tolist() == [True, False]
    assert len(history) == 2
    with pytest.raises(ValueError, match="expected"):
        history.step(["a"], _rows(1, f=3))
    wins, full = history.step([], _rows(0))
    assert wins.shape == (0, 4)
    assert full.shape == (0,)


def test_window_features_are_newest_mean_and_spread() -> None:
    wins = np.array([[1.0, 10.0, 3.0, 10.0]], dtype=np.float32)  # two readings of two sensors
    np.testing.assert_allclose(window_features(wins, 2), [[3.0, 10.0, 2.0, 10.0, 1.0, 0.0]])
    assert window_feature_names(["t", "p"], 4) == [
        "t",
        "p",
        "t:mean4",
        "p:mean4",
        "t:std4",
        "p:std4",
    ]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    df, _ = generate(GeneratorConfig(machines=2, days=0.5, interval_seconds=60, seed=2))
    return df


@pytest.fixture(scope="module")
def bundle(frame: pd.DataFrame) -> ModelBundle:
    roles = factory_schema().roles(Task.ANOMALY_DETECTION)
    trained = train_bundle(frame, Task.ANOMALY_DETECTION, PARAMS, roles)
    assert trained.history["window"]
    assert trained.rows["window"] > 0
    return trained.bundle


def test_training_records_the_window_detector(bundle: ModelBundle) -> None:
    assert bundle.detector == "window"
    assert bundle.window_size == SIZE
    assert bundle.window is not None
    assert bundle.window.threshold is not None
    assert len(bundle.window.feature_names) == 3 * len(SENSORS)


def test_sequence_scores_keep_the_dense_verdict_for_the_first_readings(
    bundle: ModelBundle, frame: pd.DataFrame
) -> None:
    roles = factory_schema().roles(Task.ANOMALY_DETECTION)
    rows = frame.dropna(subset=list(SENSORS)).groupby(roles.entity).head(6)
    shuffled = rows.sample(frac=1.0, random_state=0)  # any order: windows follow timestamps
    x = shuffled[list(SENSORS)].to_numpy(np.float32)
    out, windowed = score_sequence(bundle, shuffled[roles.entity], shuffled[roles.timestamp], x)
    rank = shuffled.groupby(roles.entity)[roles.timestamp].rank(method="first").to_numpy()
    assert windowed.tolist() == (rank >= SIZE).tolist()
    dense = bundle.score(x)
    np.testing.assert_array_equal(
        out["anomaly_score"][~windowed], dense["anomaly_score"][~windowed]
    )
    assert bundle.window is not None
    assert (out["threshold"][windowed] == np.float32(bundle.window.threshold)).all()


def test_bundle_round_trip_keeps_the_detector(bundle: ModelBundle, tmp_path: Path) -> None:
    loaded = load_bundle(bundle.save(tmp_path / "b"))
    assert loaded.detector == "window"
    assert loaded.window_size == SIZE
    assert loaded.window is not None
    assert bundle.window is not None
    x = np.random.default_rng(0).normal(size=(4, 3 * len(SENSORS))).astype(np.float32)
    np.testing.assert_array_equal(
        loaded.window.score(x)["anomaly_score"], bundle.window.score(x)["anomaly_score"]
    )


def test_a_bundle_without_a_detector_loads_as_dense(bundle: ModelBundle, tmp_path: Path) -> None:
    folder = bundle.save(tmp_path / "old")
    doc = json.loads((folder / "bundle.json").read_text())
    del doc["detector"], doc["window"]  # what a bundle written before the window detector has
    (folder / "bundle.json").write_text(json.dumps(doc))
    old = load_bundle(folder)
    assert old.detector == "dense"
    assert old.window is None
    assert old.window_size == 1
    doc["detector"] = "window"
    (folder / "bundle.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="needs the window network"):
        load_bundle(folder)


def test_window_training_needs_enough_windows(frame: pd.DataFrame) -> None:
    roles = factory_schema().roles(Task.ANOMALY_DETECTION)
    params = PARAMS.model_copy(update={"window_size": 64})
    few = frame.groupby(roles.entity).head(60)
    with pytest.raises(TrainingDataError, match="windowSize"):
        train_bundle(few, Task.ANOMALY_DETECTION, params, roles)
