"""The per-entity score baseline (`alarms.baselineReadings`): its running median, its
calibration on the newest held-out readings, and that serving's alarms take the verdict the
evaluation judged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loopline.models.alarms import debounce
from loopline.models.calibration import BudgetError
from loopline.models.evaluation_anomaly import baseline_over
from loopline.models.score_baseline import (
    BASELINE_KEY,
    BaselineCalibration,
    EntityBaseline,
    calibrate,
    relative_scores,
)
from loopline.serving.alarm_events import AlarmEvents, baseline_of
from loopline.types.alarms import AlarmPolicy
from loopline.types.dataset import DatasetRoles, LabelKind


def test_running_median_is_the_median_of_the_previous_readings() -> None:
    rng = np.random.default_rng(0)
    u = rng.lognormal(size=400)
    u[50] = np.nan  # a missing score is judged NaN and kept out of the history
    level = EntityBaseline(readings=31, reference=7.0)
    history: list[float] = []
    for i, value in enumerate(u):
        got = level.relative(float(value))
        if i == 50:
            assert np.isnan(got)
            continue
        want_median = 7.0 if len(history) < 15 else float(np.median(history[-31:]))
        assert got == pytest.approx(value / want_median)
        history.append(float(value))


def test_entities_keep_their_own_history() -> None:
    u = np.array([1.0, 10.0, 1.0, 10.0, 1.0, 10.0, 2.0, 20.0])
    entities = ["a", "b"] * 4
    rel = relative_scores(entities, u, readings=2, reference=1.0)
    # from the second reading of each entity on, its own previous reading is the level
    np.testing.assert_allclose(rel[2:], [1.0, 1.0, 1.0, 1.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="baselineReadings"):
        EntityBaseline(readings=1, reference=1.0)


def _wearing(rng: np.random.Generator, entities: int, steps: int) -> tuple[np.ndarray, ...]:
    """Scores of machines that wear: each machine's normal level climbs at its own rate
    (up to 4x over the span), with multiplicative noise on top."""
    rate = rng.uniform(0.0, 3.0, entities)
    t = np.linspace(0.0, 1.0, steps)
    level = 1.0 + rate[:, np.newaxis] * t[np.newaxis, :] ** 2
    u = level * rng.lognormal(0.0, 0.25, (entities, steps))
    ids = np.repeat(np.arange(entities), steps)
    return ids, u.reshape(-1), np.tile(np.arange(steps), entities)


def test_baseline_keeps_the_rate_on_newer_readings_where_a_fixed_threshold_does_not() -> None:
    """Calibrated on the training part (its newest fifth held out), judged on the readings
    after it: the relative threshold keeps about the quantile's rate, a fixed threshold set on
    the same held-out readings alarms on many times more as the machines keep wearing."""
    rng = np.random.default_rng(3)
    ids, u, step = _wearing(rng, entities=8, steps=5000)
    train = step < 3500
    held = train & (step >= 2800)
    q, readings = 0.99, 300
    cal = calibrate(ids[train], u[train], held[train], readings, q, None)
    rel = relative_scores(ids, u, readings, cal.reference)  # the whole stream, in order
    later = ~train
    baseline_rate = float((rel[later] > cal.threshold).mean())
    fixed_rate = float((u[later] > np.quantile(u[held], q)).mean())
    assert baseline_rate <= 2 * (1 - q)
    assert fixed_rate > 5 * baseline_rate


def test_budget_is_met_on_held_out_data_or_refused() -> None:
    rng = np.random.default_rng(5)
    ids, u, step = _wearing(rng, entities=6, steps=4000)
    train = step < 3000
    held = train & (step >= 2400)
    cal = calibrate(ids[train], u[train], held[train], 200, 0.995, 0.01)
    rel = relative_scores(ids, u, 200, cal.reference)
    assert float((rel[~train] > cal.threshold).mean()) <= 0.01
    # 0.01 % cannot be promised from 3 600 held-out readings: a clear error, never silence
    with pytest.raises(BudgetError, match="held-out normal rows"):
        calibrate(ids[train], u[train], held[train], 200, 0.995, 0.0001)
    with pytest.raises(ValueError, match="no held-out"):
        calibrate(ids, u, np.zeros(len(u), dtype=bool), 200, 0.995, None)


def test_serving_alarms_take_the_verdict_the_evaluation_judged() -> None:
    """One reading at a time in the server, the same alarm states as the evaluation's
    `baseline_over` + `debounce` over each entity's whole sequence."""
    rng = np.random.default_rng(11)
    ids, u, step = _wearing(rng, entities=3, steps=900)
    u[rng.random(len(u)) < 0.02] *= 8.0  # some readings stand out, alone
    for start in rng.integers(0, len(u) - 6, 12):  # and some in runs
        u[start : start + 6] *= 8.0
    cal = BaselineCalibration(reference=1.0, threshold=2.5)
    metadata = {BASELINE_KEY: {"readings": 60, "detectors": {"dense": cal.to_dict()}}}
    assert baseline_of(metadata) == (60, cal)
    policy = AlarmPolicy()
    events = AlarmEvents.of(policy, max_entities=10, metadata=metadata)
    keys = [f"m{i}" for i in ids]
    # the server sees the entities interleaved in time, a batch at a time
    order = np.lexsort((ids, step))
    served: dict[str, list[bool]] = {k: [] for k in set(keys)}
    for batch in np.array_split(order, 97):
        got = events.step([keys[i] for i in batch], [False] * len(batch), u=list(u[batch]))
        for i, active in zip(batch, got.active, strict=True):
            served[keys[i]].append(active)
    roles = DatasetRoles(
        entity="e", timestamp="t", features=["x"], label="y", label_kind=LabelKind.ANOMALY_FLAG
    )
    rows = pd.DataFrame({"e": keys, "t": step})
    over = baseline_over(rows, roles, u, 60, cal)
    for key, seq in served.items():
        mine = over[np.asarray(keys) == key]
        want = debounce(mine, policy.k, policy.n, policy.m)
        np.testing.assert_array_equal(np.asarray(seq), want)
        assert want.any()  # the stream does raise alarms, so the comparison says something


