"""The window detector in the server: which rows get the window verdict, and which the dense."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loopline.data.generator import GeneratorConfig, generate
from loopline.data.schema import SENSORS, factory_schema
from loopline.models.bundle import ModelBundle
from loopline.models.training import train_bundle
from loopline.models.windowing import WindowHistory, window_features
from loopline.serving.payload import FeatureLayout
from loopline.serving.scoring import score_batch
from loopline.serving.windows import apply_window, window_history
from loopline.types.common import Task
from loopline.types.policy import TrainingParams

SIZE = 3


@pytest.fixture(scope="module")
def bundles() -> tuple[ModelBundle, ModelBundle]:
    df, _ = generate(GeneratorConfig(machines=2, days=0.5, interval_seconds=60, seed=4))
    roles = factory_schema().roles(Task.ANOMALY_DETECTION)
    params = TrainingParams(epochs=1, hidden_units=[8], latent_dim=3, window_size=SIZE)
    dense = train_bundle(df, Task.ANOMALY_DETECTION, params, roles).bundle
    window = train_bundle(
        df, Task.ANOMALY_DETECTION, params.model_copy(update={"detector": "window"}), roles
    ).bundle
    return dense, window


def _readings(n: int) -> np.ndarray:
    df: pd.DataFrame = generate(GeneratorConfig(machines=1, days=0.02, seed=5))[0]
    return df[list(SENSORS)].dropna().to_numpy(np.float32)[:n]


def test_history_is_kept_only_when_a_version_has_a_window(
    bundles: tuple[ModelBundle, ModelBundle],
) -> None:
    dense, window = bundles
    assert window_history([dense], max_entities=5) is None
    history = window_history([dense, window], max_entities=5)
    assert history is not None
    assert history.size == SIZE


def test_rows_get_the_window_verdict_once_full_and_the_fallback_keeps_its_own(
    bundles: tuple[ModelBundle, ModelBundle],
) -> None:
    _, window = bundles
    assert window.window is not None
    layout = FeatureLayout.of(window.feature_names, window.core_feature_names)
    history = WindowHistory(SIZE, len(SENSORS), max_entities=5)
    x = _readings(5)
    answers = []
    for row in range(4):  # one reading of machine "m" per request
        scored = score_batch(window, x[row : row + 1], layout)
        answers.append(apply_window(window, history, ["m"], x[row : row + 1], scored))
        if row == SIZE - 1:
            expected = window.window.score(
                window_features(x[None, :SIZE].reshape(1, -1), len(SENSORS))
            )
            assert scored.outputs["anomaly_score"][0] == expected["anomaly_score"][0]
            assert scored.outputs["threshold"][0] == np.float32(window.window.threshold)
    assert answers == [[b"dense"], [b"dense"], [b"window"], [b"window"]]
    missing = x[4:5].copy()
    missing[0, -1] = np.nan  # a non-core sensor: the fallback answers, and says so
    scored = score_batch(window, missing, layout)
    assert apply_window(window, history, ["m"], missing, scored) == [b"dense"]
    assert scored.fallback.tolist() == [True]


def test_a_dense_version_answers_dense_but_the_readings_are_kept(
    bundles: tuple[ModelBundle, ModelBundle],
) -> None:
    dense, _ = bundles
    layout = FeatureLayout.of(dense.feature_names, dense.core_feature_names)
    history = WindowHistory(SIZE, len(SENSORS), max_entities=5)
    x = _readings(2)
    scored = score_batch(dense, x, layout)
    before = scored.outputs["anomaly_score"].copy()
    assert apply_window(dense, history, None, x, scored) == [b"dense", b"dense"]
    np.testing.assert_array_equal(scored.outputs["anomaly_score"], before)
    assert len(history) == 1


def test_a_longer_history_gives_a_shorter_window_the_same_verdicts(
    bundles: tuple[ModelBundle, ModelBundle],
) -> None:
    """A champion and a canary with different window sizes share the longest history."""
    _, window = bundles
    layout = FeatureLayout.of(window.feature_names, window.core_feature_names)
    x = _readings(5)
    answers = {}
    for size in (SIZE, SIZE + 2):
        history = WindowHistory(size, len(SENSORS), max_entities=5)
        detector, scores = [], []
        for row in range(5):
            scored = score_batch(window, x[row : row + 1], layout)
            detector += apply_window(window, history, ["m"], x[row : row + 1], scored)
            scores.append(float(scored.outputs["anomaly_score"][0]))
        answers[size] = (detector, scores)
    assert answers[SIZE] == answers[SIZE + 2]
    assert answers[SIZE][0] == [b"dense"] * (SIZE - 1) + [b"window"] * (6 - SIZE)