def test_a_bundle_without_a_baseline_alarms_on_the_row_flags() -> None:
    assert baseline_of({}) is None
    events = AlarmEvents.of(AlarmPolicy(), max_entities=4, metadata={})
    got = events.step(["a"] * 5, [True] * 5, u=[0.0] * 5)
    assert got.active == [False, False, False, False, True]  # default 5 of 8
    with pytest.raises(ValueError, match="malformed"):
        baseline_of({BASELINE_KEY: {"readings": 5, "detectors": {}}})


def test_policy_field() -> None:
    assert AlarmPolicy().baseline_readings is None
    set_ = AlarmPolicy.model_validate({"baselineReadings": 1440})
    assert set_.baseline_readings == 1440
    assert set_.model_dump(by_alias=True)["baselineReadings"] == 1440
    # unset, the dump (and the training-input hash of a Model with alarms) is as before
    assert "baselineReadings" not in AlarmPolicy().model_dump(by_alias=True)
    assert AlarmPolicy.model_validate(set_.model_dump(by_alias=True)) == set_
    with pytest.raises(ValueError, match="baselineReadings"):
        AlarmPolicy.model_validate({"baselineReadings": 1})


def test_training_calibrates_every_detector_and_the_evaluation_judges_with_it() -> None:
    from loopline.data.generator import GeneratorConfig, generate
    from loopline.data.schema import factory_schema
    from loopline.models.evaluation import evaluate_bundle
    from loopline.models.training import train_bundle
    from loopline.types.common import Task
    from loopline.types.policy import TrainingParams

    df, _ = generate(GeneratorConfig(machines=2, days=1.0, interval_seconds=60, seed=4))
    roles = factory_schema().roles(Task.ANOMALY_DETECTION)
    cut = df[roles.timestamp].quantile(0.7)
    train, held = df[df[roles.timestamp] < cut], df[df[roles.timestamp] >= cut]
    params = TrainingParams(epochs=2, detector="window", hidden_units=[8], latent_dim=2)
    alarms = AlarmPolicy.model_validate({"baselineReadings": 120})
    bundle = train_bundle(train, Task.ANOMALY_DETECTION, params, roles, alarms=alarms).bundle
    doc = bundle.metadata[BASELINE_KEY]
    assert doc["readings"] == 120
    assert set(doc["detectors"]) == {"window", "dense", "fallback", "baseline", "pca"}
    for cal in doc["detectors"].values():
        assert cal["reference"] > 0
        assert cal["threshold"] > 0
    judged = evaluate_bundle(bundle, held, alarms=alarms).metrics
    # the same bundle without its baseline judges on the plain thresholds: other flags
    plain = evaluate_bundle(
        bundle.__class__(
            task=bundle.task,
            primary=bundle.primary,
            fallback=bundle.fallback,
            metadata={k: v for k, v in bundle.metadata.items() if k != BASELINE_KEY},
            window=bundle.window,
            window_size=bundle.window_size,
        ),
        held,
        alarms=alarms,
    ).metrics
    assert judged["alarm_rate"] != plain["alarm_rate"]
    without = train_bundle(train, Task.ANOMALY_DETECTION, params, roles).bundle
    assert BASELINE_KEY not in without.metadata


def test_server_scores_in_threshold_units() -> None:
    from loopline.serving.alarm_events import threshold_units

    got = threshold_units(
        {"anomaly_score": np.array([1.0, 3.0]), "threshold": np.array([2.0, 3.0])}
    )
    np.testing.assert_allclose(got, [0.5, 1.0])
    assert threshold_units({"anomaly_score": np.array([1.0])}) is None
